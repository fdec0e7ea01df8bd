//! What the instrumentation costs the host: the per-call cost of a recorded
//! call, measured on this machine, times the calls made.
//!
//! The measurement times the real recording path (`run` on a site) against
//! the same body called bare, in alternating rounds, and keeps the fastest
//! round of each: other load on the machine only ever adds time, to either
//! loop (so the difference of one round can be anything down to nothing).
//! Its site is private and never listed among the sites.

use std::hint::black_box;
use std::time::{Duration, Instant};

use super::fold::CALIBRATION;
use crate::call::run::{NeverErr, run};

const CALLS: u32 = 20_000;
const ROUNDS: u32 = 5;

/// Nanoseconds a recorded call adds to a bare one, measured now (recording
/// must be on).
pub(crate) fn measure_per_call_ns() -> f64 {
    let body = |i: u32| black_box(i.wrapping_mul(0x9e37_79b9));
    let (mut bare, mut recorded) = (Duration::MAX, Duration::MAX);
    for _ in 0..ROUNDS {
        let start = Instant::now();
        for i in 0..CALLS {
            black_box(body(black_box(i)));
        }
        bare = bare.min(start.elapsed());
        let start = Instant::now();
        for i in 0..CALLS {
            black_box(run::<_, NeverErr, false>(&CALIBRATION, || {
                body(black_box(i))
            }));
        }
        recorded = recorded.min(start.elapsed());
    }
    recorded.saturating_sub(bare).as_nanos() as f64 / f64::from(CALLS)
}
