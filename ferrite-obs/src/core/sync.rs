//! Atomics used by the lock-free structures, swapped for loom's under
//! `--cfg loom` so the loom models exercise the very code that ships, and
//! [`OnceBox`], the once-installed cell built on them.

#[cfg(loom)]
pub(crate) use loom::sync::atomic::{
    AtomicBool, AtomicPtr, AtomicU8, AtomicU64, AtomicUsize, Ordering,
};
#[cfg(not(loom))]
pub(crate) use std::sync::atomic::{
    AtomicBool, AtomicPtr, AtomicU8, AtomicU64, AtomicUsize, Ordering,
};

/// A heap value installed at most once and never replaced: empty until the
/// first [`OnceBox::get_or_install`], then the same value for the cell's
/// whole life, freed with the cell.
///
/// Protocol. Installing is one compare-exchange of a null pointer (`AcqRel`
/// on success, `Acquire` on failure), reading one `Acquire` load: whoever
/// gets the value sees it initialised. A value that loses the race is freed
/// before anyone sees it. Nothing but `Drop`, which has the cell alone,
/// frees an installed value, so a shared borrow of the cell may hand out
/// borrows of its value. All-zero bytes are an empty cell (a null pointer),
/// so the cell may sit in zeroed memory.
#[repr(transparent)]
pub(crate) struct OnceBox<T> {
    ptr: AtomicPtr<T>,
}

impl<T> OnceBox<T> {
    /// An empty cell.
    #[cfg(not(loom))]
    pub(crate) const fn new() -> Self {
        OnceBox {
            ptr: AtomicPtr::new(std::ptr::null_mut()),
        }
    }

    /// An empty cell.
    #[cfg(loom)]
    pub(crate) fn new() -> Self {
        OnceBox {
            ptr: AtomicPtr::new(std::ptr::null_mut()),
        }
    }

    /// The installed value, if any.
    #[inline(always)]
    pub(crate) fn get(&self) -> Option<&T> {
        // SAFETY: a non-null pointer came from `Box::into_raw` in
        // `get_or_install` and stays valid until `drop` (see the protocol).
        unsafe { self.ptr.load(Ordering::Acquire).as_ref() }
    }

    /// The installed value, installing `fresh()` first if there is none
    /// (when two threads race, one value wins and the other is freed).
    #[inline(always)]
    pub(crate) fn get_or_install(&self, fresh: impl FnOnce() -> Box<T>) -> &T {
        match self.get() {
            Some(value) => value,
            None => self.install(fresh()),
        }
    }

    #[cold]
    fn install(&self, fresh: Box<T>) -> &T {
        let fresh = Box::into_raw(fresh);
        let installed = match self.ptr.compare_exchange(
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
        // SAFETY: non-null (ours, or the winner's `Box::into_raw`), and valid
        // until `drop`, which needs the cell exclusively.
        unsafe { &*installed }
    }

    /// The address of the installed value, or null: for a prefetch, which
    /// reads nothing.
    #[inline(always)]
    pub(crate) fn address(&self) -> *const T {
        self.ptr.load(Ordering::Relaxed)
    }
}

impl<T> Drop for OnceBox<T> {
    fn drop(&mut self) {
        let installed = self.ptr.load(Ordering::Acquire);
        if !installed.is_null() {
            // SAFETY: from `Box::into_raw` in `install`; the cell is going
            // away and no borrow of it (hence of the value) remains.
            drop(unsafe { Box::from_raw(installed) });
        }
    }
}
