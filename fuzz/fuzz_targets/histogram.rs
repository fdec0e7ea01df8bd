//! Arbitrary sequences of records, merges and deltas never panic and keep the
//! histogram's invariants: counts add up, quantiles are monotonic in q and lie
//! within the recorded range's buckets.

#![no_main]

use ferrite_obs::histogram::{Histogram, bucket_index};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut a = Histogram::new();
    let mut b = Histogram::new();
    let mut recorded = 0u64;
    let (mut min, mut max) = (u64::MAX, 0u64);
    let (mut b_min, mut b_max) = (u64::MAX, 0u64);
    for chunk in data.chunks_exact(9) {
        let value = u64::from_le_bytes(chunk[1..9].try_into().unwrap());
        match chunk[0] % 4 {
            0 | 1 => {
                a.record(value);
                recorded += 1;
                min = min.min(value);
                max = max.max(value);
            }
            2 => {
                b.record(value);
                b_min = b_min.min(value);
                b_max = b_max.max(value);
            }
            _ => {
                let before = a.clone();
                a.merge(&b);
                assert_eq!(a.delta(&before).count(), b.count());
                recorded += b.count();
                min = min.min(b_min);
                max = max.max(b_max);
                (b, b_min, b_max) = (Histogram::new(), u64::MAX, 0);
            }
        }
    }
    assert_eq!(a.count(), recorded);
    let quantiles: Vec<u64> = [0.0, 0.25, 0.5, 0.9, 0.99, 1.0]
        .iter()
        .filter_map(|&q| a.quantile(q))
        .collect();
    assert!(
        quantiles.windows(2).all(|w| w[0] <= w[1]),
        "quantiles must not decrease"
    );
    if let (Some(first), Some(last)) = (quantiles.first(), quantiles.last()) {
        assert_eq!(
            bucket_index(*first),
            bucket_index(min),
            "q0 is the smallest value's bucket"
        );
        assert_eq!(
            bucket_index(*last),
            bucket_index(max),
            "q1 is the largest value's bucket"
        );
    }
});
