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
//! 2. when it ends: a histogram bucket (below), `sum_ns`, then `completed`
//!    (`Release`), then `errors` (`Release`) if the call failed; or instead
//!    `cancelled` / `panicked` (`Release`). The bucket: an exclusive writer
//!    counts the bucket of its *previous* call, whose nanoseconds it kept in
//!    `pending`, and then stores this call's in `pending`, so that the
//!    address of the store it makes never waits for this call's clock
//!    reading (a store whose address comes from `rdtsc` held the next call
//!    back for about 5 ns); the shared slot's writers count their own call's
//!    bucket. The first time a bucket's group is reached, its bit in
//!    `touched`, then where the group's counts live (for an exclusive
//!    writer, the group's pool entry, whose tag is stored with `Release`;
//!    for the shared slot's writers the overflow array, installed with a
//!    compare-exchange), precede the count. A writer of the shared slot that
//!    finds the bit set by another uses it as it is: a reader that acquires
//!    this writer's `completed` cannot then read an older `touched`.
//!
//! Storage. Most call sites see latencies in a few octaves, so a shard keeps
//! the counts of [`POOL`] groups of buckets in place, direct-mapped: group
//! `g` may hold pool entry `g % POOL`, whose tag (`g + 1`) says it does, so
//! that any [`POOL`] consecutive groups (four octaves) all fit and a call
//! finds its counter without first loading where it is. A group is one
//! cache line of counts, so a reader loads only the lines calls reached:
//! the few a site's usual latencies span, and one per rare slow call. A
//! group whose entry another holds, and every group of the shared slot
//! (whose writers race), counts in an overflow array of every bucket,
//! allocated the first time it is needed. A shard is then 1,152 bytes
//! rather than the 9.5 KiB of a full histogram, and what a reader folds
//! sits on a few adjacent cache lines.
//!
//! Readers ([`Shard::read`], over all shards of a site in
//! [`crate::core::site::Site::read_with`]) load in the reverse order, each group with
//! `Acquire`: `errors`, then `completed`, `cancelled`, `panicked`, then the
//! histogram and sums, then `started`; the histogram is read through
//! `touched`, only the groups whose bit is set, so a reader does not scan
//! buckets no call ever reached (a group whose bit it sees before the
//! group's place is skipped: no call counted in `completed` is in it yet),
//! after loading `completed` again (`Acquire`): the buckets then hold at least
//! every call but the last of those, and when they hold exactly that many, the
//! reader adds `pending`, read after them (the call missing from them, or a
//! later one that replaced it: never one the buckets already counted).
//! Each `Acquire` load that sees a writer's `Release` store also sees
//! everything that writer did before it, so a concurrent read, although it
//! is not a single instant's cut, always satisfies
//! `errors <= calls <= histogram count` and
//! `calls + cancelled + panicked <= started`; once the writers have finished
//! (joined), a read is exact. The loom models in `src/loom.rs` check both.
//!
//! The collector's folds remember ([`ShardMemo`]): a shard whose `completed`
//! and `pending` have stood still for a whole interval has its histogram
//! kept, and a rollup does not load its groups again until either moves;
//! when every shard of a site recalls, the site keeps its whole histogram
//! too ([`crate::core::site::SiteMemo`]).

use crate::core::figures::site_counters;
use crate::core::histogram::{BUCKETS, Dense, Histogram, bucket_index};
use crate::core::sync::{AtomicU8, AtomicU64, OnceBox, Ordering};

/// Buckets in a shard's group: one cache line of counts, so that a reader
/// loads only the lines calls have reached.
const SPAN: usize = 8;
/// Buckets held by a shard; a loom model uses a handful to stay tractable.
#[cfg(not(loom))]
const SHARD_BUCKETS: usize = BUCKETS;
#[cfg(loom)]
const SHARD_BUCKETS: usize = 8 * SPAN;
/// Groups of buckets.
const GROUPS: usize = SHARD_BUCKETS.div_ceil(SPAN);
/// Words of the `touched` bitmap: one bit per group of buckets.
const TOUCHED_WORDS: usize = GROUPS.div_ceil(64);
/// Groups whose counts a shard holds in place; a loom model uses one, so
/// that a second group goes to the overflow array.
#[cfg(not(loom))]
pub(crate) const POOL: usize = 16;
#[cfg(loom)]
pub(crate) const POOL: usize = 1;
/// A pool entry's tag while no group holds it (else the group + 1).
const FREE: u8 = 0;
const _: () = assert!(GROUPS < u8::MAX as usize && GROUPS <= 64 * TOUCHED_WORDS);
// A shard group lies within one group of the folded histogram.
const _: () = assert!(crate::core::histogram::GROUP.is_multiple_of(SPAN));

/// Every bucket, for the groups a shard's pool does not hold.
/// Aligned so that each group of [`SPAN`] buckets is one cache line.
#[repr(C, align(64))]
struct Overflow([AtomicU64; SHARD_BUCKETS]);

/// Counters for one (call site, slot) pair, on cache lines of its own.
#[repr(C, align(128))]
pub(crate) struct Shard {
    // First line: what calls write.
    started: AtomicU64,
    completed: AtomicU64,
    errors: AtomicU64,
    polls: AtomicU64,
    busy_ns: AtomicU64,
    sum_ns: AtomicU64,
    /// An exclusive writer's last completed call, not yet in its bucket:
    /// its nanoseconds + 1 (saturating), or 0 before the first call.
    pending: AtomicU64,
    // Second line: written rarely, so a reader's copy stays valid.
    cancelled: AtomicU64,
    panicked: AtomicU64,
    /// Bit `g` set: some call landed in bucket group `g`.
    touched: [AtomicU64; TOUCHED_WORDS],
    /// Which group holds pool entry `e`: [`FREE`], or the group + 1.
    tags: [AtomicU8; POOL],
    /// The overflow array, empty until a group needs it.
    overflow: OnceBox<Overflow>,
    pool: [PoolEntry; POOL],
}

/// One group's counts in a shard's pool, on a cache line of its own.
#[repr(C, align(64))]
struct PoolEntry([AtomicU64; SPAN]);

// Counters, then bitmap, tags and overflow pointer, then the pool entries,
// each on cache lines of its own.
#[cfg(not(loom))]
const _: () = assert!(std::mem::size_of::<Shard>() == 128 + POOL * 64);

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
            // SAFETY: `Shard` is only atomic integers (zero), padding and a
            // `OnceBox`, whose all-zero bytes are an empty cell.
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
                tags: std::array::from_fn(|_| AtomicU8::new(FREE)),
                overflow: OnceBox::new(),
                pending: AtomicU64::new(0),
                pool: std::array::from_fn(|_| {
                    PoolEntry(std::array::from_fn(|_| AtomicU64::new(0)))
                }),
            })
        }
    }

    #[inline(always)]
    pub(crate) fn record_start(&self, exclusive: bool) {
        count(&self.started, exclusive, Ordering::Relaxed);
    }

    #[inline(always)]
    pub(crate) fn record_end(&self, elapsed_ns: u64, error: bool, exclusive: bool) {
        if exclusive {
            // The previous call's bucket: its address is known long before
            // this call's clock reading, which the CPU then need not wait
            // for before it can place the store.
            let pending = self.pending.load(Ordering::Relaxed);
            if pending != 0 {
                self.count_in_bucket(pending - 1, true);
            }
            self.pending
                .store(elapsed_ns.saturating_add(1), Ordering::Relaxed);
        } else {
            self.count_in_bucket(elapsed_ns, false);
        }
        add_ns(&self.sum_ns, elapsed_ns, exclusive);
        count(&self.completed, exclusive, Ordering::Release);
        if error {
            count(&self.errors, exclusive, Ordering::Release);
        }
    }

    #[inline(always)]
    fn count_in_bucket(&self, elapsed_ns: u64, exclusive: bool) {
        count(
            self.bucket(bucket_of(elapsed_ns), exclusive),
            exclusive,
            Ordering::Relaxed,
        );
    }

    /// Asks the CPU to fetch what a fold of the shard at `shard` (possibly
    /// null) reads first: the counters, the bitmap and tags.
    pub(crate) fn prefetch(shard: *const Shard) {
        if shard.is_null() {
            return;
        }
        let base = shard.cast::<u8>();
        for offset in [0, 64] {
            crate::core::site::prefetch(base.wrapping_add(offset));
        }
    }

    /// Asks the CPU to fetch the pool entries of the groups calls reached,
    /// as the bitmap and tags (fetched earlier by [`Shard::prefetch`]) say.
    pub(crate) fn prefetch_groups(&self) {
        for group in self.touched_groups() {
            if let Some(entry) = self.pooled(group, Ordering::Relaxed) {
                crate::core::site::prefetch(std::ptr::from_ref(entry).cast());
            }
        }
    }

    /// The groups whose bit is set in `touched`, in order.
    fn touched_groups(&self) -> impl Iterator<Item = usize> + '_ {
        self.touched
            .iter()
            .enumerate()
            .flat_map(|(word_index, word)| {
                let mut groups = word.load(Ordering::Relaxed);
                std::iter::from_fn(move || {
                    if groups == 0 {
                        return None;
                    }
                    let group = word_index * 64 + groups.trailing_zeros() as usize;
                    groups &= groups - 1;
                    Some(group)
                })
            })
    }

    /// The pool entry that holds `group`'s counts, if one does; `order`
    /// for loading its tag.
    #[inline(always)]
    fn pooled(&self, group: usize, order: Ordering) -> Option<&PoolEntry> {
        let entry = group % POOL;
        (self.tags[entry].load(order) == tag(group)).then(|| &self.pool[entry])
    }

    /// The counter of bucket `index`: in its group's pool entry, a load and
    /// a compare of the entry's tag, off the path to the counter.
    #[inline(always)]
    fn bucket(&self, index: usize, exclusive: bool) -> &AtomicU64 {
        let group = index / SPAN;
        if let Some(entry) = self.pooled(group, Ordering::Relaxed) {
            return &entry.0[index % SPAN];
        }
        self.place(group, index, exclusive)
    }

    /// The counter of bucket `index` whose group does not hold its pool
    /// entry: the group takes the entry if it is free and the writer
    /// exclusive, else counts in the overflow array; either way its bit in
    /// `touched` is set first.
    #[cold]
    #[inline(never)]
    fn place(&self, group: usize, index: usize, exclusive: bool) -> &AtomicU64 {
        let word = &self.touched[group / 64];
        let bit = 1u64 << (group % 64);
        if word.load(Ordering::Relaxed) & bit == 0 {
            word.fetch_or(bit, Ordering::Relaxed);
        }
        let entry = group % POOL;
        if exclusive && self.tags[entry].load(Ordering::Relaxed) == FREE {
            self.tags[entry].store(tag(group), Ordering::Release);
            return &self.pool[entry].0[index % SPAN];
        }
        &self.overflow_or_allocate().0[index]
    }

    /// The overflow array, allocated and installed if it is not yet.
    fn overflow_or_allocate(&self) -> &Overflow {
        self.overflow.get_or_install(zeroed_overflow)
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

macro_rules! totals {
    ($($field:ident: $family:literal, $scale:literal, $help:literal;)*) => {
        /// Figures folded from a site's shards; see [`crate::SiteStats`] for
        /// their meaning.
        #[derive(Clone, Debug, Default)]
        pub(crate) struct Totals {
            pub(crate) started: u64,
            $(pub(crate) $field: u64,)*
            pub(crate) histogram: Histogram,
        }
    };
}

site_counters!(totals! {});

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

/// What a fold remembers of one shard from one rollup to the next, so that
/// the histogram of a shard that has been idle is not read again.
///
/// The writer changes `pending` or `completed` with every count it makes
/// (an exclusive writer's bucket store is followed by its `pending` store,
/// then `completed`; a shared-slot writer's by `completed`). When two folds
/// in a row see both unchanged, and `pending` did not move during the
/// second one's read either, that read raced no counting of the calls up to
/// `completed` (a fold racing one could place the last of them in the next
/// call's bucket), and it is kept: later folds that find the same
/// `completed` and `pending` add the kept buckets instead of loading the
/// shard's groups. Any move of either, and the shard is read again. A shard
/// that records all the time costs a fold only the comparison.
#[derive(Debug, Default)]
pub(crate) enum ShardMemo {
    /// No fold has read the shard yet.
    #[default]
    Unseen,
    /// What the last fold saw.
    Seen(Key),
    /// What the last two folds saw, and the non-empty buckets
    /// `(index, count)` the second one read.
    Kept(Key, Box<[(u32, u64)]>),
}

/// The part of a shard's state that moves whenever its histogram does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Key {
    completed: u64,
    pending: u64,
}

impl ShardMemo {
    /// Whether a fold would take `shard`'s histogram from here, `completed`
    /// loaded with `order` (`Relaxed` for a hint, as to prefetch; `Acquire`
    /// where a fold's latency phase would load it).
    pub(crate) fn recalls(&self, shard: &Shard, order: Ordering) -> bool {
        matches!(self, ShardMemo::Kept(key, _) if *key == Key {
            completed: shard.completed.load(order),
            pending: shard.pending.load(Ordering::Relaxed),
        })
    }

    /// Adds `shard`'s histogram of the calls up to `completed` (read with
    /// `Acquire`) into `latency`: the kept buckets, if the shard has not
    /// moved since they were read (then returns true), else the shard's own.
    fn fold(&mut self, shard: &Shard, completed: u64, latency: &mut Dense) -> bool {
        let key = Key {
            completed,
            pending: shard.pending.load(Ordering::Relaxed),
        };
        match self {
            ShardMemo::Kept(kept, buckets) if *kept == key => {
                for &(index, count) in buckets.iter() {
                    latency.add_bucket(index as usize, count);
                }
                true
            }
            ShardMemo::Seen(seen) if *seen == key => {
                let mut buckets = Vec::new();
                let pending = shard.read_buckets(completed, latency, Some(&mut buckets));
                *self = if pending == key.pending {
                    ShardMemo::Kept(key, buckets.into_boxed_slice())
                } else {
                    ShardMemo::Seen(Key { completed, pending })
                };
                false
            }
            _ => {
                let pending = shard.read_buckets(completed, latency, None);
                *self = ShardMemo::Seen(Key { completed, pending });
                false
            }
        }
    }
}

impl Shard {
    /// Adds this shard's counters of one read phase into `totals`, and its
    /// latency histogram into `latency`; with `memo`, a histogram that has
    /// not changed since that fold is added from there instead of read.
    /// Returns whether it was (only ever in the latency phase).
    pub(crate) fn read(
        &self,
        phase: ReadPhase,
        totals: &mut Totals,
        latency: &mut Dense,
        memo: Option<&mut ShardMemo>,
    ) -> bool {
        let acquire = |c: &AtomicU64| c.load(Ordering::Acquire);
        let relaxed = |c: &AtomicU64| c.load(Ordering::Relaxed);
        match phase {
            ReadPhase::Errors => {
                totals.errors = totals.errors.saturating_add(acquire(&self.errors))
            }
            ReadPhase::Ends => {
                totals.calls = totals.calls.saturating_add(acquire(&self.completed));
                totals.cancelled = totals.cancelled.saturating_add(acquire(&self.cancelled));
                totals.panicked = totals.panicked.saturating_add(acquire(&self.panicked));
            }
            ReadPhase::Latency => {
                // Calls this shard had completed: every one but the last is
                // in a bucket, that last one perhaps still pending.
                let completed = acquire(&self.completed);
                let recalled = match memo {
                    None => {
                        self.read_buckets(completed, latency, None);
                        false
                    }
                    Some(memo) => memo.fold(self, completed, latency),
                };
                self.read_latency_sums(totals, latency);
                return recalled;
            }
            ReadPhase::Starts => {
                totals.started = totals.started.saturating_add(relaxed(&self.started))
            }
        }
        false
    }

    /// The latency phase's sums: of latencies, polls and poll time.
    pub(crate) fn read_latency_sums(&self, totals: &mut Totals, latency: &mut Dense) {
        let relaxed = |c: &AtomicU64| c.load(Ordering::Relaxed);
        latency.add_sum(relaxed(&self.sum_ns));
        totals.polls = totals.polls.saturating_add(relaxed(&self.polls));
        totals.busy_ns = totals.busy_ns.saturating_add(relaxed(&self.busy_ns));
    }

    /// Adds the buckets of the calls up to `completed` (read before, with
    /// `Acquire`) into `latency`, and into `kept` if given; returns the
    /// `pending` it read.
    fn read_buckets(
        &self,
        completed: u64,
        latency: &mut Dense,
        mut kept: Option<&mut Vec<(u32, u64)>>,
    ) -> u64 {
        let mut in_buckets = 0u64;
        for group in self.touched_groups() {
            let buckets: &[AtomicU64] = if let Some(entry) = self.pooled(group, Ordering::Acquire) {
                &entry.0
            } else {
                let Some(overflow) = self.overflow.get() else {
                    // The bit is visible before the group's place: no call
                    // this read counts is in it.
                    continue;
                };
                &overflow.0[group * SPAN..(group * SPAN + SPAN).min(SHARD_BUCKETS)]
            };
            let mut counts = [0u64; SPAN];
            for (count, bucket) in counts.iter_mut().zip(buckets) {
                *count = bucket.load(Ordering::Relaxed);
                in_buckets = in_buckets.saturating_add(*count);
            }
            latency.add_run(group * SPAN, &counts);
            if let Some(kept) = kept.as_deref_mut() {
                let nonzero = (group * SPAN..).zip(counts).filter(|&(_, c)| c != 0);
                kept.extend(nonzero.map(|(index, c)| (index as u32, c)));
            }
        }
        // Read after the buckets: a later call than the one missing from
        // them, or that one; never one already counted (the buckets hold
        // exactly `completed - 1` calls when read so).
        let pending = self.pending.load(Ordering::Relaxed);
        if pending != 0 && in_buckets < completed {
            let index = bucket_of(pending - 1);
            latency.add_bucket(index, 1);
            if let Some(kept) = kept {
                kept.push((index as u32, 1));
            }
        }
        pending
    }
}

/// The shard bucket that counts `elapsed_ns`.
#[inline(always)]
fn bucket_of(elapsed_ns: u64) -> usize {
    bucket_index(elapsed_ns).min(SHARD_BUCKETS - 1)
}

/// The tag of a pool entry that group `group` holds.
#[inline(always)]
fn tag(group: usize) -> u8 {
    group as u8 + 1
}

/// A zeroed overflow array on the heap.
fn zeroed_overflow() -> Box<Overflow> {
    #[cfg(not(loom))]
    {
        // SAFETY: an array of `AtomicU64`, for which all-zero is valid (zero).
        unsafe { Box::<Overflow>::new_zeroed().assume_init() }
    }
    #[cfg(loom)]
    {
        Box::new(Overflow(std::array::from_fn(|_| AtomicU64::new(0))))
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use crate::core::histogram::bucket_bounds;

    /// Every read phase of `shard`, in order, as a site's fold runs them.
    fn fold(shard: &Shard) -> Totals {
        fold_remembering(shard, None)
    }

    fn fold_remembering(shard: &Shard, mut memo: Option<&mut ShardMemo>) -> Totals {
        let mut totals = Totals::default();
        let mut latency = Dense::new();
        for phase in READ_PHASES {
            shard.read(phase, &mut totals, &mut latency, memo.as_deref_mut());
        }
        totals.histogram = latency.take();
        totals
    }

    #[test]
    fn a_remembered_histogram_is_the_one_a_full_read_finds() {
        for exclusive in [true, false] {
            let shard = Shard::boxed();
            let mut memo = ShardMemo::default();
            let record = |values: &[u64]| {
                for &value in values {
                    shard.record_start(exclusive);
                    shard.record_end(value, false, exclusive);
                }
            };
            // Groups in the pool and beyond it; then idle for two folds (the
            // second recalls), then more calls, then idle again.
            record(&[5, 5_000, 1 << 20, 1 << 30, 1 << 40, 5]);
            for expect_recall in [false, false, true] {
                assert_eq!(memo.recalls(&shard, Ordering::Relaxed), expect_recall);
                let recalled = fold_remembering(&shard, Some(&mut memo));
                assert_eq!(recalled.histogram, fold(&shard).histogram);
                assert_eq!(recalled.histogram.count(), 6, "exclusive: {exclusive}");
            }
            record(&[7, 1 << 35]);
            assert!(
                !memo.recalls(&shard, Ordering::Relaxed),
                "a call completed since"
            );
            for _ in 0..3 {
                let recalled = fold_remembering(&shard, Some(&mut memo));
                assert_eq!(recalled.histogram, fold(&shard).histogram);
                assert_eq!(recalled.histogram.count(), 8, "exclusive: {exclusive}");
                assert_eq!(recalled.calls, 8);
            }
            assert!(memo.recalls(&shard, Ordering::Relaxed));
            // A recall does not read the shard: a count that appeared
            // without `completed` or `pending` moving is not seen.
            let before = fold(&shard).histogram;
            shard.count_in_bucket(5, exclusive);
            let recalled = fold_remembering(&shard, Some(&mut memo));
            assert_eq!(recalled.histogram, before, "exclusive: {exclusive}");
            assert_ne!(fold(&shard).histogram, before, "exclusive: {exclusive}");
        }
    }

    #[test]
    fn a_shard_whose_pending_moved_is_read_again_before_it_is_kept() {
        let shard = Shard::boxed();
        let mut memo = ShardMemo::default();
        for value in [100, 5_000] {
            shard.record_start(true);
            shard.record_end(value, false, true);
        }
        fold_remembering(&shard, Some(&mut memo));
        // A writer stopped inside its third call's end, as a fold might
        // meet it: the second call counted in its bucket, the third
        // pending, `completed` not yet stored.
        shard.count_in_bucket(5_000, true);
        shard.pending.store(1_000_000 + 1, Ordering::Relaxed);
        fold_remembering(&shard, Some(&mut memo));
        assert!(
            !memo.recalls(&shard, Ordering::Relaxed),
            "pending moved since the last fold"
        );
        for _ in 0..3 {
            let totals = fold_remembering(&shard, Some(&mut memo));
            assert_eq!(totals.calls, 2);
            let mut expected = Histogram::new();
            expected.record(100);
            expected.record(5_000);
            assert_eq!(
                totals.histogram.buckets().collect::<Vec<_>>(),
                expected.buckets().collect::<Vec<_>>(),
                "the calls up to `completed`, each in its own bucket"
            );
        }
        assert!(memo.recalls(&shard, Ordering::Relaxed));
    }

    #[test]
    fn every_group_is_counted_in_the_pool_or_the_overflow_array() {
        for exclusive in [true, false] {
            let shard = Shard::boxed();
            let mut expected = Histogram::new();
            // Two values in every group, the slowest groups first: the pool
            // fills with those, the rest overflow.
            for round in 0..2 {
                for group in (0..GROUPS).rev() {
                    let (value, _) = bucket_bounds(group * SPAN + round * 7);
                    shard.record_start(exclusive);
                    shard.record_end(value, round == 1, exclusive);
                    expected.record(value);
                }
            }
            let totals = fold(&shard);
            assert_eq!(totals.histogram, expected, "exclusive: {exclusive}");
            assert_eq!(
                (totals.started, totals.calls, totals.errors),
                (2 * GROUPS as u64, 2 * GROUPS as u64, GROUPS as u64)
            );
            let pooled = shard
                .tags
                .iter()
                .filter(|t| t.load(Ordering::Relaxed) != FREE)
                .count();
            assert_eq!(pooled, if exclusive { POOL } else { 0 });
            assert!(shard.overflow.get().is_some());
        }
    }

    #[test]
    fn a_narrow_site_needs_no_overflow_array() {
        let shard = Shard::boxed();
        for value in 1_000..1_200 {
            shard.record_start(true);
            shard.record_end(value, false, true);
        }
        assert!(shard.overflow.get().is_none());
        let totals = fold(&shard);
        assert_eq!(totals.histogram.count(), 200);
        assert_eq!(totals.histogram.sum(), (1_000..1_200).sum::<u64>());
    }
}
