//! Log-linear latency histograms with a fixed bucket layout.
//!
//! Every value below 64 has a bucket of its own. Above that, each power of two
//! `[2^h, 2^(h+1))` is split into 32 equal buckets, up to `2^42 - 1` ns (about
//! 73 minutes). A bucket's width is at most 1/32 of its lower bound, so the
//! midpoint of the bucket a value falls in is within 1/64 (1.6 %) of the value:
//! every quantile this module reports is within that bound of the exact one,
//! from 1 ns to over an hour, in at most 1,216 counters and never a buffer of
//! samples.
//! Values beyond the range are counted in the last bucket (saturation, not
//! loss) and counts saturate at `u64::MAX` instead of wrapping.
//!
//! [`Histogram`] is the plain, owned form that readers get; the always-on
//! per-thread form lives in the call-site shards and folds into this one.

use std::fmt;

/// Bits of the mantissa kept per power of two: 2^5 = 32 buckets per octave.
const SUB_BITS: u32 = 5;
/// Buckets per octave.
const SUB: u64 = 1 << SUB_BITS;
/// Values below this have exact, width-one buckets.
const LINEAR: u64 = 2 * SUB;
/// The highest octave tracked is `[2^MAX_EXP, 2^(MAX_EXP + 1))`.
const MAX_EXP: u32 = 41;

/// Number of buckets in a histogram.
pub const BUCKETS: usize = ((MAX_EXP - SUB_BITS + 2) as usize) * SUB as usize;

/// The largest value with a bucket of its own; larger values saturate into the
/// last bucket. `2^42 - 1` ns, about 73 minutes.
pub const MAX_TRACKED: u64 = (1 << (MAX_EXP + 1)) - 1;

/// The worst relative error of a reported quantile for values up to
/// [`MAX_TRACKED`]: half the widest bucket relative to its lower bound.
pub const MAX_RELATIVE_ERROR: f64 = 1.0 / (2 * SUB) as f64;

/// Index of the bucket that counts `value`.
#[inline(always)]
pub const fn bucket_index(value: u64) -> usize {
    if value < LINEAR {
        return value as usize;
    }
    if value > MAX_TRACKED {
        return BUCKETS - 1;
    }
    let high = 63 - value.leading_zeros();
    let shift = high - SUB_BITS;
    (((shift as u64) << SUB_BITS) + (value >> shift)) as usize
}

/// The inclusive range `[low, high]` of values counted by bucket `index`.
///
/// The last bucket also counts every value above [`MAX_TRACKED`].
pub const fn bucket_bounds(index: usize) -> (u64, u64) {
    let index = index as u64;
    if index < LINEAR {
        return (index, index);
    }
    let shift = (index >> SUB_BITS) - 1;
    let low = ((index & (SUB - 1)) | SUB) << shift;
    (low, low + (1 << shift) - 1)
}

/// The value reported for a bucket: its midpoint, which is within
/// [`MAX_RELATIVE_ERROR`] of every value the bucket counts.
pub const fn bucket_value(index: usize) -> u64 {
    let (low, high) = bucket_bounds(index);
    low + (high - low).div_ceil(2)
}

/// Buckets per group of the dense form a fold sums into ([`Dense`]).
pub(crate) const GROUP: usize = 16;

/// An owned latency histogram: counts per bucket plus the exact sum.
///
/// Stored sparsely: only the buckets that hold a count, by ascending index,
/// 16 bytes each, so a histogram of calls that all take about the same time
/// (with the odd slow one) is a few hundred bytes, and copying, merging or
/// subtracting it touches only what was recorded. A bucket with no count is
/// never stored, so equal histograms have equal representations.
#[derive(Clone, PartialEq, Eq)]
pub struct Histogram {
    buckets: Vec<Bucket>,
    sum: u64,
}

#[derive(Clone, Copy, PartialEq, Eq)]
struct Bucket {
    index: u32,
    count: u64,
}

impl Histogram {
    /// An empty histogram (allocates nothing).
    pub fn new() -> Self {
        Self {
            buckets: Vec::new(),
            sum: 0,
        }
    }

    /// Counts one occurrence of `value`.
    pub fn record(&mut self, value: u64) {
        self.record_n(value, 1);
    }

    /// Counts `n` occurrences of `value`.
    pub fn record_n(&mut self, value: u64, n: u64) {
        self.add_bucket(bucket_index(value), n);
        self.sum = self.sum.saturating_add(value.saturating_mul(n));
    }

    /// Where bucket `index` is stored, or would be inserted.
    fn find(&self, index: usize) -> Result<usize, usize> {
        self.buckets
            .binary_search_by_key(&index, |b| b.index as usize)
    }

    /// Adds every count of `other` into `self`, saturating.
    pub fn merge(&mut self, other: &Histogram) {
        if other.buckets.is_empty() {
            self.sum = self.sum.saturating_add(other.sum);
            return;
        }
        // Both lists are sorted by bucket: one walk through each.
        let mut merged = Vec::with_capacity(self.buckets.len() + other.buckets.len());
        let mut theirs = other.buckets.iter().peekable();
        for mine in &self.buckets {
            while let Some(t) = theirs.next_if(|t| t.index < mine.index) {
                merged.push(*t);
            }
            let mut bucket = *mine;
            if let Some(t) = theirs.next_if(|t| t.index == mine.index) {
                bucket.count = bucket.count.saturating_add(t.count);
            }
            merged.push(bucket);
        }
        merged.extend(theirs);
        self.buckets = merged;
        self.sum = self.sum.saturating_add(other.sum);
    }

    /// What was recorded since `earlier`, a previous reading of the same
    /// monotonic source: bucket by bucket `self - earlier`, floored at zero.
    pub fn delta(&self, earlier: &Histogram) -> Histogram {
        let sum = self.sum.saturating_sub(earlier.sum);
        if self.buckets == earlier.buckets {
            // Nothing moved (an idle call site): one comparison, no
            // allocation.
            return Histogram {
                buckets: Vec::new(),
                sum,
            };
        }
        let mut buckets = Vec::new();
        // Both lists are sorted by bucket: one walk through each.
        let mut earlier_buckets = earlier.buckets.iter().peekable();
        for now in &self.buckets {
            while earlier_buckets.next_if(|b| b.index < now.index).is_some() {}
            let then = earlier_buckets
                .next_if(|b| b.index == now.index)
                .map_or(0, |b| b.count);
            let count = now.count.saturating_sub(then);
            if count != 0 {
                buckets.push(Bucket {
                    index: now.index,
                    count,
                });
            }
        }
        Histogram { buckets, sum }
    }

    /// The same counts with `sum` as their sum.
    pub(crate) fn with_sum(&self, sum: u64) -> Histogram {
        Histogram {
            buckets: self.buckets.clone(),
            sum,
        }
    }

    /// Number of values recorded.
    pub fn count(&self) -> u64 {
        self.buckets
            .iter()
            .fold(0u64, |a, b| a.saturating_add(b.count))
    }

    /// Exact sum of the values recorded (saturating).
    pub fn sum(&self) -> u64 {
        self.sum
    }

    /// Mean of the values recorded, or `None` when empty.
    pub fn mean(&self) -> Option<f64> {
        let count = self.count();
        (count > 0).then(|| self.sum as f64 / count as f64)
    }

    /// Non-empty buckets by ascending index: `(index, count)`.
    fn counts(&self) -> impl Iterator<Item = (usize, u64)> + '_ {
        self.buckets.iter().map(|b| (b.index as usize, b.count))
    }

    /// The value at quantile `q` (0.0 to 1.0, clamped), within
    /// [`MAX_RELATIVE_ERROR`] of the exact one; `None` when empty.
    ///
    /// The exact quantile is the `ceil(q * count)`-th smallest value (the
    /// smallest for `q = 0`); the answer is the midpoint of its bucket.
    pub fn quantile(&self, q: f64) -> Option<u64> {
        let [value] = self.quantiles([q]);
        value
    }

    /// [`Histogram::quantile`] of each of `qs` (in any order), in one walk
    /// through the buckets.
    pub fn quantiles<const N: usize>(&self, qs: [f64; N]) -> [Option<u64>; N] {
        let count = self.count();
        let mut answers = [None; N];
        if count == 0 {
            return answers;
        }
        let ranks = qs.map(|q| {
            let q = if q.is_nan() { 1.0 } else { q.clamp(0.0, 1.0) };
            ((q * count as f64).ceil() as u64).clamp(1, count)
        });
        // Visit the ranks in ascending order, whatever the order of `qs`.
        let mut order: [usize; N] = std::array::from_fn(|i| i);
        order.sort_unstable_by_key(|&i| ranks[i]);
        let mut next = order.iter().peekable();
        let mut seen = 0u64;
        for (index, c) in self.counts() {
            seen = seen.saturating_add(c);
            while let Some(&&i) = next.peek() {
                if ranks[i] > seen {
                    break;
                }
                answers[i] = Some(bucket_value(index));
                next.next();
            }
            if next.peek().is_none() {
                break;
            }
        }
        answers
    }

    /// The reported value of the smallest recorded value's bucket.
    pub fn min(&self) -> Option<u64> {
        self.quantile(0.0)
    }

    /// The reported value of the largest recorded value's bucket.
    pub fn max(&self) -> Option<u64> {
        self.quantile(1.0)
    }

    /// Count in bucket `index` (see [`bucket_bounds`]).
    pub fn bucket_count(&self, index: usize) -> u64 {
        self.find(index).map_or(0, |at| self.buckets[at].count)
    }

    /// Non-empty buckets in ascending order: `(low, high, count)`, bounds
    /// inclusive.
    pub fn buckets(&self) -> impl Iterator<Item = (u64, u64, u64)> + '_ {
        self.counts().map(|(i, c)| {
            let (low, high) = bucket_bounds(i);
            (low, high, c)
        })
    }

    /// Adds `n` to bucket `index`, saturating.
    fn add_bucket(&mut self, index: usize, n: u64) {
        if n == 0 || index >= BUCKETS {
            return;
        }
        match self.find(index) {
            Ok(at) => {
                let count = &mut self.buckets[at].count;
                *count = count.saturating_add(n);
            }
            Err(at) => self.buckets.insert(
                at,
                Bucket {
                    index: index as u32,
                    count: n,
                },
            ),
        }
    }
}

/// Groups of [`GROUP`] buckets in a histogram.
const GROUPS: usize = BUCKETS.div_ceil(GROUP);

/// A histogram being summed from many parts, with every bucket in place:
/// adding a run of counts is as many additions, rather than a search (and
/// perhaps an insert) per bucket in the sparse form. [`Dense::take`] hands
/// the sum over as a [`Histogram`] and leaves this one empty, touching only
/// the groups that were added to; one `Dense` serves a whole fold.
pub(crate) struct Dense {
    counts: Box<[[u64; GROUP]]>,
    /// Bit `g`: group `g` has been added to since the last `take`.
    used: [u64; GROUPS.div_ceil(64)],
    sum: u64,
}

impl Dense {
    pub(crate) fn new() -> Dense {
        Dense {
            counts: vec![[0; GROUP]; GROUPS].into_boxed_slice(),
            used: [0; GROUPS.div_ceil(64)],
            sum: 0,
        }
    }

    /// Adds `counts[i]` to bucket `first + i`, saturating; `counts` lies
    /// within one group.
    #[inline]
    pub(crate) fn add_run(&mut self, first: usize, counts: &[u64]) {
        let (group, at) = (first / GROUP, first % GROUP);
        let Some(mine) = self.counts.get_mut(group) else {
            return;
        };
        self.used[group / 64] |= 1 << (group % 64);
        for (mine, theirs) in mine[at..].iter_mut().zip(counts) {
            *mine = mine.saturating_add(*theirs);
        }
    }

    /// Adds `n` to bucket `index`, saturating.
    pub(crate) fn add_bucket(&mut self, index: usize, n: u64) {
        self.add_run(index, &[n]);
    }

    pub(crate) fn add_sum(&mut self, sum: u64) {
        self.sum = self.sum.saturating_add(sum);
    }

    /// The histogram summed since the last `take`; this one is empty after.
    pub(crate) fn take(&mut self) -> Histogram {
        let mut buckets = Vec::new();
        for (word_index, word) in self.used.iter_mut().enumerate() {
            let mut bits = std::mem::take(word);
            while bits != 0 {
                let group = word_index * 64 + bits.trailing_zeros() as usize;
                bits &= bits - 1;
                let counts = std::mem::take(&mut self.counts[group]);
                for (at, count) in counts.into_iter().enumerate() {
                    if count != 0 {
                        buckets.push(Bucket {
                            index: (group * GROUP + at) as u32,
                            count,
                        });
                    }
                }
            }
        }
        Histogram {
            buckets,
            sum: std::mem::take(&mut self.sum),
        }
    }
}

impl Default for Histogram {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for Histogram {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Histogram")
            .field("count", &self.count())
            .field("sum", &self.sum)
            .field("p50", &self.quantile(0.5))
            .field("p99", &self.quantile(0.99))
            .field("max", &self.max())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_covers_an_hour_contiguously() {
        assert_eq!(BUCKETS, 1216);
        assert_eq!(BUCKETS % GROUP, 0, "groups tile the buckets");
        const { assert!(MAX_TRACKED >= 3_600_000_000_000, "must reach one hour") };
        let mut next = 0;
        for i in 0..BUCKETS {
            let (low, high) = bucket_bounds(i);
            assert_eq!(
                low,
                next,
                "bucket {i} must start where {} ended",
                i.saturating_sub(1)
            );
            assert!(high >= low);
            assert_eq!(bucket_index(low), i);
            assert_eq!(bucket_index(high), i);
            next = high + 1;
        }
        assert_eq!(next - 1, MAX_TRACKED);
        assert_eq!(bucket_index(u64::MAX), BUCKETS - 1);
    }

    #[test]
    fn small_values_are_exact() {
        let mut h = Histogram::new();
        for v in [0, 1, 7, 63] {
            h.record(v);
        }
        assert_eq!(h.quantile(0.0), Some(0));
        assert_eq!(h.quantile(0.5), Some(1));
        assert_eq!(h.quantile(0.75), Some(7));
        assert_eq!(h.max(), Some(63));
        assert_eq!(h.sum(), 71);
    }

    #[test]
    fn known_sequence_quantiles() {
        let mut h = Histogram::new();
        for v in 1..=1000u64 {
            h.record(v * 1000);
        }
        assert_eq!(h.count(), 1000);
        assert_eq!(h.sum(), 1000 * 500_500);
        for (q, exact) in [(0.5, 500_000.0), (0.9, 900_000.0), (0.99, 990_000.0)] {
            let got = h.quantile(q).unwrap() as f64;
            assert!(
                (got - exact).abs() / exact <= MAX_RELATIVE_ERROR,
                "q{q}: {got} vs {exact}"
            );
        }
    }

    #[test]
    fn empty_histogram_has_no_quantiles() {
        let h = Histogram::new();
        assert_eq!(h.quantile(0.5), None);
        assert_eq!(h.mean(), None);
        assert_eq!(h.buckets().count(), 0);
    }

    #[test]
    fn delta_is_what_was_added_between_readings() {
        let mut then = Histogram::new();
        then.record(10);
        let mut now = then.clone();
        now.record(10);
        now.record(5_000);
        let d = now.delta(&then);
        assert_eq!(d.count(), 2);
        assert_eq!(d.sum(), 5_010);
        assert_eq!(d.bucket_count(bucket_index(5_000)), 1);
        assert_eq!(
            now.delta(&now),
            Histogram::new(),
            "nothing recorded in between is an empty histogram, equal to a new one"
        );
    }
}
