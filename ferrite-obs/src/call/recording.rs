//! The process-wide recording switch.
//!
//! Off by default: `#[probe]` sites then only check it (and their USDT
//! semaphores) and call straight through. The runtime turns it on at start;
//! tests and embedders can too.

use std::sync::atomic::Ordering;

use crate::call::probes::backend::recording_switch;
use crate::core::clock;

/// Turns always-on recording at every `#[probe]` site on or off.
///
/// Turning it on the first time calibrates the clock (up to 200 ms, once per
/// process), so that no probed call ever waits for calibration. Calls already
/// under way when the switch flips finish the way they started.
pub fn set_recording(on: bool) {
    if on {
        clock::calibrate();
    }
    recording_switch().store(on, Ordering::Relaxed);
}

/// Whether `#[probe]` sites are recording.
#[inline(always)]
pub fn is_recording() -> bool {
    // Relaxed: the flag guards no data. A site that sees it late records a
    // few calls more or fewer around the flip, each one whole.
    recording_switch().load(Ordering::Relaxed)
}
