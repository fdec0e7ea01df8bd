//! The slow-command log: the latest commands (`#[probe(command)]` calls) that
//! took longer than `slow_threshold`, as Redis's SLOWLOG keeps them.
//!
//! A command's end compares its elapsed time with the threshold: one load and
//! a compare, and only at command roots. A slow command takes the log's lock
//! with `try_lock`, so it never waits: if the collector (or another slow
//! command) holds it at that instant, the entry is counted as dropped
//! instead. The log is a ring of `slowlog_len` entries; the oldest go first.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

pub use crate::kernel::KernelBreakdown;

/// Commands at least this slow are logged; `u64::MAX` while the runtime is
/// not running.
static THRESHOLD_NS: AtomicU64 = AtomicU64::new(u64::MAX);
/// Slow commands not logged because the log was busy.
static DROPPED: AtomicU64 = AtomicU64::new(0);
static LOG: Mutex<Ring> = Mutex::new(Ring {
    entries: VecDeque::new(),
    capacity: 0,
    logged: 0,
});

struct Ring {
    entries: VecDeque<SlowEntry>,
    capacity: usize,
    logged: u64,
}

/// One slow command.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SlowEntry {
    /// The command's id (as the USDT probes carry it).
    pub id: u64,
    /// The command's name (its probe name).
    pub command: &'static str,
    /// Wall-clock time the command started.
    pub started_at: SystemTime,
    /// Time from start to end.
    pub duration: Duration,
    /// Time spent running it: the sum of its polls for an async command, the
    /// whole call for a synchronous one.
    pub busy: Duration,
    /// Whether it ended in an error (with `err`), a panic or a cancellation.
    pub error: bool,
    /// Where the time went in the kernel (io_uring wait, off-CPU, on-CPU),
    /// read as the command ended; `None` when the kernel view was not
    /// running then.
    pub kernel: Option<KernelBreakdown>,
}

/// The log as a snapshot carries it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SlowLog {
    /// The latest slow commands, newest first.
    pub entries: Vec<SlowEntry>,
    /// Slow commands logged since the runtime started (some may have left
    /// the ring since).
    pub logged: u64,
    /// Slow commands not logged because the log was busy at that instant.
    pub dropped: u64,
}

/// Starts logging commands at least `threshold` slow, keeping `capacity`.
#[cfg(feature = "runtime")]
pub(crate) fn configure(threshold: Duration, capacity: usize) {
    let mut ring = LOG.lock().unwrap_or_else(|e| e.into_inner());
    ring.entries = VecDeque::with_capacity(capacity);
    ring.capacity = capacity;
    ring.logged = 0;
    DROPPED.store(0, Ordering::Relaxed);
    THRESHOLD_NS.store(
        u64::try_from(threshold.as_nanos()).unwrap_or(u64::MAX),
        Ordering::Relaxed,
    );
}

/// Stops logging and frees the ring.
#[cfg(feature = "runtime")]
pub(crate) fn disable() {
    THRESHOLD_NS.store(u64::MAX, Ordering::Relaxed);
    let mut ring = LOG.lock().unwrap_or_else(|e| e.into_inner());
    ring.entries = VecDeque::new();
    ring.capacity = 0;
}

/// Whether a command that took `elapsed_ns` is slow.
#[inline(always)]
pub(crate) fn is_slow(elapsed_ns: u64) -> bool {
    elapsed_ns >= THRESHOLD_NS.load(Ordering::Relaxed)
}

/// Logs a slow command, unless the log is busy this instant.
#[cold]
#[inline(never)]
pub(crate) fn log(id: u64, command: &'static str, elapsed_ns: u64, busy_ns: u64, error: bool) {
    let busy = Duration::from_nanos(busy_ns);
    let kernel = crate::kernel::command_breakdown(id, busy);
    let Ok(mut ring) = LOG.try_lock() else {
        DROPPED.fetch_add(1, Ordering::Relaxed);
        return;
    };
    if ring.capacity == 0 {
        return;
    }
    let duration = Duration::from_nanos(elapsed_ns);
    if ring.entries.len() == ring.capacity {
        ring.entries.pop_front();
    }
    ring.entries.push_back(SlowEntry {
        id,
        command,
        started_at: SystemTime::now()
            .checked_sub(duration)
            .unwrap_or(SystemTime::UNIX_EPOCH),
        duration,
        busy,
        error,
        kernel,
    });
    ring.logged += 1;
}

/// Empties the log (as Redis's `SLOWLOG RESET`); `logged` counts on.
pub fn reset() {
    LOG.lock()
        .unwrap_or_else(|e| e.into_inner())
        .entries
        .clear();
}

/// The log now, newest first (as Redis's `SLOWLOG GET`).
pub fn read() -> SlowLog {
    let ring = LOG.lock().unwrap_or_else(|e| e.into_inner());
    SlowLog {
        entries: ring.entries.iter().rev().cloned().collect(),
        logged: ring.logged,
        dropped: DROPPED.load(Ordering::Relaxed),
    }
}
