//! The slow-command log: the latest commands (`#[probe(command)]` calls) that
//! took longer than `slow_threshold`, as Redis's SLOWLOG keeps them.
//!
//! A command's end compares its elapsed time with the threshold: one load and
//! a compare, and only at command roots. A slow command never takes a lock:
//! it stages its entry in a lock-free ring of [`STAGED`] entries, which
//! whoever reads the log (every rollup, and [`read`]) moves into the log
//! under its lock. The log is a ring of `slowlog_len` entries; the oldest go
//! first. An entry is lost only when more than [`STAGED`] slow commands end
//! between two reads (counted in [`SlowLog::dropped`]).
//!
//! Protocol of the stage (a bounded multi-producer queue, with one consumer
//! at a time, the holder of the log's lock). Slot `i` carries a sequence
//! number, `i` at first. A producer claims position `p` by advancing `tail`
//! from `p` with a compare-exchange, if slot `p % STAGED` reads `p` (free
//! for this lap; reading less means the stage is full), writes the entry,
//! then publishes it by storing `p + 1` (release). The consumer takes
//! position `head` when its slot reads `head + 1` (acquire: the entry is
//! whole), copies the entry out and frees the slot for the next lap by
//! storing `head + STAGED`.

use std::cell::UnsafeCell;
use std::collections::VecDeque;
use std::mem::MaybeUninit;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use crate::core::sync::OnceBox;

pub use crate::kernel::KernelBreakdown;

/// Commands at least this slow are logged; `u64::MAX` while the runtime is
/// not running.
static THRESHOLD_NS: AtomicU64 = AtomicU64::new(u64::MAX);
/// Slow commands not logged because the stage was full.
static DROPPED: AtomicU64 = AtomicU64::new(0);
static LOG: Mutex<Ring> = Mutex::new(Ring {
    entries: VecDeque::new(),
    capacity: 0,
    logged: 0,
    head: 0,
});
/// Entries staged and not yet moved into the log; allocated at the first
/// slow command, never freed.
static STAGE: OnceBox<Stage> = OnceBox::new();

/// Slow commands that can end between two reads of the log without loss.
pub const STAGED: usize = 4096;

struct Ring {
    entries: VecDeque<SlowEntry>,
    capacity: usize,
    logged: u64,
    /// The stage's next position to take.
    head: u64,
}

struct Stage {
    tail: AtomicU64,
    slots: Box<[Staged]>,
}

struct Staged {
    seq: AtomicU64,
    entry: UnsafeCell<MaybeUninit<SlowEntry>>,
}

// SAFETY: a slot's entry is written only by the producer that claimed its
// position and read only by the consumer after the producer published it
// (see the protocol above); `SlowEntry` is `Send`.
unsafe impl Sync for Stage {}

impl Stage {
    fn new() -> Box<Stage> {
        Box::new(Stage {
            tail: AtomicU64::new(0),
            slots: (0..STAGED as u64)
                .map(|i| Staged {
                    seq: AtomicU64::new(i),
                    entry: UnsafeCell::new(MaybeUninit::uninit()),
                })
                .collect(),
        })
    }

    /// Stages `entry`; false when the stage is full.
    fn push(&self, entry: SlowEntry) -> bool {
        let mut position = self.tail.load(Ordering::Relaxed);
        loop {
            let slot = &self.slots[position as usize % STAGED];
            let seq = slot.seq.load(Ordering::Acquire);
            if seq < position {
                return false;
            }
            if seq > position {
                position = self.tail.load(Ordering::Relaxed);
                continue;
            }
            match self.tail.compare_exchange_weak(
                position,
                position + 1,
                Ordering::Relaxed,
                Ordering::Relaxed,
            ) {
                Ok(_) => {
                    // SAFETY: this producer claimed `position`, so it alone
                    // writes the slot until it publishes it.
                    unsafe { (*slot.entry.get()).write(entry) };
                    slot.seq.store(position + 1, Ordering::Release);
                    return true;
                }
                Err(now) => position = now,
            }
        }
    }

    /// The entry at `head`, if it has been published; frees its slot.
    fn take(&self, head: u64) -> Option<SlowEntry> {
        let slot = &self.slots[head as usize % STAGED];
        if slot.seq.load(Ordering::Acquire) != head + 1 {
            return None;
        }
        // SAFETY: published (the acquire above pairs with the producer's
        // release), and only the consumer, the holder of the log's lock,
        // reads it; `SlowEntry` is `Copy`-like plain data read once.
        let entry = unsafe { (*slot.entry.get()).assume_init_read() };
        slot.seq.store(head + STAGED as u64, Ordering::Release);
        Some(entry)
    }
}

impl Ring {
    /// Moves every published staged entry into the log.
    fn drain(&mut self) {
        let Some(stage) = STAGE.get() else {
            return;
        };
        while let Some(entry) = stage.take(self.head) {
            self.head += 1;
            if self.capacity == 0 {
                continue;
            }
            if self.entries.len() == self.capacity {
                self.entries.pop_front();
            }
            self.entries.push_back(entry);
            self.logged += 1;
        }
    }
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
    /// Slow commands not logged: more than [`STAGED`] ended between two
    /// reads of the log.
    pub dropped: u64,
}

/// Starts logging commands at least `threshold` slow, keeping `capacity`.
#[cfg(feature = "runtime")]
pub(crate) fn configure(threshold: Duration, capacity: usize) {
    let mut ring = LOG.lock().unwrap_or_else(|e| e.into_inner());
    // What an earlier runtime staged is not this one's.
    ring.capacity = 0;
    ring.drain();
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

/// Stops logging, without the lock (in a forked child, where a parent
/// thread may have held it at the instant of the fork).
#[cfg(feature = "runtime")]
pub(crate) fn pause() {
    THRESHOLD_NS.store(u64::MAX, Ordering::Relaxed);
}

/// Whether a command that took `elapsed_ns` is slow.
#[inline(always)]
pub(crate) fn is_slow(elapsed_ns: u64) -> bool {
    elapsed_ns >= THRESHOLD_NS.load(Ordering::Relaxed)
}

/// Logs a slow command, unless the stage is full (counted).
#[cold]
#[inline(never)]
pub(crate) fn log(id: u64, command: &'static str, elapsed_ns: u64, busy_ns: u64, error: bool) {
    let busy = Duration::from_nanos(busy_ns);
    let kernel = crate::kernel::command_breakdown(id, busy);
    let duration = Duration::from_nanos(elapsed_ns);
    let entry = SlowEntry {
        id,
        command,
        started_at: SystemTime::now()
            .checked_sub(duration)
            .unwrap_or(SystemTime::UNIX_EPOCH),
        duration,
        busy,
        error,
        kernel,
    };
    if !STAGE.get_or_install(Stage::new).push(entry) {
        DROPPED.fetch_add(1, Ordering::Relaxed);
    }
}

/// Empties the log (as Redis's `SLOWLOG RESET`); `logged` counts on.
pub fn reset() {
    let mut ring = LOG.lock().unwrap_or_else(|e| e.into_inner());
    ring.drain();
    ring.entries.clear();
}

/// The log now, newest first (as Redis's `SLOWLOG GET`).
pub fn read() -> SlowLog {
    let mut ring = LOG.lock().unwrap_or_else(|e| e.into_inner());
    ring.drain();
    SlowLog {
        entries: ring.entries.iter().rev().cloned().collect(),
        logged: ring.logged,
        dropped: DROPPED.load(Ordering::Relaxed),
    }
}
