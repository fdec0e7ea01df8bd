//! The clock used to time calls.
//!
//! Timing a call takes two readings, and on this hot path the clock is most of
//! the cost: the TSC (through `quanta`, calibrated against `CLOCK_MONOTONIC`)
//! costs about half of `clock_gettime`. Calibration takes up to 200 ms, so it
//! runs when recording is turned on ([`calibrate`]), never inside a probed
//! call. Until then (a tracer attached to a process whose runtime is off),
//! readings come from the monotonic clock. A reading carries the clock it was
//! taken from, and the end of an interval is read from that same clock.

use std::sync::OnceLock;
use std::time::Instant;

static TSC: OnceLock<Tsc> = OnceLock::new();
static MONOTONIC_BASE: OnceLock<Instant> = OnceLock::new();

/// The calibrated clock: quanta's, and whether its raw readings are the TSC
/// itself, so that the hot path can read `rdtsc` without a call.
#[derive(Debug)]
struct Tsc {
    clock: quanta::Clock,
    raw_is_rdtsc: bool,
}

impl Tsc {
    fn new() -> Tsc {
        let clock = quanta::Clock::new();
        let raw_is_rdtsc = raw_is_rdtsc(&clock);
        Tsc {
            clock,
            raw_is_rdtsc,
        }
    }

    #[inline(always)]
    fn raw(&self) -> u64 {
        #[cfg(target_arch = "x86_64")]
        if self.raw_is_rdtsc {
            // SAFETY: `rdtsc` has no preconditions; `raw_is_rdtsc` says the
            // CPU has it and that quanta scales its readings.
            return unsafe { core::arch::x86_64::_rdtsc() };
        }
        self.clock.raw()
    }
}

/// Whether quanta reads the TSC: its raw reading falls between two `rdtsc`
/// readings, three times running (a monotonic-clock reading in nanoseconds
/// does not).
fn raw_is_rdtsc(clock: &quanta::Clock) -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        (0..3).all(|_| {
            // SAFETY: `rdtsc` has no preconditions on x86-64.
            let before = unsafe { core::arch::x86_64::_rdtsc() };
            let raw = clock.raw();
            // SAFETY: as above.
            let after = unsafe { core::arch::x86_64::_rdtsc() };
            before <= raw && raw <= after
        })
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = clock;
        false
    }
}

/// One clock reading: raw ticks of `tsc`, or monotonic nanoseconds since
/// `MONOTONIC_BASE` when `tsc` is `None`.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Stamp {
    raw: u64,
    tsc: Option<&'static Tsc>,
}

impl Stamp {
    /// A placeholder for calls that are not timed; its intervals are zero.
    pub(crate) const ZERO: Stamp = Stamp { raw: 0, tsc: None };

    /// A reading from the clock this one was read from.
    #[inline(always)]
    pub(crate) fn now_like(self) -> Stamp {
        match self.tsc {
            Some(clock) => Stamp {
                raw: clock.raw(),
                tsc: Some(clock),
            },
            None => monotonic(),
        }
    }

    /// Nanoseconds from `self` to `end`, a later reading of the same clock;
    /// zero if `end` is not later.
    #[inline(always)]
    pub(crate) fn elapsed_ns(self, end: Stamp) -> u64 {
        match self.tsc {
            Some(tsc) => tsc.clock.delta_as_nanos(self.raw, end.raw),
            None => end.raw.saturating_sub(self.raw),
        }
    }

    /// Nanoseconds from `self` to now.
    #[inline(always)]
    pub(crate) fn elapsed(self) -> u64 {
        self.elapsed_ns(self.now_like())
    }
}

/// Calibrates the TSC clock (once per process; up to 200 ms the first time).
pub(crate) fn calibrate() {
    TSC.get_or_init(Tsc::new);
}

/// A reading from the best clock available now.
#[inline(always)]
pub(crate) fn now() -> Stamp {
    match TSC.get() {
        Some(clock) => Stamp {
            raw: clock.raw(),
            tsc: Some(clock),
        },
        None => monotonic(),
    }
}

#[cold]
fn monotonic() -> Stamp {
    let base = MONOTONIC_BASE.get_or_init(Instant::now);
    Stamp {
        raw: u64::try_from(base.elapsed().as_nanos()).unwrap_or(u64::MAX),
        tsc: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn intervals_are_measured_in_nanoseconds_on_either_clock() {
        let start = monotonic();
        std::thread::sleep(std::time::Duration::from_millis(20));
        let ns = start.elapsed();
        assert!(
            (20_000_000..2_000_000_000).contains(&ns),
            "monotonic: {ns} ns"
        );

        calibrate();
        let start = now();
        assert!(
            start.tsc.is_some(),
            "calibrated readings come from the TSC clock"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
        let ns = start.elapsed();
        assert!((19_000_000..2_000_000_000).contains(&ns), "tsc: {ns} ns");
        assert_eq!(Stamp::ZERO.elapsed_ns(Stamp::ZERO), 0);
    }
}
