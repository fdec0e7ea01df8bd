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
    /// Nanoseconds per raw tick in 32.32 fixed point, taken from quanta's
    /// calibration: scaling an interval is then one multiplication and a
    /// shift, with no branch on quanta's clock kind.
    ns_per_tick: u64,
}

/// Fractional bits of `Tsc::ns_per_tick`.
const SCALE_SHIFT: u32 = 32;

impl Tsc {
    fn new() -> Tsc {
        let clock = quanta::Clock::new();
        let raw_is_rdtsc = raw_is_rdtsc(&clock);
        // Over 2^40 ticks (minutes of TSC time), quanta's own scaling gives
        // the ratio to better than one part in a billion.
        const TICKS: u64 = 1 << 40;
        let ns = clock.delta_as_nanos(0, TICKS);
        let ns_per_tick =
            u64::try_from((u128::from(ns) << SCALE_SHIFT) / u128::from(TICKS)).unwrap_or(u64::MAX);
        Tsc {
            clock,
            raw_is_rdtsc,
            ns_per_tick,
        }
    }

    /// Nanoseconds in `ticks` raw ticks (saturating).
    #[inline(always)]
    fn scale(&self, ticks: u64) -> u64 {
        let ns = (u128::from(ticks) * u128::from(self.ns_per_tick)) >> SCALE_SHIFT;
        u64::try_from(ns).unwrap_or(u64::MAX)
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
            Some(tsc) => tsc.scale(end.raw.saturating_sub(self.raw)),
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

    #[test]
    fn fixed_point_scaling_agrees_with_quanta() {
        calibrate();
        let tsc = TSC.get().expect("calibrated");
        for ticks in [0u64, 1, 1_000, 123_456_789, 1 << 36, 1 << 44] {
            let ours = tsc.scale(ticks) as f64;
            let theirs = tsc.clock.delta_as_nanos(0, ticks) as f64;
            assert!(
                (ours - theirs).abs() <= 1.0 + theirs * 1e-8,
                "{ticks} ticks: {ours} ns here, {theirs} ns by quanta"
            );
        }
        let later = Stamp {
            raw: 10,
            tsc: Some(tsc),
        };
        let earlier = Stamp {
            raw: 5,
            tsc: Some(tsc),
        };
        assert_eq!(later.elapsed_ns(earlier), 0, "a reversed interval is zero");
    }
}
