//! Export of snapshots: Prometheus text ([`prometheus`]), the `metrics`
//! facade ([`facade`]), JSON ([`json`]) and the loopback HTTP endpoint that
//! serves them ([`endpoint`]). The kernel view's figures in each format are
//! in [`kernel`]; escaping and names every writer shares are in [`format`].
//!
//! Depends on [`crate::collect`]'s snapshots and the kernel view's types;
//! nothing below depends on it.

pub(crate) mod endpoint;
pub(crate) mod facade;
pub(crate) mod format;
pub(crate) mod json;
pub(crate) mod kernel;
pub(crate) mod prometheus;
