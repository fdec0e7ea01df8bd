//! What is running, as [`Handle::status`](crate::Handle::status) and the
//! endpoint's `/status` report it.
//!
//! Each part says what it is doing now, read when the status is asked for:
//! the collector's thread and the age of its last rollup, the export into
//! the `metrics` facade on its own thread, the endpoint's listener, and the
//! kernel view's programs. A part that has stopped says so, and why.

use std::net::SocketAddr;
use std::time::{Duration, SystemTime};

use crate::kernel::KernelStatus;

/// What is running, for operators.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Status {
    /// `enabled` in the configuration.
    pub enabled: bool,
    /// Whether `#[probe]` sites are recording.
    pub recording: bool,
    /// Whether the collector is publishing snapshots: its thread runs and
    /// its last rollup is recent ([`CollectorState::Running`]).
    pub collector_running: bool,
    /// Rollup interval in force.
    pub rollup_interval: Duration,
    /// Where the endpoint listens, when it is on.
    pub endpoint: Option<SocketAddr>,
    /// Whether the endpoint accepts connections now.
    pub endpoint_listening: bool,
    /// Connections the endpoint closed while they were still sending their
    /// request, to make room for a new one (all 64 being taken).
    pub endpoint_evicted: u64,
    /// Connections answered `503` because all 64 were being answered.
    pub endpoint_refused: u64,
    /// The kernel view: off, active (its programs attached), or degraded
    /// and why. `Off` once its programs are detached.
    pub kernel: KernelStatus,
    /// The collector: its thread, its rollups and the panics it caught.
    pub collector: CollectorStatus,
    /// The export into the `metrics` facade.
    pub facade: FacadeStatus,
}

/// The collector: the thread that rolls up and serves the endpoint.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct CollectorStatus {
    /// What it is doing.
    pub state: CollectorState,
    /// Rollups published since the start (the latest snapshot's
    /// `sequence`).
    pub rollups: u64,
    /// Wall-clock time of the last rollup published; `None` before the
    /// first.
    pub last_rollup: Option<SystemTime>,
    /// Time since then (on the monotonic clock).
    pub last_rollup_age: Option<Duration>,
    /// Panics caught on the collector's thread: in rollups, in rendering
    /// the endpoint's answers, and one that ended the thread.
    pub panics: u64,
    /// The latest of them.
    pub last_panic: Option<CaughtPanic>,
}

impl CollectorStatus {
    /// The status of a collector that was never started.
    pub(crate) fn off() -> CollectorStatus {
        CollectorStatus {
            state: CollectorState::Off,
            rollups: 0,
            last_rollup: None,
            last_rollup_age: None,
            panics: 0,
            last_panic: None,
        }
    }
}

/// What the collector is doing. It is stalled, or failing, when its last
/// rollup is older than the stall threshold: twice the rollup interval, and
/// at least one second.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum CollectorState {
    /// Not started: the runtime is disabled.
    Off,
    /// Rolling up every interval.
    Running,
    /// Its thread runs, but no rollup has succeeded for longer than the
    /// stall threshold and the last one panicked (the message is in
    /// `last_panic`); the snapshot is the last one that succeeded.
    Failing,
    /// No rollup for longer than the stall threshold.
    Stalled {
        /// The part that has been running since `since` without
        /// returning; `None` when the thread is in none of them.
        stage: Option<Stage>,
        /// Since when.
        since: SystemTime,
        /// For how long (on the monotonic clock).
        duration: Duration,
    },
    /// Its thread ended without being asked to: nothing is rolled up or
    /// served, the kernel view's programs are detached and recording is off.
    Exited {
        /// Why (the panic that ended it).
        reason: String,
    },
}

/// The export of every snapshot into the installed `metrics` recorder, on a
/// thread of its own (`ferrite-metrics`): a recorder that blocks holds up
/// this export alone, never the rollups or the endpoint.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct FacadeStatus {
    /// What it is doing.
    pub state: FacadeState,
    /// Exports completed since the start.
    pub exports: u64,
    /// Wall-clock time of the last one; `None` before the first.
    pub last_export: Option<SystemTime>,
    /// Time since then (on the monotonic clock).
    pub last_export_age: Option<Duration>,
    /// Panics caught in the recorder (at most one: see
    /// [`FacadeState::Failed`]).
    pub panics: u64,
    /// The panic, when there was one.
    pub last_panic: Option<CaughtPanic>,
}

impl FacadeStatus {
    /// The status of an export that was never started.
    pub(crate) fn off() -> FacadeStatus {
        FacadeStatus {
            state: FacadeState::Off,
            exports: 0,
            last_export: None,
            last_export_age: None,
            panics: 0,
            last_panic: None,
        }
    }
}

/// What the facade export is doing.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum FacadeState {
    /// Not started: the runtime is disabled.
    Off,
    /// Exporting after every rollup (to no recorder, while none is
    /// installed).
    Running,
    /// One export has not returned for longer than the stall threshold:
    /// the recorder blocks. Exports resume when it returns, with the latest
    /// snapshot.
    Stalled {
        /// Since when.
        since: SystemTime,
        /// For how long (on the monotonic clock).
        duration: Duration,
    },
    /// The recorder panicked (the message is in `last_panic`), and it is
    /// called no more until the runtime is started again: a recorder that
    /// unwound mid-update may hold half-made state, and would most likely
    /// panic again at every rollup. Everything else runs; the same figures
    /// are in the endpoint's `/metrics`.
    Failed,
}

/// A part of the runtime whose runs are watched: timed, and their panics
/// caught and counted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Stage {
    /// A rollup: folding the sites and the kernel view's maps, publishing
    /// the snapshot.
    Rollup,
    /// Rendering one of the endpoint's answers.
    Endpoint,
    /// An export into the `metrics` facade.
    Facade,
    /// The collector's thread, outside any of the above.
    Thread,
}

impl Stage {
    /// The stage's name, as status reports it.
    pub fn as_str(self) -> &'static str {
        match self {
            Stage::Rollup => "rollup",
            Stage::Endpoint => "endpoint",
            Stage::Facade => "facade",
            Stage::Thread => "thread",
        }
    }
}

impl std::fmt::Display for Stage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A panic caught in one of the runtime's stages.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CaughtPanic {
    /// Where it was caught.
    pub stage: Stage,
    /// Its message, and where it was raised when the panic hook could tell
    /// (`message (at file:line:column)`).
    pub message: String,
    /// When.
    pub at: SystemTime,
}
