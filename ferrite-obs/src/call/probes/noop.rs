//! Probes compiled out: the `off` feature, or a platform without stapsdt.
//! Same signatures as the stapsdt backend, so callers type-check the same.

pub(crate) const EMITS_PROBES: bool = false;

#[inline(always)]
pub(crate) fn attached(_probe: super::Probe) -> bool {
    false
}

static RECORDING: core::sync::atomic::AtomicBool = core::sync::atomic::AtomicBool::new(false);

/// The process-wide recording switch.
#[inline(always)]
pub(crate) fn recording_switch() -> &'static core::sync::atomic::AtomicBool {
    &RECORDING
}

/// The recording switch (no tracer can attach to this build).
#[inline(always)]
pub(crate) fn gate() -> super::Gate {
    super::Gate::from_parts(
        recording_switch().load(core::sync::atomic::Ordering::Relaxed),
        false,
        false,
        false,
    )
}

#[inline(always)]
pub(crate) fn probe_enter(_site: *const u8, _command: u64) {}

#[inline(always)]
pub(crate) fn probe_exit(_site: *const u8, _command: u64, _elapsed_ns: u64, _error: bool) {}

#[inline(always)]
pub(crate) fn command_start(_command: u64, _name: *const u8) {}

#[inline(always)]
pub(crate) fn command_end(_command: u64, _name: *const u8, _elapsed_ns: u64, _error: bool) {}

#[inline(always)]
pub(crate) fn storage_read(_command: u64, _key: &[u8], _bytes: u64, _latency_ns: u64) {}

#[inline(always)]
pub(crate) fn storage_write(_command: u64, _key: &[u8], _bytes: u64, _latency_ns: u64) {}

#[inline(always)]
pub(crate) fn replication_sync(_replica: u64, _offset: u64, _bytes: u64, _latency_ns: u64) {}

#[inline(always)]
pub(crate) fn connection_accept(_connection: u64, _fd: i64) {}

#[inline(always)]
pub(crate) fn connection_close(_connection: u64, _commands: u64, _lifetime_ns: u64) {}
