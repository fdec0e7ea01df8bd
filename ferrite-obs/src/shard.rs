//! One thread's always-on counters for one call site.
//!
//! Protocol. A shard of an exclusive slot has a single writer, the thread that
//! owns the slot, which updates each counter with a plain load and store (no
//! `lock` prefix); the shared slot's shard is updated with `fetch_add`. Readers
//! load every counter without stopping writers.
//!
//! Writers publish in this order, the last store of each group with `Release`:
//!
//! 1. `started` when a call begins;
//! 2. when it ends: the bucket's group bit in `touched` (set once, the first
//!    time a call lands in that group), the histogram bucket and `sum_ns`,
//!    then `completed` (`Release`), then `errors` (`Release`) if the call
//!    failed; or instead `cancelled` / `panicked` (`Release`).
//!
//! Readers ([`Shard::read`], over all shards of a site in
//! [`crate::site::Site::read`]) load in the reverse order, each group with
//! `Acquire`: `errors`, then `completed`, `cancelled`, `panicked`, then the
//! histogram and sums, then `started`; the histogram is read through
//! `touched`, only the groups whose bit is set, so a reader does not scan
//! buckets no call ever reached. Each `Acquire` load that sees a
//! writer's `Release` store also sees everything that writer did before it,
//! so a concurrent read, although it is not a single instant's cut, always
//! satisfies `errors <= calls <= histogram count` and
//! `calls + cancelled + panicked <= started`; once the writers have finished
//! (joined), a read is exact. The loom models in `src/loom.rs` check both.

use crate::histogram::{BUCKETS, GROUP, Histogram, bucket_index};
use crate::sync::{AtomicU64, Ordering};

/// Buckets held by a shard; a loom model uses a handful to stay tractable.
#[cfg(not(loom))]
const SHARD_BUCKETS: usize = BUCKETS;
#[cfg(loom)]
const SHARD_BUCKETS: usize = 4;
/// Words of the `touched` bitmap: one bit per group of buckets.
const TOUCHED_WORDS: usize = SHARD_BUCKETS.div_ceil(GROUP).div_ceil(64);

/// Counters for one (call site, slot) pair, on cache lines of its own.
#[repr(C, align(128))]
pub(crate) struct Shard {
    started: AtomicU64,
    completed: AtomicU64,
    errors: AtomicU64,
    cancelled: AtomicU64,
    panicked: AtomicU64,
    polls: AtomicU64,
    busy_ns: AtomicU64,
    sum_ns: AtomicU64,
    /// Bit `g` set: some call landed in bucket group `g`.
    touched: [AtomicU64; TOUCHED_WORDS],
    buckets: [AtomicU64; SHARD_BUCKETS],
}

impl std::fmt::Debug for Shard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shard").finish_non_exhaustive()
    }
}

/// Counts one event: a plain load and store when the caller is the only
/// writer, an atomic add otherwise. Event counts grow by one per call and
/// cannot reach 2^64.
#[inline(always)]
fn count(counter: &AtomicU64, exclusive: bool, order: Ordering) {
    if exclusive {
        counter.store(counter.load(Ordering::Relaxed).wrapping_add(1), order);
    } else {
        counter.fetch_add(1, order);
    }
}

/// Adds nanoseconds to a sum, saturating: many concurrent futures on one
/// thread accumulate time faster than the clock runs.
#[inline(always)]
fn add_ns(sum: &AtomicU64, ns: u64, exclusive: bool) {
    if exclusive {
        sum.store(
            sum.load(Ordering::Relaxed).saturating_add(ns),
            Ordering::Relaxed,
        );
    } else {
        // A shared-slot sum wraps only after centuries of accumulated time.
        sum.fetch_add(ns, Ordering::Relaxed);
    }
}

impl Shard {
    /// A zeroed shard on the heap.
    pub(crate) fn boxed() -> Box<Shard> {
        #[cfg(not(loom))]
        {
            // SAFETY: `Shard` is only `AtomicU64`s (and padding), for which the
            // all-zero bit pattern is a valid value (zero).
            unsafe { Box::<Shard>::new_zeroed().assume_init() }
        }
        #[cfg(loom)]
        {
            Box::new(Shard {
                started: AtomicU64::new(0),
                completed: AtomicU64::new(0),
                errors: AtomicU64::new(0),
                cancelled: AtomicU64::new(0),
                panicked: AtomicU64::new(0),
                polls: AtomicU64::new(0),
                busy_ns: AtomicU64::new(0),
                sum_ns: AtomicU64::new(0),
                touched: std::array::from_fn(|_| AtomicU64::new(0)),
                buckets: std::array::from_fn(|_| AtomicU64::new(0)),
            })
        }
    }

    #[inline(always)]
    pub(crate) fn record_start(&self, exclusive: bool) {
        count(&self.started, exclusive, Ordering::Relaxed);
    }

    #[inline(always)]
    pub(crate) fn record_end(&self, elapsed_ns: u64, error: bool, exclusive: bool) {
        let index = bucket_index(elapsed_ns).min(SHARD_BUCKETS - 1);
        self.touch(index, exclusive);
        count(&self.buckets[index], exclusive, Ordering::Relaxed);
        add_ns(&self.sum_ns, elapsed_ns, exclusive);
        count(&self.completed, exclusive, Ordering::Release);
        if error {
            count(&self.errors, exclusive, Ordering::Release);
        }
    }

    /// Marks the group of bucket `index` as touched: a load and a branch,
    /// and a store only the first time.
    #[inline(always)]
    fn touch(&self, index: usize, exclusive: bool) {
        let group = index / GROUP;
        let word = &self.touched[group / 64];
        let bit = 1u64 << (group % 64);
        let seen = word.load(Ordering::Relaxed);
        if seen & bit == 0 {
            if exclusive {
                word.store(seen | bit, Ordering::Relaxed);
            } else {
                word.fetch_or(bit, Ordering::Relaxed);
            }
        }
    }

    #[inline(always)]
    pub(crate) fn record_poll(&self, busy_ns: u64, exclusive: bool) {
        count(&self.polls, exclusive, Ordering::Relaxed);
        add_ns(&self.busy_ns, busy_ns, exclusive);
    }

    pub(crate) fn record_abandoned(&self, panicked: bool, exclusive: bool) {
        let counter = if panicked {
            &self.panicked
        } else {
            &self.cancelled
        };
        count(counter, exclusive, Ordering::Release);
    }
}

/// Figures folded from a site's shards; see [`crate::SiteStats`] for meaning.
#[derive(Clone, Debug, Default)]
pub(crate) struct Totals {
    pub(crate) started: u64,
    pub(crate) completed: u64,
    pub(crate) errors: u64,
    pub(crate) cancelled: u64,
    pub(crate) panicked: u64,
    pub(crate) polls: u64,
    pub(crate) busy_ns: u64,
    pub(crate) histogram: Histogram,
}

/// The read phases, in the order the protocol above requires.
pub(crate) const READ_PHASES: [ReadPhase; 4] = [
    ReadPhase::Errors,
    ReadPhase::Ends,
    ReadPhase::Latency,
    ReadPhase::Starts,
];

#[derive(Clone, Copy, Debug)]
pub(crate) enum ReadPhase {
    Errors,
    Ends,
    Latency,
    Starts,
}

impl Shard {
    /// Adds this shard's counters of one read phase into `totals`.
    pub(crate) fn read(&self, phase: ReadPhase, totals: &mut Totals) {
        let acquire = |c: &AtomicU64| c.load(Ordering::Acquire);
        let relaxed = |c: &AtomicU64| c.load(Ordering::Relaxed);
        match phase {
            ReadPhase::Errors => {
                totals.errors = totals.errors.saturating_add(acquire(&self.errors))
            }
            ReadPhase::Ends => {
                totals.completed = totals.completed.saturating_add(acquire(&self.completed));
                totals.cancelled = totals.cancelled.saturating_add(acquire(&self.cancelled));
                totals.panicked = totals.panicked.saturating_add(acquire(&self.panicked));
            }
            ReadPhase::Latency => {
                for (word_index, word) in self.touched.iter().enumerate() {
                    let mut groups = relaxed(word);
                    while groups != 0 {
                        let group = word_index * 64 + groups.trailing_zeros() as usize;
                        groups &= groups - 1;
                        let first = group * GROUP;
                        let last = (first + GROUP).min(SHARD_BUCKETS);
                        let mut counts = [0u64; GROUP];
                        for (count, bucket) in counts.iter_mut().zip(&self.buckets[first..last]) {
                            *count = relaxed(bucket);
                        }
                        totals.histogram.add_group(group, &counts);
                    }
                }
                totals.histogram.add_sum(relaxed(&self.sum_ns));
                totals.polls = totals.polls.saturating_add(relaxed(&self.polls));
                totals.busy_ns = totals.busy_ns.saturating_add(relaxed(&self.busy_ns));
            }
            ReadPhase::Starts => {
                totals.started = totals.started.saturating_add(relaxed(&self.started))
            }
        }
    }
}
