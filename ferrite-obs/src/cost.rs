//! What the instrumentation costs the host: the per-call cost of a recorded
//! call, measured on this machine, times the calls made.
//!
//! The measurement times the real recording path (`run` on a site) against
//! the same body called bare, over several rounds, and keeps the smallest
//! difference: other load on the machine only ever adds time. Its site is
//! private and never listed among the sites.

use std::hint::black_box;
use std::time::Instant;

use crate::guard::{NeverErr, run};
use crate::site::{Site, SiteMeta};

static CALIBRATION_META: SiteMeta = SiteMeta {
    name: "ferrite_obs_calibration",
    c_name: "ferrite_obs_calibration\0",
    module: module_path!(),
    file: file!(),
    line: line!(),
    is_async: false,
    is_command: false,
};

/// The site the measurement records at; left out of every listing.
pub(crate) static CALIBRATION: Site = Site::new(&CALIBRATION_META);

const CALLS: u32 = 20_000;
const ROUNDS: u32 = 5;

/// Nanoseconds a recorded call adds to a bare one, measured now (recording
/// must be on).
pub(crate) fn measure_per_call_ns() -> f64 {
    let body = |i: u32| black_box(i.wrapping_mul(0x9e37_79b9));
    (0..ROUNDS)
        .map(|_| {
            let start = Instant::now();
            for i in 0..CALLS {
                black_box(body(black_box(i)));
            }
            let bare = start.elapsed();
            let start = Instant::now();
            for i in 0..CALLS {
                black_box(run::<_, NeverErr, false>(&CALIBRATION, || {
                    body(black_box(i))
                }));
            }
            let recorded = start.elapsed();
            recorded.saturating_sub(bare).as_nanos() as f64 / f64::from(CALLS)
        })
        .fold(f64::INFINITY, f64::min)
}
