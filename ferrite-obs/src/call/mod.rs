//! The `#[probe]` call path: what the generated code calls, the USDT
//! probes it fires, the recording switch it tests, and the slow log a
//! command root writes as it ends.
//!
//! Depends on [`crate::core`] for the data it writes and on the kernel
//! view's per-thread hooks ([`crate::kernel`]) at command roots.

pub mod probes;
pub(crate) mod recording;
#[cfg(not(loom))]
pub(crate) mod run;
#[cfg(not(loom))]
pub mod slowlog;
