//! USDT probes of provider `ferrite`, for bpftrace, perf and SystemTap.
//!
//! Every probe name is a valid stapsdt name and attaches without quoting:
//! `usdt:/path/to/bin:ferrite:command_start`. A probe site costs one load and
//! a branch while no tracer is attached; its arguments are computed only
//! while one is. bpftrace must attach with `-p PID` (the probes are gated by
//! semaphores, which only a per-process attachment raises).
//!
//! | probe | arguments |
//! |---|---|
//! | `probe_enter` | `site: *const c_char`, `command: u64` |
//! | `probe_exit` | `site: *const c_char`, `command: u64`, `elapsed_ns: u64`, `error: u8` |
//! | `command_start` | `command: u64`, `name: *const c_char` |
//! | `command_end` | `command: u64`, `name: *const c_char`, `elapsed_ns: u64`, `error: u8` |
//! | `storage_read` | `command: u64`, `key: *const u8`, `key_len: u64`, `bytes: u64`, `latency_ns: u64` |
//! | `storage_write` | `command: u64`, `key: *const u8`, `key_len: u64`, `bytes: u64`, `latency_ns: u64` |
//! | `replication_sync` | `replica: u64`, `offset: u64`, `bytes: u64`, `latency_ns: u64` |
//! | `connection_accept` | `connection: u64`, `fd: i64` |
//! | `connection_close` | `connection: u64`, `commands: u64`, `lifetime_ns: u64` |
//!
//! `probe_enter`/`probe_exit` fire around every `#[probe]` call (for an async
//! function: at its first poll and at completion); `site` is the probe's name,
//! `command` the current command id (0 outside any command). `command_start`
//! and `command_end` fire around every `#[probe(command)]` call. The others
//! are fired by the host through the functions of this module.
//!
//! ```text
//! bpftrace -p PID -e 'usdt:BIN:ferrite:probe_exit { @ns[str(arg0)] = hist(arg2); }'
//! ```

use std::ffi::CStr;

use crate::core::command::current_raw;

#[cfg_attr(
    all(
        target_os = "linux",
        any(target_arch = "x86_64", target_arch = "aarch64"),
        not(feature = "off")
    ),
    path = "probes/stapsdt.rs"
)]
#[cfg_attr(
    not(all(
        target_os = "linux",
        any(target_arch = "x86_64", target_arch = "aarch64"),
        not(feature = "off")
    )),
    path = "probes/noop.rs"
)]
pub(crate) mod backend;

/// The USDT provider name of every probe.
pub const PROVIDER: &str = "ferrite";

/// Whether this build emits USDT probes: false with the `off` feature and on
/// platforms without stapsdt support.
pub const ENABLED_IN_BUILD: bool = backend::EMITS_PROBES;

/// The probes of provider `ferrite`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Probe {
    /// Entry of a `#[probe]` call.
    ProbeEnter,
    /// Exit of a `#[probe]` call.
    ProbeExit,
    /// Start of a command (`#[probe(command)]` or [`command_start`]).
    CommandStart,
    /// End of a command.
    CommandEnd,
    /// A storage read.
    StorageRead,
    /// A storage write.
    StorageWrite,
    /// A replication sync step.
    ReplicationSync,
    /// An accepted connection.
    ConnectionAccept,
    /// A closed connection.
    ConnectionClose,
}

impl Probe {
    /// Every probe, in the order of the table above.
    pub const ALL: [Probe; 9] = [
        Probe::ProbeEnter,
        Probe::ProbeExit,
        Probe::CommandStart,
        Probe::CommandEnd,
        Probe::StorageRead,
        Probe::StorageWrite,
        Probe::ReplicationSync,
        Probe::ConnectionAccept,
        Probe::ConnectionClose,
    ];

    /// The probe's name as tracers spell it (`usdt:BIN:ferrite:NAME`).
    pub const fn name(self) -> &'static str {
        match self {
            Probe::ProbeEnter => "probe_enter",
            Probe::ProbeExit => "probe_exit",
            Probe::CommandStart => "command_start",
            Probe::CommandEnd => "command_end",
            Probe::StorageRead => "storage_read",
            Probe::StorageWrite => "storage_write",
            Probe::ReplicationSync => "replication_sync",
            Probe::ConnectionAccept => "connection_accept",
            Probe::ConnectionClose => "connection_close",
        }
    }

    /// Whether a tracer is attached to this probe right now. Lets a host skip
    /// work that only feeds a probe's arguments.
    #[inline(always)]
    pub fn is_attached(self) -> bool {
        backend::attached(self)
    }
}

/// One reading of what a `#[probe]` call must do, laid out as the gate word
/// of the x86-64 stapsdt backend (where it is one load): byte 0 the
/// recording switch, then the 16-bit semaphores of `probe_enter` (bytes 2-3),
/// `probe_exit` (4-5) and `command_start` (6-7). `command_end`'s semaphore is
/// read on its own, by command roots only.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Gate(u64);

impl Gate {
    /// The word of backends that keep the switch and semaphores apart.
    #[allow(dead_code, reason = "used by the backends without the x86-64 gate")]
    #[inline(always)]
    pub(crate) fn from_parts(recording: bool, enter: bool, exit: bool, start: bool) -> Gate {
        Gate(
            u64::from(recording)
                | u64::from(enter) << 16
                | u64::from(exit) << 32
                | u64::from(start) << 48,
        )
    }

    /// The word as loaded from the gate.
    #[allow(dead_code, reason = "used by the x86-64 stapsdt backend")]
    #[inline(always)]
    pub(crate) const fn from_word(word: u64) -> Gate {
        Gate(word)
    }

    /// Whether recording is on.
    #[inline(always)]
    pub(crate) fn recording(self) -> bool {
        self.0 as u8 != 0
    }

    /// Whether a call must do anything beyond the `tracing` check: recording
    /// is on, or a tracer is attached to a probe the call fires. For a plain
    /// site a test of the word's low six bytes (the switch, a spare byte that
    /// stays zero, `probe_enter`, `probe_exit`).
    #[inline(always)]
    pub(crate) fn wanted(self, is_command: bool) -> bool {
        if is_command {
            self.0 != 0 || backend::attached(Probe::CommandEnd)
        } else {
            self.0 << 16 != 0
        }
    }

    /// Whether recording is on and no tracer is attached to the probes of a
    /// plain call (`probe_enter`, `probe_exit`).
    #[inline(always)]
    pub(crate) fn recording_only(self) -> bool {
        // The spare byte stays zero.
        self.0 & 0xffff_ffff_ffff == 1
    }

    /// Whether the call's exit probes want its elapsed time.
    #[inline(always)]
    pub(crate) fn exit_traced(self, is_command: bool) -> bool {
        (self.0 >> 32) as u16 != 0 || (is_command && backend::attached(Probe::CommandEnd))
    }
}

/// Fires `command_start` for a command the host tracks itself (commands
/// under `#[probe(command)]` fire it automatically).
#[inline(always)]
pub fn command_start(command: u64, name: &CStr) {
    backend::command_start(command, name.as_ptr().cast());
}

/// Fires `command_end`; see [`command_start`].
#[inline(always)]
pub fn command_end(command: u64, name: &CStr, elapsed_ns: u64, error: bool) {
    backend::command_end(command, name.as_ptr().cast(), elapsed_ns, error);
}

/// Fires `storage_read`: `bytes` read for `key` in `latency_ns`, on behalf of
/// the current command.
#[inline(always)]
pub fn storage_read(key: &[u8], bytes: u64, latency_ns: u64) {
    backend::storage_read(current_raw(), key, bytes, latency_ns);
}

/// Fires `storage_write`: `bytes` written for `key` in `latency_ns`, on
/// behalf of the current command.
#[inline(always)]
pub fn storage_write(key: &[u8], bytes: u64, latency_ns: u64) {
    backend::storage_write(current_raw(), key, bytes, latency_ns);
}

/// Fires `replication_sync`: `bytes` sent to `replica` up to replication
/// `offset` in `latency_ns`.
#[inline(always)]
pub fn replication_sync(replica: u64, offset: u64, bytes: u64, latency_ns: u64) {
    backend::replication_sync(replica, offset, bytes, latency_ns);
}

/// Fires `connection_accept` for connection id `connection` on socket `fd`.
#[inline(always)]
pub fn connection_accept(connection: u64, fd: i64) {
    backend::connection_accept(connection, fd);
}

/// Fires `connection_close`: `connection` served `commands` commands over
/// `lifetime_ns`.
#[inline(always)]
pub fn connection_close(connection: u64, commands: u64, lifetime_ns: u64) {
    backend::connection_close(connection, commands, lifetime_ns);
}
