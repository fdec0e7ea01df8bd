//! The clock used to time calls.
//!
//! Timing a call takes two readings, and on this hot path the clock is most of
//! the cost: the TSC (through `quanta`, calibrated against `CLOCK_MONOTONIC`)
//! costs about half of `clock_gettime`. Calibration takes up to 200 ms, so it
//! runs when recording is turned on ([`calibrate`]), never inside a probed
//! call. Until then (a tracer attached to a process whose runtime is off),
//! readings come from the monotonic clock and carry a tag bit; the end of an
//! interval is always read from the source its start was read from.

use std::sync::OnceLock;
use std::time::Instant;

static TSC: OnceLock<quanta::Clock> = OnceLock::new();
static MONOTONIC_BASE: OnceLock<Instant> = OnceLock::new();

/// Set on readings taken from the monotonic clock (in ns since `MONOTONIC_BASE`).
const MONOTONIC: u64 = 1 << 63;

/// One clock reading.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Stamp(u64);

/// Calibrates the TSC clock (once per process; up to 200 ms the first time).
pub(crate) fn calibrate() {
    TSC.get_or_init(quanta::Clock::new);
}

/// A reading from the best clock available now.
#[inline(always)]
pub(crate) fn now() -> Stamp {
    match TSC.get() {
        Some(clock) => Stamp(clock.raw() & !MONOTONIC),
        None => monotonic(),
    }
}

/// A reading from the clock `start` was read from.
#[inline(always)]
pub(crate) fn now_like(start: Stamp) -> Stamp {
    match TSC.get() {
        Some(clock) if start.0 & MONOTONIC == 0 => Stamp(clock.raw() & !MONOTONIC),
        _ => monotonic(),
    }
}

/// Nanoseconds from `start` to `end`, two readings of the same clock; zero if
/// `end` is not later.
#[inline(always)]
pub(crate) fn elapsed_ns(start: Stamp, end: Stamp) -> u64 {
    match TSC.get() {
        Some(clock) if start.0 & MONOTONIC == 0 => clock.delta_as_nanos(start.0, end.0),
        _ => (end.0 & !MONOTONIC).saturating_sub(start.0 & !MONOTONIC),
    }
}

#[cold]
fn monotonic() -> Stamp {
    let base = MONOTONIC_BASE.get_or_init(Instant::now);
    let ns = u64::try_from(base.elapsed().as_nanos()).unwrap_or(u64::MAX);
    Stamp(ns | MONOTONIC)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn intervals_are_measured_in_nanoseconds_on_either_clock() {
        let start = monotonic();
        std::thread::sleep(std::time::Duration::from_millis(20));
        let ns = elapsed_ns(start, now_like(start));
        assert!(
            (20_000_000..2_000_000_000).contains(&ns),
            "monotonic: {ns} ns"
        );

        calibrate();
        let start = now();
        assert_eq!(
            start.0 & MONOTONIC,
            0,
            "calibrated readings come from the TSC clock"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
        let ns = elapsed_ns(start, now_like(start));
        assert!((19_000_000..2_000_000_000).contains(&ns), "tsc: {ns} ns");
    }
}
