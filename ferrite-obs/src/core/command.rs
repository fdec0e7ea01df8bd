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

/// A thread's current command: its id and its kind (the command site's
/// [`Site::kind`](crate::core::site::Site::kind)), both 0 when none. `#[repr(C)]`:
/// the kernel view reads it by address as `struct fo_current`.
#[repr(C)]
#[derive(Debug)]
pub(crate) struct CurrentCell {
    command: AtomicU64,
    kind: AtomicU64,
}

/// What [`enter`] replaced, for [`restore`].
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Previous {
    command: u64,
    kind: u64,
}

thread_local! {
    /// `(next, end)` of the thread's block of ids.
    static IDS: Cell<(u64, u64)> = const { Cell::new((0, 0)) };
    /// The thread's current command. Atomics with `const` initialisation and
    /// no destructor: the address is fixed for the thread's life, so it can
    /// be registered once and read from outside the thread (by the kernel
    /// view while the thread is switched out). Only this thread writes it.
    static CURRENT: CurrentCell = const {
        CurrentCell {
            command: AtomicU64::new(0),
            kind: AtomicU64::new(0),
        }
    };
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
    CURRENT.with(|c| c.command.load(Ordering::Relaxed))
}

/// The thread's current command id and kind (0, 0 when none).
#[cfg(any(test, ferrite_kernel))]
#[inline(always)]
pub(crate) fn current_with_kind() -> (u64, u32) {
    CURRENT.with(|c| {
        (
            c.command.load(Ordering::Relaxed),
            c.kind.load(Ordering::Relaxed) as u32,
        )
    })
}

/// The address of the thread's current-command cell (`struct fo_current`).
#[cfg(all(ferrite_kernel, not(loom)))]
pub(crate) fn current_cell_address() -> u64 {
    CURRENT.with(|c| std::ptr::from_ref(c) as u64)
}

/// The command running on this thread right now, if any.
///
/// Inside a `#[probe(command)]` function (or a poll of its future), and in
/// everything it calls, this is that command's id.
pub fn current_command() -> Option<CommandId> {
    NonZeroU64::new(current_raw()).map(CommandId)
}

/// Makes `id` (of kind `kind`) the thread's current command; returns the
/// previous one, for [`restore`].
#[inline(always)]
pub(crate) fn enter(id: u64, kind: u32) -> Previous {
    // Loads and stores, not `swap`: only this thread writes its cell, and
    // `xchg` would be an implicitly locked instruction.
    CURRENT.with(|c| {
        let previous = Previous {
            command: c.command.load(Ordering::Relaxed),
            kind: c.kind.load(Ordering::Relaxed),
        };
        c.command.store(id, Ordering::Relaxed);
        c.kind.store(u64::from(kind), Ordering::Relaxed);
        previous
    })
}

/// Makes `previous` the thread's current command again.
#[inline(always)]
pub(crate) fn restore(previous: Previous) {
    CURRENT.with(|c| {
        c.command.store(previous.command, Ordering::Relaxed);
        c.kind.store(previous.kind, Ordering::Relaxed);
    });
}

/// Makes a command the thread's current one until dropped, then restores
/// the previous one (also when unwinding).
#[derive(Debug)]
pub(crate) struct Scope {
    previous: Previous,
}

impl Scope {
    #[inline(always)]
    pub(crate) fn enter(id: u64, kind: u32) -> Scope {
        Scope {
            previous: enter(id, kind),
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
            let _outer = Scope::enter(7, 1);
            assert_eq!(current_raw(), 7);
            {
                let _inner = Scope::enter(9, 2);
                assert_eq!(current_with_kind(), (9, 2));
            }
            assert_eq!(current_with_kind(), (7, 1));
        }
        assert_eq!(current_command(), None);
    }
}
