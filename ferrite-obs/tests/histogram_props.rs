//! Properties of the latency histogram: bucket bounds, merge laws, quantile
//! error, and saturation instead of overflow.

use ferrite_obs::histogram::{
    BUCKETS, Histogram, MAX_RELATIVE_ERROR, MAX_TRACKED, bucket_bounds, bucket_index,
};
use proptest::prelude::*;

/// Latencies from 0 ns to beyond the tracked range, spread over magnitudes.
fn latency() -> impl Strategy<Value = u64> {
    prop_oneof![
        0u64..64,
        64u64..1_000_000,
        (0u32..42).prop_flat_map(|e| (1u64 << e)..=(1u64 << (e + 1))),
        Just(MAX_TRACKED),
        (MAX_TRACKED..u64::MAX),
    ]
}

/// Latencies within the tracked range (up to about 73 minutes).
fn tracked() -> impl Strategy<Value = u64> {
    latency().prop_filter("within the tracked range", |v| *v <= MAX_TRACKED)
}

fn histogram_of(values: &[u64]) -> Histogram {
    let mut h = Histogram::new();
    for &v in values {
        h.record(v);
    }
    h
}

proptest! {
    #[test]
    fn every_value_lies_within_its_bucket(v in latency()) {
        let index = bucket_index(v);
        prop_assert!(index < BUCKETS);
        let (low, high) = bucket_bounds(index);
        if v <= MAX_TRACKED {
            prop_assert!(low <= v && v <= high, "{v} outside [{low}, {high}]");
            // A bucket is at most 1/32 of its lower bound wide.
            prop_assert!((high - low) as f64 <= low as f64 * 2.0 * MAX_RELATIVE_ERROR);
        } else {
            prop_assert_eq!(index, BUCKETS - 1, "values past the range saturate into the last bucket");
        }
    }

    #[test]
    fn merge_is_commutative_and_associative(
        a in prop::collection::vec(latency(), 0..50),
        b in prop::collection::vec(latency(), 0..50),
        c in prop::collection::vec(latency(), 0..50),
    ) {
        let (ha, hb, hc) = (histogram_of(&a), histogram_of(&b), histogram_of(&c));
        let mut ab = ha.clone();
        ab.merge(&hb);
        let mut ba = hb.clone();
        ba.merge(&ha);
        prop_assert_eq!(&ab, &ba);

        let mut ab_c = ab.clone();
        ab_c.merge(&hc);
        let mut bc = hb.clone();
        bc.merge(&hc);
        let mut a_bc = ha.clone();
        a_bc.merge(&bc);
        prop_assert_eq!(&ab_c, &a_bc);

        // Merging equals recording everything into one histogram.
        let all: Vec<u64> = a.iter().chain(&b).chain(&c).copied().collect();
        prop_assert_eq!(&ab_c, &histogram_of(&all));
    }

    #[test]
    fn quantiles_are_within_the_error_bound(
        mut values in prop::collection::vec(tracked(), 1..300),
        q in 0.0f64..=1.0,
    ) {
        let h = histogram_of(&values);
        values.sort_unstable();
        let rank = ((q * values.len() as f64).ceil() as usize).clamp(1, values.len());
        let exact = values[rank - 1];
        let got = h.quantile(q).unwrap();
        let error = got.abs_diff(exact) as f64;
        prop_assert!(
            error <= exact as f64 * MAX_RELATIVE_ERROR,
            "q{q}: reported {got}, exact {exact}, error {:.4}%",
            100.0 * error / exact.max(1) as f64
        );
        prop_assert_eq!(h.count(), values.len() as u64);
    }

    #[test]
    fn quantiles_in_one_walk_are_each_quantile(
        values in prop::collection::vec(latency(), 0..200),
        qs in prop::array::uniform5(prop_oneof![
            -0.5f64..1.5,
            Just(0.0),
            Just(1.0),
            Just(f64::NAN),
        ]),
    ) {
        let h = histogram_of(&values);
        prop_assert_eq!(h.quantiles(qs), qs.map(|q| h.quantile(q)));
    }

    #[test]
    fn delta_undoes_merge(
        a in prop::collection::vec(tracked(), 0..50),
        b in prop::collection::vec(tracked(), 0..50),
    ) {
        // Within the tracked range sums cannot saturate, so nothing is lost.
        let ha = histogram_of(&a);
        let mut both = ha.clone();
        both.merge(&histogram_of(&b));
        prop_assert_eq!(both.delta(&ha), histogram_of(&b));
    }
}

#[test]
fn counts_and_sums_saturate_instead_of_wrapping() {
    let mut h = Histogram::new();
    h.record_n(u64::MAX, 3);
    h.record_n(1, u64::MAX);
    assert_eq!(h.sum(), u64::MAX, "the sum saturates");
    assert_eq!(h.count(), u64::MAX, "the count saturates");
    let mut merged = h.clone();
    merged.merge(&h);
    assert_eq!(merged.bucket_count(BUCKETS - 1), 6);
    assert_eq!(merged.bucket_count(1), u64::MAX, "a bucket saturates");
    assert_eq!(merged.sum(), u64::MAX);
}
