//! The endpoint's JSON documents as types: what `/snapshot`, `/status` and
//! `/slowlog` serve, and what a reader (`ferrite-top`) deserialises. With
//! the `schema` feature (which `runtime` turns on), so that a reader needs
//! serde alone.
//!
//! Every document carries [`SCHEMA_VERSION`]; a reader that meets another
//! version should say so rather than misread it. Durations are nanoseconds
//! in integer fields named `*_ns`, or seconds in `*_seconds` floats. The
//! per-site counters are the ones [`core::figures`](crate) declares, under
//! the same names.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::core::figures::site_counters;

/// The version of the documents' layout: raised when a field is removed or
/// changes meaning (adding one does not).
pub const SCHEMA_VERSION: u32 = 1;

/// `GET /snapshot`: every site and the kernel view, as of one rollup.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Snapshot {
    /// [`SCHEMA_VERSION`] of the server that wrote it.
    pub schema_version: u32,
    /// Rollups made before this one.
    pub sequence: u64,
    /// Length of the interval the `interval` figures cover.
    pub interval_seconds: f64,
    /// The collector's own cost.
    pub collector: Collector,
    /// What the instrumentation cost the host.
    pub instrumentation: Instrumentation,
    /// Every site that has recorded, in registration order.
    pub sites: Vec<Site>,
    /// The kernel view's figures; `None` when it is not running.
    pub kernel: Option<Kernel>,
}

/// The collector's own cost.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Collector {
    /// Wall time of the last rollup.
    pub last_rollup_seconds: f64,
    /// Sum of the wall time of every rollup.
    pub total_rollup_seconds: f64,
    /// CPU time of the collector's thread.
    pub thread_cpu_seconds: f64,
}

/// What the instrumentation cost the host: calls times the measured
/// per-call cost.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Instrumentation {
    /// The measured cost of one recorded call.
    pub per_call_ns: f64,
    /// Cost during the last interval.
    pub interval_seconds: f64,
    /// Cost since the runtime started.
    pub total_seconds: f64,
    /// Threads that have recorded on the shared slot (every exclusive slot
    /// taken).
    #[serde(default)]
    pub shared_slot_threads: u64,
    /// Those of them that have moved to an exclusive slot since.
    #[serde(default)]
    pub shared_slot_moves: u64,
}

/// One call site.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Site {
    /// Probe name.
    pub name: String,
    /// Module path of the instrumented function.
    pub module: String,
    /// Whether it is a command root.
    pub command: bool,
    /// Whether the function is `async`.
    #[serde(rename = "async")]
    pub is_async: bool,
    /// Figures since the process started.
    pub total: Totals,
    /// Figures of the last interval.
    pub interval: Interval,
}

macro_rules! site_documents {
    ($($field:ident: $family:literal, $scale:literal, $help:literal;)*) => {
        /// A site's figures since the process started (monotonic).
        #[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
        pub struct Totals {
            $(
                #[doc = $help]
                pub $field: u64,
            )*
            /// Calls started and not yet ended.
            pub in_flight: u64,
            /// Sum of the latencies of completed calls.
            pub latency_sum_ns: u64,
            /// The latency histogram's non-empty buckets, in order:
            /// `[lowest ns, highest ns, calls]`.
            pub latency_buckets: Vec<[u64; 3]>,
        }

        /// A site's figures during the last interval.
        #[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
        pub struct Interval {
            $(
                #[doc = $help]
                pub $field: u64,
            )*
            /// Completed calls per second.
            pub calls_per_second: f64,
            /// Latency quantiles of the interval's calls (within 1.6 %);
            /// `None` when none completed.
            pub p50_ns: Option<u64>,
            /// See `p50_ns`.
            pub p90_ns: Option<u64>,
            /// See `p50_ns`.
            pub p99_ns: Option<u64>,
            /// See `p50_ns`.
            pub p999_ns: Option<u64>,
            /// The slowest call of the interval (within 1.6 %).
            pub max_ns: Option<u64>,
        }

        /// The per-site counters: the field of [`Totals`] and [`Interval`],
        /// the family after `ferrite_{probe,command}_`, and the factor from
        /// the field's unit to the family's.
        #[doc(hidden)]
        pub const SITE_COUNTERS: &[(&str, &str, f64)] =
            &[$((stringify!($field), $family, $scale),)*];
    };
}

site_counters!(site_documents! {});

/// The kernel view's figures.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Kernel {
    /// Every counter of the kernel view, by name (see docs/operations.md).
    pub counters: BTreeMap<String, u64>,
    /// io_uring requests by (command, opcode).
    pub io: Vec<Io>,
    /// Off-CPU time by command.
    pub off_cpu: Vec<OffCpu>,
    /// Outlier events received from the kernel since the start.
    pub events_received: u64,
    /// Events that did not parse.
    pub events_malformed: u64,
    /// The latest outlier events, newest first.
    pub recent_events: Vec<Event>,
}

/// io_uring requests of one command and opcode.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Io {
    /// The command; `None` for unattributed requests.
    pub command: Option<String>,
    /// The module of the command's function (two commands may share a
    /// name).
    #[serde(default)]
    pub module: Option<String>,
    /// The opcode's number.
    pub opcode: u32,
    /// The opcode's name.
    pub opcode_name: String,
    /// Requests completed.
    pub ops: u64,
    /// Requests that completed with an error.
    pub errors: u64,
    /// Bytes transferred.
    pub bytes: u64,
    /// Requests punted to io-wq workers.
    pub punts: u64,
    /// Sum of the requests' latencies.
    pub latency_sum_ns: u64,
    /// Upper bound of the median latency's power-of-two bucket.
    pub p50_upper_ns: Option<u64>,
    /// Upper bound of the p99 latency's power-of-two bucket.
    pub p99_upper_ns: Option<u64>,
    /// Requests by latency, bucket `i` holding `[2^i, 2^(i+1))` ns.
    pub log2_buckets: Vec<u64>,
}

/// One command's time off the CPU.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct OffCpu {
    /// The command; `None` outside any command.
    pub command: Option<String>,
    /// The module of the command's function.
    #[serde(default)]
    pub module: Option<String>,
    /// Time switched out while blocked.
    pub blocked_ns: u64,
    /// Time switched out while runnable.
    pub preempted_ns: u64,
    /// Switches out.
    pub switches: u64,
    /// Polls that blocked their thread longer than the blocking threshold.
    pub blocking_polls: u64,
}

/// An outlier event.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// `slow_io`, `failed_io` or `blocked_poll`.
    pub kind: String,
    /// The thread.
    pub tid: u32,
    /// The command's id (0 outside any command).
    pub command_id: u64,
    /// The command's name, when known.
    pub command: Option<String>,
    /// How long it took.
    pub duration_ns: u64,
    /// The io_uring opcode, for io events.
    pub opcode: Option<String>,
    /// The request's result, for io events.
    pub result: Option<i32>,
}

/// `GET /status`: what is running.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Status {
    /// [`SCHEMA_VERSION`] of the server that wrote it.
    pub schema_version: u32,
    /// `enabled` in the configuration.
    pub enabled: bool,
    /// Whether `#[probe]` sites are recording.
    pub recording: bool,
    /// Whether the collector is publishing snapshots.
    pub collector_running: bool,
    /// The rollup interval in force.
    pub rollup_interval_seconds: f64,
    /// Where the endpoint listens (empty when off).
    pub endpoint: String,
    /// Whether the endpoint accepts connections; `None` from a server that
    /// predates the field.
    #[serde(default)]
    pub endpoint_listening: Option<bool>,
    /// Connections closed while still sending their request, to make room
    /// for a new one.
    #[serde(default)]
    pub endpoint_evicted: u64,
    /// Connections answered `503`, all 64 being answered.
    #[serde(default)]
    pub endpoint_refused: u64,
    /// The kernel view's state (`off` once its programs are detached).
    pub kernel: KernelStatus,
    /// The collector's thread and rollups; `None` from a server that
    /// predates the field.
    #[serde(default)]
    pub collector: Option<CollectorStatus>,
    /// The export into the `metrics` facade; `None` from a server that
    /// predates the field.
    #[serde(default)]
    pub facade: Option<FacadeStatus>,
}

/// The collector: the thread that rolls up and serves the endpoint.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CollectorStatus {
    /// What it is doing, as `state` and that state's fields.
    #[serde(flatten)]
    pub state: CollectorState,
    /// Rollups published since the start.
    pub rollups: u64,
    /// Wall-clock time of the last rollup, seconds since the Unix epoch.
    pub last_rollup_unix_seconds: Option<f64>,
    /// Time since then.
    pub last_rollup_age_seconds: Option<f64>,
    /// Panics caught on the collector's thread.
    pub panics: u64,
    /// The latest of them.
    pub last_panic: Option<CaughtPanic>,
}

/// What the collector is doing, tagged by `state` (see docs/operations.md).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "lowercase")]
pub enum CollectorState {
    /// Not started.
    Off,
    /// Rolling up every interval.
    Running,
    /// No rollup has succeeded for longer than the stall threshold, and
    /// the last one panicked.
    Failing,
    /// No rollup for longer than the stall threshold.
    Stalled {
        /// The stage that has not returned (`rollup`, `endpoint`), when one
        /// is running.
        stage: Option<String>,
        /// Since when, seconds since the Unix epoch.
        since_unix_seconds: f64,
        /// For how long.
        stalled_seconds: f64,
    },
    /// Its thread ended: nothing is rolled up or served.
    Exited {
        /// Why.
        reason: String,
    },
}

/// The export into the `metrics` facade.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FacadeStatus {
    /// What it is doing, as `state` and that state's fields.
    #[serde(flatten)]
    pub state: FacadeState,
    /// Exports completed since the start.
    pub exports: u64,
    /// Wall-clock time of the last one, seconds since the Unix epoch.
    pub last_export_unix_seconds: Option<f64>,
    /// Time since then.
    pub last_export_age_seconds: Option<f64>,
    /// Panics caught in the recorder.
    pub panics: u64,
    /// The panic, when there was one.
    pub last_panic: Option<CaughtPanic>,
}

/// What the facade export is doing, tagged by `state`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "lowercase")]
pub enum FacadeState {
    /// Not started.
    Off,
    /// Exporting after every rollup.
    Running,
    /// One export has not returned for longer than the stall threshold.
    Stalled {
        /// Since when, seconds since the Unix epoch.
        since_unix_seconds: f64,
        /// For how long.
        stalled_seconds: f64,
    },
    /// The recorder panicked and is called no more.
    Failed,
}

/// A panic caught in one of the runtime's stages.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CaughtPanic {
    /// `rollup`, `endpoint`, `facade` or `thread`.
    pub stage: String,
    /// Its message, and where it was raised when known.
    pub message: String,
    /// When, seconds since the Unix epoch.
    pub at_unix_seconds: f64,
}

/// The kernel view's state, tagged by `state`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "lowercase")]
pub enum KernelStatus {
    /// Not enabled, or its programs detached.
    Off,
    /// Not available on this platform or build.
    Unsupported {
        /// Why.
        reason: String,
    },
    /// Loaded and attached.
    Active {
        /// The kernel release the programs were chosen for.
        kernel: String,
        /// The programs attached, each as `hook (program)`.
        attached: Vec<String>,
        /// The figures this kernel cannot give, and why.
        unavailable: Vec<Unavailable>,
    },
    /// Enabled, but a step failed.
    Degraded {
        /// The kernel release the load was tried on.
        kernel: String,
        /// The step that failed.
        step: String,
        /// The kind of failure (`missing-capability`, `verifier-rejected`,
        /// `missing-tracepoint`, `missing-btf`, `missing-tracefs`, ...).
        cause: String,
        /// What failed.
        error: String,
        /// What to do about it.
        fix: String,
    },
}

/// A figure the running kernel cannot give.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Unavailable {
    /// The figure (`attributed_requests`, `off_cpu`, ...).
    pub figure: String,
    /// What the kernel lacks for it, and which kernels have it.
    pub reason: String,
}

/// `GET /slowlog`: the slow-command log.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SlowLog {
    /// [`SCHEMA_VERSION`] of the server that wrote it.
    pub schema_version: u32,
    /// Slow commands logged since the start.
    pub logged: u64,
    /// Slow commands not logged: more than 4,096 ended between two reads
    /// of the log.
    pub dropped: u64,
    /// The latest slow commands, newest first.
    pub entries: Vec<SlowEntry>,
}

/// One slow command.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SlowEntry {
    /// The command's id.
    pub id: u64,
    /// The command's name.
    pub command: String,
    /// Wall-clock start, seconds since the Unix epoch.
    pub started_at_unix_seconds: f64,
    /// How long it took.
    pub duration_ns: u64,
    /// Time its polls ran.
    pub busy_ns: u64,
    /// Whether it ended in an error or a panic.
    pub error: bool,
    /// Where its time went in the kernel; `None` without the kernel view.
    pub kernel: Option<SlowKernel>,
}

/// A slow command's time in the kernel.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SlowKernel {
    /// Its io_uring requests that completed before it ended.
    pub io_requests: u64,
    /// The sum of their latencies.
    pub io_wait_ns: u64,
    /// Time switched out of the CPU.
    pub off_cpu_ns: u64,
    /// Time on the CPU.
    pub on_cpu_ns: u64,
}
