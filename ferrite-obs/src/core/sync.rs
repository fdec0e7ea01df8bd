//! Atomics used by the lock-free structures, swapped for loom's under
//! `--cfg loom` so the loom models exercise the very code that ships.

#[cfg(loom)]
pub(crate) use loom::sync::atomic::{
    AtomicBool, AtomicPtr, AtomicU8, AtomicU64, AtomicUsize, Ordering,
};
#[cfg(not(loom))]
pub(crate) use std::sync::atomic::{
    AtomicBool, AtomicPtr, AtomicU8, AtomicU64, AtomicUsize, Ordering,
};

/// Installs `fresh` in `cell` unless something is installed there already,
/// and returns what is installed: ours, or the one that won the race (ours
/// is then freed, never having been seen). `Release` on success, `Acquire`
/// on failure, so whoever gets the value sees it initialised. For cells
/// whose value, once installed, is never replaced nor freed while `cell`
/// lives.
pub(crate) fn install_once<T>(cell: &AtomicPtr<T>, fresh: Box<T>) -> &T {
    let fresh = Box::into_raw(fresh);
    let installed = match cell.compare_exchange(
        std::ptr::null_mut(),
        fresh,
        Ordering::AcqRel,
        Ordering::Acquire,
    ) {
        Ok(_) => fresh,
        Err(theirs) => {
            // SAFETY: `fresh` came from `Box::into_raw` above and was not
            // published, so this is its only owner.
            drop(unsafe { Box::from_raw(fresh) });
            theirs
        }
    };
    // SAFETY: non-null (ours, or another caller's `Box::into_raw`), and
    // never replaced nor freed while `cell` lives (the contract above).
    unsafe { &*installed }
}
