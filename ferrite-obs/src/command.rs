//! Command ids and the thread's current command.
//!
//! Every call of a `#[probe(command)]` function gets a process-unique id
//! (never 0). Threads take ids from the global counter in blocks, so handing
//! out an id is a thread-local increment. While a command's call (or a poll of
//! its future) runs, the thread's current-command cell holds its id: nested
//! probes report it, and the kernel-side attribution reads it by address.

use std::cell::Cell;
use std::num::NonZeroU64;
use std::sync::atomic::{AtomicU64, Ordering};

/// The unique id of one command invocation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct CommandId(NonZeroU64);

impl CommandId {
    /// The id as a plain integer (what the USDT probes carry).
    pub fn get(self) -> u64 {
        self.0.get()
    }
}

const BLOCK: u64 = 1024;
static NEXT_BLOCK: AtomicU64 = AtomicU64::new(1);

thread_local! {
    /// `(next, end)` of the thread's block of ids.
    static IDS: Cell<(u64, u64)> = const { Cell::new((0, 0)) };
    /// The thread's current command id, 0 when none. An atomic with `const`
    /// initialisation and no destructor: its address is fixed for the thread's
    /// life, so it can be registered once and read from outside the thread.
    static CURRENT: AtomicU64 = const { AtomicU64::new(0) };
}

/// A new, never used command id.
#[inline]
pub(crate) fn next_id() -> u64 {
    let (next, end) = IDS.get();
    if next < end {
        IDS.set((next + 1, end));
        return next;
    }
    let base = NEXT_BLOCK.fetch_add(BLOCK, Ordering::Relaxed);
    IDS.set((base + 1, base + BLOCK));
    base
}

/// The thread's current command id (0 when none).
#[inline(always)]
pub(crate) fn current_raw() -> u64 {
    CURRENT.with(|c| c.load(Ordering::Relaxed))
}

/// The command running on this thread right now, if any.
///
/// Inside a `#[probe(command)]` function (or a poll of its future), and in
/// everything it calls, this is that command's id.
pub fn current_command() -> Option<CommandId> {
    NonZeroU64::new(current_raw()).map(CommandId)
}

/// Makes `id` the thread's current command; returns the previous one, for
/// [`restore`].
#[inline(always)]
pub(crate) fn enter(id: u64) -> u64 {
    // Load and store, not `swap`: only this thread writes its cell, and
    // `xchg` would be an implicitly locked instruction.
    CURRENT.with(|c| {
        let previous = c.load(Ordering::Relaxed);
        c.store(id, Ordering::Relaxed);
        previous
    })
}

/// Makes `previous` the thread's current command again.
#[inline(always)]
pub(crate) fn restore(previous: u64) {
    CURRENT.with(|c| c.store(previous, Ordering::Relaxed));
}

/// Makes `id` the thread's current command until dropped, then restores the
/// previous one (also when unwinding).
#[derive(Debug)]
pub(crate) struct Scope {
    previous: u64,
}

impl Scope {
    #[inline(always)]
    pub(crate) fn enter(id: u64) -> Scope {
        Scope {
            previous: enter(id),
        }
    }
}

impl Drop for Scope {
    #[inline(always)]
    fn drop(&mut self) {
        restore(self.previous);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_unique_across_threads_and_never_zero() {
        let threads: Vec<_> = (0..4)
            .map(|_| std::thread::spawn(|| (0..3000).map(|_| next_id()).collect::<Vec<_>>()))
            .collect();
        let mut all: Vec<u64> = threads
            .into_iter()
            .flat_map(|t| t.join().unwrap())
            .collect();
        let n = all.len();
        all.sort_unstable();
        all.dedup();
        assert_eq!(all.len(), n, "command ids must be unique");
        assert!(all[0] > 0);
    }

    #[test]
    fn scopes_nest_and_restore() {
        assert_eq!(current_command(), None);
        {
            let _outer = Scope::enter(7);
            assert_eq!(current_raw(), 7);
            {
                let _inner = Scope::enter(9);
                assert_eq!(current_raw(), 9);
            }
            assert_eq!(current_raw(), 7);
        }
        assert_eq!(current_command(), None);
    }
}
