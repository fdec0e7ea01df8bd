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
#[cfg(feature = "runtime")]
pub(crate) use hooks::forget_in_child;
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
    /// `ebpf.enabled = false`, the runtime is disabled, or the programs
    /// have been detached (the collector's thread has ended).
    Off,
    /// This build or platform has no kernel view.
    Unsupported {
        /// Why, and what build would have it.
        reason: String,
    },
    /// The programs this kernel can run are loaded and attached.
    Active {
        /// The kernel release the programs were chosen for (`uname -r`).
        kernel: String,
        /// The attached programs, each as `hook (program)`: the tracepoint
        /// (`tp_btf/name` or `category/name`) and the variant chosen for
        /// this kernel's layout of its arguments.
        attached: Vec<String>,
        /// The figures this kernel cannot give, and why: they are absent
        /// from the snapshot, never reported as zero.
        unavailable: Vec<UnavailableFigure>,
    },
    /// A load step failed: there is no kernel view, everything else works.
    Degraded {
        /// The kernel release the load was tried on (`uname -r`).
        kernel: String,
        /// The step that failed.
        step: LoadStep,
        /// What kind of failure it was, which decides the fix.
        cause: FailureCause,
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
            KernelStatus::Active {
                kernel,
                attached,
                unavailable,
            } => {
                write!(f, "active: {} (Linux {kernel})", attached.join(", "))?;
                for missing in unavailable {
                    write!(f, "; {} unavailable: {}", missing.figure, missing.reason)?;
                }
                Ok(())
            }
            KernelStatus::Degraded {
                kernel,
                step,
                cause,
                error,
                fix,
            } => write!(
                f,
                "degraded: {step} failed ({cause}, Linux {kernel}): {error}; fix: {fix}"
            ),
        }
    }
}

/// The steps of loading the kernel view, in order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum LoadStep {
    /// Finding (or mounting) tracefs, where tracepoints are named.
    Tracefs,
    /// Reading the kernel's BTF (`/sys/kernel/btf/vmlinux`): its types
    /// and its tracepoints' arguments.
    ReadBtf,
    /// Choosing, from the BTF, the program variants that fit the kernel's
    /// tracepoints.
    ChoosePrograms,
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
            LoadStep::ReadBtf => "read-btf",
            LoadStep::ChoosePrograms => "choose-programs",
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

/// Why a load step failed: each cause has its own fix.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum FailureCause {
    /// The process lacks a capability (CAP_BPF, CAP_PERFMON,
    /// CAP_DAC_READ_SEARCH) or a sysctl forbids the call.
    MissingCapability,
    /// The kernel's verifier rejected a program (its log is in the
    /// error): a defect of ferrite-obs on this kernel, not a permission.
    VerifierRejected,
    /// The kernel has no tracepoint a figure needs, or passes it
    /// arguments no program variant reads.
    MissingTracepoint,
    /// The kernel has no BTF (`/sys/kernel/btf/vmlinux`), or it is
    /// unreadable.
    MissingBtf,
    /// tracefs is neither mounted nor mountable.
    MissingTracefs,
    /// Anything else: the error says what.
    Other,
}

impl FailureCause {
    /// The cause's name, as status reports it.
    pub fn as_str(self) -> &'static str {
        match self {
            FailureCause::MissingCapability => "missing-capability",
            FailureCause::VerifierRejected => "verifier-rejected",
            FailureCause::MissingTracepoint => "missing-tracepoint",
            FailureCause::MissingBtf => "missing-btf",
            FailureCause::MissingTracefs => "missing-tracefs",
            FailureCause::Other => "other",
        }
    }
}

impl std::fmt::Display for FailureCause {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A figure of the kernel view, as status names the ones a kernel cannot
/// give.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
#[non_exhaustive]
pub enum KernelFigure {
    /// io_uring requests attributed to commands (submitted, completed,
    /// attributed counts, and ops, errors and bytes per command and opcode).
    AttributedRequests,
    /// io_uring latency histograms per command and opcode.
    IoLatency,
    /// Requests handed to io-wq workers.
    Punts,
    /// Submissions the kernel failed.
    FailedSubmissions,
    /// Short writes.
    ShortWrites,
    /// Completions that overflowed a CQ ring.
    CqeOverflows,
    /// Off-CPU time per command, blocked and preempted.
    OffCpu,
    /// Polls that blocked their thread longer than the blocking threshold.
    BlockingPolls,
}

impl KernelFigure {
    /// The figure's name, as status reports it.
    pub fn as_str(self) -> &'static str {
        match self {
            KernelFigure::AttributedRequests => "attributed_requests",
            KernelFigure::IoLatency => "io_latency",
            KernelFigure::Punts => "punts",
            KernelFigure::FailedSubmissions => "failed_submissions",
            KernelFigure::ShortWrites => "short_writes",
            KernelFigure::CqeOverflows => "cqe_overflows",
            KernelFigure::OffCpu => "off_cpu",
            KernelFigure::BlockingPolls => "blocking_polls",
        }
    }
}

impl std::fmt::Display for KernelFigure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A figure this kernel cannot give.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UnavailableFigure {
    /// The figure.
    pub figure: KernelFigure,
    /// What the kernel lacks for it, and what kernel has it.
    pub reason: String,
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

macro_rules! kernel_counters {
    ($($(#[doc = $doc:literal])* $field:ident: $family:literal, $help:literal;)*) => {
        /// The kernel's counters, summed over CPUs.
        #[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
        pub struct KernelCounters {
            $($(#[doc = $doc])* pub $field: u64,)*
        }

        /// Every kernel counter, declared once: its family after
        /// `ferrite_kernel_` (in `/snapshot`, its key without `_total`), its
        /// help text, and its value. Every export is made from this list.
        #[cfg(feature = "runtime")]
        pub(crate) const KERNEL_COUNTERS: &[(&str, &str, fn(&KernelCounters) -> u64)] =
            &[$(($family, $help, |c| c.$field),)*];
    };
}

kernel_counters! {
    /// io_uring requests the process submitted.
    submitted: "requests_submitted_total",
        "io_uring requests the process submitted.";
    /// ... attributed to a command.
    attributed: "requests_attributed_total",
        "Submitted requests attributed to a command.";
    /// ... attributed to none (pushed outside commands, or never tagged).
    unattributed: "requests_unattributed_total",
        "Submitted requests attributed to no command (pushed outside commands or never tagged).";
    /// ... whose slot held another request's tag (a table collision).
    slot_mismatches: "slot_mismatches_total",
        "Submitted requests whose slot held another request's tag.";
    /// ... whose slot had already been used (the SQE was never tagged).
    stale_slots: "stale_slots_total",
        "Submitted requests whose slot had already been used.";
    /// Completions of those requests.
    completed: "requests_completed_total",
        "Completions of submitted requests.";
    /// Requests handed to an io-wq worker.
    punted: "requests_punted_total",
        "Requests handed to an io-wq worker.";
    /// Submissions the kernel failed.
    failed: "submissions_failed_total",
        "Submissions the kernel failed.";
    /// Short writes.
    short_writes: "short_writes_total",
        "Short writes.";
    /// Completions that overflowed a CQ ring.
    cqe_overflows: "cqe_overflows_total",
        "Completions that overflowed a CQ ring.";
    /// Outlier records lost because the ring buffer was full.
    events_dropped: "events_dropped_total",
        "Outlier records lost because the ring buffer was full.";
    /// Failed reads of the process's tables (one per exiting thread is
    /// expected).
    read_faults: "read_faults_total",
        "Failed reads of the process's attribution tables.";
    /// Requests not tracked because the in-flight map refused them.
    inflight_full: "inflight_full_total",
        "Requests not tracked because the in-flight map refused them.";
    /// Completions or switches not aggregated because a map was full.
    stats_full: "stats_full_total",
        "Completions or switches not aggregated because a map was full.";
    /// Switch-outs of threads inside a command's poll.
    switch_outs: "switch_outs_total",
        "Switch-outs of threads inside a command's poll.";
    /// ... matched by their switch-in.
    switch_ins: "switch_ins_total",
        "Switch-outs matched by their switch-in.";
    /// Completions or switches of a command whose own figures were not
    /// kept: it had ended (a request that outlived its command), began
    /// before the kernel view loaded, or had no entry (see
    /// `commands_without_entry`). Counted in the per-command-name figures,
    /// missing from that command's slow-log breakdown.
    command_misses: "command_misses_total",
        "Completions or switches of a command whose own figures were not kept (it had ended, began before the load, or had no entry).";
    /// Commands that began while 65,535 others were live (every entry of
    /// the per-command figures held): they have no kernel breakdown.
    commands_without_entry: "commands_without_entry_total",
        "Commands that began while 65,535 others were live: no kernel breakdown of their own.";
    /// Threads that could not register with the kernel view (their
    /// `registrations` entry taken and the `threads` map full): nothing of
    /// theirs is attributed under this load.
    threads_unregistered: "threads_unregistered_total",
        "Threads that could not register with the kernel view (registrations entry taken, threads map full): nothing of theirs is attributed.";
    /// Threads that tagged io_uring requests but found every slot table
    /// taken (`ebpf.slot_tables`): their requests count as unattributed.
    threads_without_slot_table: "threads_without_slot_table_total",
        "Threads that tagged io_uring requests but found every slot table taken.";
    /// Runs of the programs the kernel skipped (a program never runs
    /// nested on one CPU): the events they would have seen are missing
    /// from every figure here.
    runs_skipped: "program_runs_skipped_total",
        "Runs of the kernel view's programs the kernel skipped (never nested on one CPU): their events are missing.";
}

/// A command site's name and module, as the kernel figures of its kind
/// carry them.
#[cfg(feature = "runtime")]
#[cfg_attr(
    not(ferrite_kernel),
    expect(dead_code, reason = "read only by the kernel view's figures")
)]
#[derive(Clone, Copy, Debug)]
pub(crate) struct CommandName {
    pub(crate) name: &'static str,
    pub(crate) module: &'static str,
}

/// Completed io_uring requests of one command and opcode.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IoFigures {
    /// The command (its probe name); `None` for unattributed requests.
    pub command: Option<&'static str>,
    /// The module of the command's function (two commands may share a
    /// name); `None` with `command`.
    pub module: Option<&'static str>,
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
    /// The module of the command's function; `None` with `command`.
    pub module: Option<&'static str>,
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
