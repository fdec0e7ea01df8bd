//! The lock-free call-site data: what every `#[probe]` call writes and the
//! collector reads, and nothing else.
//!
//! Each module here is one lock-free structure with its protocol stated at
//! its top. The layer depends on `std` (and `arc-swap` for [`latest`]) only:
//! no tokio, no aya, no formatting. Under `--cfg loom` its atomics are
//! loom's ([`sync`]), and the models of `crate::loom` run this very code.

pub(crate) mod clock;
pub(crate) mod command;
pub(crate) mod figures;
pub mod histogram;
#[cfg(any(feature = "runtime", loom))]
pub(crate) mod latest;
pub(crate) mod registry;
pub(crate) mod shard;
pub(crate) mod site;
pub(crate) mod sync;
pub(crate) mod thread_slot;
