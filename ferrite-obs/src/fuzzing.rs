//! Checks shared by the fuzz targets (`fuzz/`) and the stable tests that
//! replay their corpora, so both exercise exactly the same property.

use crate::core::histogram::{Histogram, bucket_index};

/// Any input: parsing never panics; a configuration that parses writes back
/// as TOML that reads back the same.
#[cfg(feature = "runtime")]
pub fn config(data: &[u8]) {
    use crate::config::Config;

    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(config) = Config::from_server_toml(text) {
        let written = config.to_toml();
        match Config::from_server_toml(&written) {
            Ok(back) => assert_eq!(back, config, "round trip changed {written}"),
            Err(error) => panic!("{written} does not read back: {error}"),
        }
    }
}

/// Records, merges and deltas in any order: counts add up, quantiles do not
/// decrease with q, and q0 and q1 are the buckets of the smallest and largest
/// values recorded.
pub fn histogram(data: &[u8]) {
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
}
