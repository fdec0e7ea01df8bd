//! The clock used to time calls.
//!
//! Timing a call takes two readings, and on this hot path the clock is most of
//! the cost: `rdtsc`, scaled by `quanta`'s calibration against
//! `CLOCK_MONOTONIC`, costs about half of `clock_gettime`. Calibration takes
//! up to 200 ms, so it runs when recording is turned on ([`calibrate`]),
//! never inside a probed call. Until then (a tracer attached to a process
//! whose runtime is off), and wherever quanta does not use the TSC (it finds
//! it unstable, or the CPU is not x86-64), readings come from the monotonic
//! clock. A reading carries the clock it was taken from, and the end of an
//! interval is read from that same clock.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

/// Nanoseconds per TSC tick in 32.32 fixed point, from quanta's calibration;
/// 0 until [`calibrate`] has run, and where the TSC is not the clock (quanta
/// falls back to the monotonic clock, or the CPU is not x86-64). A reading
/// loads it once and carries it, so that scaling an interval is one
/// multiplication and a shift, with no branch on the kind of clock.
static NS_PER_TICK: AtomicU64 = AtomicU64::new(0);
/// The clock calibrated against `CLOCK_MONOTONIC`, kept for its scaling.
static CALIBRATED: OnceLock<quanta::Clock> = OnceLock::new();
static MONOTONIC_BASE: OnceLock<Instant> = OnceLock::new();

/// Fractional bits of [`NS_PER_TICK`].
const SCALE_SHIFT: u32 = 32;

/// The fixed-point scale of `clock`'s raw readings, or 0 where they are not
/// the TSC or where a tick lasts a nanosecond or more (a TSC slower than
/// 1 GHz): with a scale below 2^32 a scaled interval is never more ticks
/// than it had, so it always fits in 64 bits.
fn ns_per_tick(clock: &quanta::Clock) -> u64 {
    if !raw_is_rdtsc(clock) {
        return 0;
    }
    // Over 2^40 ticks (minutes of TSC time), quanta's own scaling gives the
    // ratio to better than one part in a billion.
    const TICKS: u64 = 1 << 40;
    let ns = clock.delta_as_nanos(0, TICKS);
    let scale = (u128::from(ns) << SCALE_SHIFT) / u128::from(TICKS);
    u64::try_from(scale)
        .ok()
        .filter(|&scale| scale < 1 << SCALE_SHIFT)
        .unwrap_or(0)
}

/// Nanoseconds in `ticks` TSC ticks at `ns_per_tick` (below 2^32).
#[inline(always)]
fn scale(ticks: u64, ns_per_tick: u64) -> u64 {
    // `ns_per_tick < 2^32`, so the product shifted back is below `ticks`.
    ((u128::from(ticks) * u128::from(ns_per_tick)) >> SCALE_SHIFT) as u64
}

/// The TSC.
#[inline(always)]
fn rdtsc() -> u64 {
    #[cfg(target_arch = "x86_64")]
    {
        // SAFETY: `rdtsc` has no preconditions; it is read only where
        // `NS_PER_TICK` is set, which `raw_is_rdtsc` allows only on x86-64.
        unsafe { core::arch::x86_64::_rdtsc() }
    }
    #[cfg(not(target_arch = "x86_64"))]
    unreachable!("NS_PER_TICK is 0 off x86-64")
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

/// One clock reading: TSC ticks when `ns_per_tick` is set (the scale in
/// force when it was taken), else monotonic nanoseconds since
/// `MONOTONIC_BASE`.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Stamp {
    raw: u64,
    ns_per_tick: u64,
}

impl Stamp {
    /// A placeholder for calls that are not timed; its intervals are zero.
    pub(crate) const ZERO: Stamp = Stamp {
        raw: 0,
        ns_per_tick: 0,
    };

    /// A reading from the clock this one was read from.
    #[inline(always)]
    pub(crate) fn now_like(self) -> Stamp {
        if self.ns_per_tick != 0 {
            Stamp {
                raw: rdtsc(),
                ns_per_tick: self.ns_per_tick,
            }
        } else {
            monotonic()
        }
    }

    /// Nanoseconds from `self` to `end`, a later reading of the same clock;
    /// zero if `end` is not later.
    #[inline(always)]
    pub(crate) fn elapsed_ns(self, end: Stamp) -> u64 {
        let delta = end.raw.saturating_sub(self.raw);
        if self.ns_per_tick != 0 {
            scale(delta, self.ns_per_tick)
        } else {
            delta
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
    let clock = CALIBRATED.get_or_init(quanta::Clock::new);
    NS_PER_TICK.store(ns_per_tick(clock), Ordering::Relaxed);
}

/// A reading from the best clock available now.
#[inline(always)]
pub(crate) fn now() -> Stamp {
    // Relaxed: a reading carries the scale it was taken with, so a call
    // that starts before calibration ends on the clock it started on.
    let ns_per_tick = NS_PER_TICK.load(Ordering::Relaxed);
    if ns_per_tick != 0 {
        Stamp {
            raw: rdtsc(),
            ns_per_tick,
        }
    } else {
        monotonic()
    }
}

#[cold]
fn monotonic() -> Stamp {
    let base = MONOTONIC_BASE.get_or_init(Instant::now);
    Stamp {
        raw: u64::try_from(base.elapsed().as_nanos()).unwrap_or(u64::MAX),
        ns_per_tick: 0,
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
        let clock = CALIBRATED.get().expect("calibrated");
        assert_eq!(
            start.ns_per_tick != 0,
            raw_is_rdtsc(clock),
            "calibrated readings come from the TSC wherever quanta reads it"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
        let ns = start.elapsed();
        assert!((19_000_000..2_000_000_000).contains(&ns), "tsc: {ns} ns");
        assert_eq!(Stamp::ZERO.elapsed_ns(Stamp::ZERO), 0);
    }

    #[cfg(target_arch = "x86_64")]
    #[test]
    fn fixed_point_scaling_agrees_with_quanta() {
        calibrate();
        let clock = CALIBRATED.get().expect("calibrated");
        let ns_per_tick = NS_PER_TICK.load(Ordering::Relaxed);
        if !raw_is_rdtsc(clock) {
            eprintln!("quanta does not read the TSC on this machine: nothing to compare");
            return;
        }
        assert!((1..1 << SCALE_SHIFT).contains(&ns_per_tick));
        for ticks in [0u64, 1, 1_000, 123_456_789, 1 << 36, 1 << 44, u64::MAX] {
            let ours = scale(ticks, ns_per_tick) as f64;
            let theirs = clock.delta_as_nanos(0, ticks) as f64;
            assert!(
                (ours - theirs).abs() <= 1.0 + theirs * 1e-8,
                "{ticks} ticks: {ours} ns here, {theirs} ns by quanta"
            );
        }
        let later = Stamp {
            raw: 10,
            ns_per_tick,
        };
        let earlier = Stamp {
            raw: 5,
            ns_per_tick,
        };
        assert_eq!(later.elapsed_ns(earlier), 0, "a reversed interval is zero");
    }
}
