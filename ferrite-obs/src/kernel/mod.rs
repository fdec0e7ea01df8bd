//! The kernel view: eBPF programs loaded for this process that attribute
//! every io_uring request to the command that issued it and measure the time
//! each command spends off-CPU.
//!
//! The runtime loads the programs of `ferrite-obs-bpf` at [`start`](crate::start)
//! when `ebpf.enabled` is set, with this process's tgid as a load-time
//! constant, and folds their maps into every snapshot. When a step fails
//! (no tracefs, missing capability, unsupported kernel) the status names the
//! step, the error and the fix; everything else keeps working. Nothing is
//! ever made up: a figure the kernel did not report is absent.
//!
//! Attribution needs to know which command pushed each SQE. Hosts that build
//! their own SQEs call [`tag_sqe`] for each one they push; the kernel reads
//! the tag when the ring is entered.

use std::time::Duration;

mod breakdown;
#[cfg(ferrite_kernel)]
mod commands;
#[cfg(ferrite_kernel)]
mod mapped;
#[cfg(ferrite_kernel)]
mod threads;
#[cfg(ferrite_uring)]
pub mod uring;

// The loader and the call path's hooks, for a build with the kernel view
// (Linux with the `ebpf` feature) or without it: chosen once, here.
#[cfg(feature = "runtime")]
#[cfg_attr(ferrite_kernel, path = "linux.rs")]
#[cfg_attr(not(ferrite_kernel), path = "noop.rs")]
mod backend;
#[cfg_attr(ferrite_kernel, path = "hooks/live.rs")]
#[cfg_attr(not(ferrite_kernel), path = "hooks/off.rs")]
mod hooks;

#[cfg(feature = "runtime")]
pub(crate) use backend::Kernel;
pub use breakdown::KernelBreakdown;
pub(crate) use hooks::{
    begin_command, command_breakdown, enter_command, enter_command_poll, exit_command,
};

/// Tags an SQE the calling thread pushes to its io_uring as issued by the
/// thread's current command (or by none, outside any command).
///
/// For hosts that build their own SQEs. Call it for every SQE you push, in
/// the order you push them, before the ring is entered, with the SQE's
/// `user_data`, on the thread that pushes and submits. The kernel view then
/// counts the request, its latency and its bytes for that command. An SQE
/// pushed without a tag is counted as unattributed, never guessed.
///
/// The contract, as thread-per-core servers work: each thread pushes to one
/// ring, which it alone pushes to and enters, and a `user_data` value is not
/// reused while an SQE carrying it is still pushed but not yet entered. A
/// thread that pushes to two rings can see one ring's tags read for the
/// other's SQEs with the same `user_data`.
///
/// The cost: a few stores into the thread's slot table (taken at its first
/// tag, see `ebpf.slot_tables`); nothing at all while the kernel view is not
/// running.
#[inline]
pub fn tag_sqe(user_data: u64) {
    hooks::tag_sqe(user_data);
}

/// What the kernel view is doing.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum KernelStatus {
    /// `ebpf.enabled = false`, or the runtime is disabled.
    Off,
    /// This build or platform has no kernel view.
    Unsupported {
        /// Why, and what build would have it.
        reason: String,
    },
    /// Every program is loaded and attached.
    Active {
        /// The attached programs, as `category/tracepoint`.
        attached: Vec<String>,
    },
    /// A load step failed: there is no kernel view, everything else works.
    Degraded {
        /// The step that failed.
        step: LoadStep,
        /// What the kernel or the system said.
        error: String,
        /// What would make it work.
        fix: String,
    },
}

impl KernelStatus {
    /// Whether the programs are attached.
    pub fn is_active(&self) -> bool {
        matches!(self, KernelStatus::Active { .. })
    }
}

impl std::fmt::Display for KernelStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            KernelStatus::Off => f.write_str("off"),
            KernelStatus::Unsupported { reason } => write!(f, "unsupported: {reason}"),
            KernelStatus::Active { attached } => write!(f, "active: {}", attached.join(", ")),
            KernelStatus::Degraded { step, error, fix } => {
                write!(f, "degraded: {step} failed: {error}; fix: {fix}")
            }
        }
    }
}

/// The steps of loading the kernel view, in order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LoadStep {
    /// Finding (or mounting) tracefs, where tracepoints are named.
    Tracefs,
    /// Parsing the object and creating its maps.
    CreateMaps,
    /// Loading a program (the verifier runs here).
    LoadProgram,
    /// Attaching a program to its tracepoint.
    Attach,
}

impl LoadStep {
    /// The step's name, as status reports it.
    pub fn as_str(self) -> &'static str {
        match self {
            LoadStep::Tracefs => "tracefs",
            LoadStep::CreateMaps => "create-maps",
            LoadStep::LoadProgram => "load-program",
            LoadStep::Attach => "attach",
        }
    }
}

impl std::fmt::Display for LoadStep {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Everything the kernel view has measured since it was loaded (monotonic
/// totals, as the kernel keeps them).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct KernelSnapshot {
    /// Totals over every request and switch.
    pub counters: KernelCounters,
    /// Completed io_uring requests per command and opcode, unattributed ones
    /// under `command: None`.
    pub io: Vec<IoFigures>,
    /// Off-CPU time per command.
    pub off_cpu: Vec<OffCpuFigures>,
    /// The latest outliers (slow or failed requests, blocking polls), newest
    /// first, at most [`RECENT_EVENTS`].
    pub recent_events: Vec<KernelEvent>,
    /// Outlier records received since the load.
    pub events_received: u64,
    /// Records that could not be decoded (a program and runtime mismatch).
    pub events_malformed: u64,
}

/// How many outlier records a snapshot keeps.
pub const RECENT_EVENTS: usize = 64;

/// The kernel's counters, summed over CPUs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KernelCounters {
    /// io_uring requests the process submitted.
    pub submitted: u64,
    /// ... attributed to a command.
    pub attributed: u64,
    /// ... attributed to none (pushed outside commands, or never tagged).
    pub unattributed: u64,
    /// ... whose slot held another request's tag (a table collision).
    pub slot_mismatches: u64,
    /// ... whose slot had already been used (the SQE was never tagged).
    pub stale_slots: u64,
    /// Completions of those requests.
    pub completed: u64,
    /// Requests handed to an io-wq worker.
    pub punted: u64,
    /// Submissions the kernel failed.
    pub failed: u64,
    /// Short writes.
    pub short_writes: u64,
    /// Completions that overflowed a CQ ring.
    pub cqe_overflows: u64,
    /// Outlier records lost because the ring buffer was full.
    pub events_dropped: u64,
    /// Failed reads of the process's tables (one per exiting thread is
    /// expected).
    pub read_faults: u64,
    /// Requests not tracked because the in-flight map refused them.
    pub inflight_full: u64,
    /// Completions or switches not aggregated because a map was full.
    pub stats_full: u64,
    /// Switch-outs of threads inside a command's poll.
    pub switch_outs: u64,
    /// ... matched by their switch-in.
    pub switch_ins: u64,
    /// Completions or switches of a command whose figures were no longer
    /// kept (65,536 newer commands had begun since it did, or it began
    /// before the kernel view loaded): counted in the per-command-name
    /// figures, missing from that command's slow-log breakdown.
    pub command_misses: u64,
    /// Threads that tagged io_uring requests but found every slot table
    /// taken (`ebpf.slot_tables`): their requests count as unattributed.
    pub threads_without_slot_table: u64,
    /// Runs of the programs the kernel skipped (a program never runs
    /// nested on one CPU): the events they would have seen are missing
    /// from every figure here.
    pub runs_skipped: u64,
}

/// Completed io_uring requests of one command and opcode.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IoFigures {
    /// The command (its probe name); `None` for unattributed requests.
    pub command: Option<&'static str>,
    /// The io_uring opcode.
    pub opcode: u32,
    /// Its name (`"read"`, `"write"`, `"fsync"`, ...), or `"op<N>"`.
    pub opcode_name: String,
    /// Completed requests.
    pub ops: u64,
    /// Completions with a negative result.
    pub errors: u64,
    /// Bytes moved.
    pub bytes: u64,
    /// Requests handed to an io-wq worker.
    pub punts: u64,
    /// Sum of submit-to-completion latencies.
    pub latency_sum: Duration,
    /// Log2 latency histogram: `buckets[i]` counts latencies in
    /// `[2^i, 2^(i+1))` ns, the last bucket everything above.
    pub buckets: Vec<u64>,
}

impl IoFigures {
    /// Upper bound of the latency at quantile `q` (0..=1), from the log2
    /// buckets (within a factor of 2), if any request completed.
    pub fn quantile_upper_bound(&self, q: f64) -> Option<Duration> {
        let total: u64 = self.buckets.iter().sum();
        if total == 0 {
            return None;
        }
        let rank = ((q.clamp(0.0, 1.0) * total as f64).ceil() as u64).max(1);
        let mut seen = 0;
        for (i, count) in self.buckets.iter().enumerate() {
            seen += count;
            if seen >= rank {
                return Some(Duration::from_nanos(
                    1u64.checked_shl(i as u32 + 1).unwrap_or(u64::MAX),
                ));
            }
        }
        None
    }
}

/// Off-CPU time of one command's polls.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OffCpuFigures {
    /// The command (its probe name); `None` when its kind was unknown.
    pub command: Option<&'static str>,
    /// Time switched out sleeping: blocking calls inside async code.
    pub blocked: Duration,
    /// Time switched out runnable: run-queue delay.
    pub preempted: Duration,
    /// Switches ending such a time.
    pub switches: u64,
    /// Blocked times longer than `ebpf.blocking_threshold`.
    pub long_blocks: u64,
}

/// An outlier the kernel reported.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KernelEvent {
    /// What happened.
    pub kind: KernelEventKind,
    /// The thread.
    pub tid: u32,
    /// The command id (0: none).
    pub command_id: u64,
    /// The command's name, when known.
    pub command: Option<&'static str>,
    /// The request's latency, or how long the poll blocked.
    pub duration: Duration,
    /// The opcode's name, for requests.
    pub opcode: Option<String>,
    /// The completion's result (a negative errno for failures), for requests.
    pub result: Option<i32>,
}

/// What a [`KernelEvent`] reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KernelEventKind {
    /// A request slower than `slow_threshold`.
    SlowIo,
    /// A request that completed with an error.
    FailedIo,
    /// A command's poll blocked its thread longer than the blocking threshold.
    BlockedPoll,
}

impl KernelEventKind {
    /// The kind's name in JSON and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            KernelEventKind::SlowIo => "slow_io",
            KernelEventKind::FailedIo => "failed_io",
            KernelEventKind::BlockedPoll => "blocked_poll",
        }
    }
}
