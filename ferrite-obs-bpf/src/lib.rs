//! eBPF programs of ferrite-obs (C, under `bpf/`) and the Rust mirrors of the
//! event and map-value layouts they share with userspace.
//!
//! The kernel view is not built yet: this crate currently holds no programs,
//! and the runtime reports the kernel view as unavailable.
