//! Collection: reading the call sites' shards ([`fold`]), the cost of the
//! instrumentation ([`cost`]), and the rollup into immutable snapshots
//! ([`snapshot`]) that every export reads.
//!
//! Depends on [`crate::core`], [`crate::call`] and [`crate::kernel`]; knows
//! nothing of formats or transports.

#[cfg(feature = "runtime")]
pub(crate) mod cost;
pub(crate) mod fold;
#[cfg(feature = "runtime")]
pub mod snapshot;
