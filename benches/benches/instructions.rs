//! Instructions per call, for `benches/run-instructions.sh`: runs one case
//! `N` times so that callgrind, run with `N` and `2N`, gives the per-call
//! instruction count as the difference divided by `N`. Instruction counts are
//! repeatable on a noisy machine where nanoseconds are not.
//!
//! ```text
//! instructions CASE N      CASE: bare | disabled | enabled | command | clock-pair
//! ```

use std::hint::black_box;

use benches::{work, work_command, work_probed};

fn main() {
    let mut args = std::env::args().skip(1);
    let case = args.next().unwrap_or_default();
    let n: u64 = match args.next().map(|n| n.parse()) {
        Some(Ok(n)) => n,
        _ => {
            eprintln!("usage: instructions bare|disabled|enabled|command|clock-pair N");
            std::process::exit(2);
        }
    };
    // Set-up (clock calibration, the first call's shard allocation) happens
    // here, outside `measured`, the only function callgrind counts.
    let clock = quanta::Clock::new();
    match case.as_str() {
        "bare" | "disabled" | "clock-pair" => {}
        "enabled" | "command" => ferrite_obs::set_recording(true),
        other => {
            eprintln!(
                "unknown case {other:?}: expected bare, disabled, enabled, command or clock-pair"
            );
            std::process::exit(2);
        }
    }
    black_box(measured(&case, &clock, 1));
    black_box(measured(&case, &clock, n));
}

#[inline(never)]
fn measured(case: &str, clock: &quanta::Clock, n: u64) -> u64 {
    let mut sum = 0u64;
    match case {
        "bare" => (0..n).for_each(|i| sum ^= work(black_box(i))),
        "disabled" | "enabled" => (0..n).for_each(|i| sum ^= work_probed(black_box(i))),
        "command" => (0..n).for_each(|i| sum ^= work_command(black_box(i))),
        _ => (0..n).for_each(|i| {
            let start = clock.raw();
            sum ^= work(black_box(i));
            sum ^= clock.delta_as_nanos(start, clock.raw());
        }),
    }
    sum
}
