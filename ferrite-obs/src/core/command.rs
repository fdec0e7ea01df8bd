//! Command ids and the thread's current command.
//!
//! Every call of a `#[probe(command)]` function gets a process-unique id
//! (never 0). While a command's call (or a poll of its future) runs, the
//! thread's current-command cell holds its id: nested probes report it, and
//! the kernel-side attribution reads it by address.
//!
//! Ids. An id is `round << INDEX_BITS | index`: an index that no other live
//! command holds, claimed as the command begins and released as it ends,
//! and the index's round, one more than its previous holder's. The kernel
//! view keeps a command's figures in the entry of its index, so two live
//! commands never share an entry, whatever the number of threads or the
//! order in which commands end; the round tells an entry's successive
//! holders apart (see `struct fo_command`). Indices are held in a bitmap:
//! claiming one is one `fetch_or` on a word, releasing it one `fetch_and`.
//! Each thread walks the indices from its own starting point, round-robin,
//! so a released index is claimed again as late as possible and threads
//! rarely claim in the same word. Index 0 is never claimed: when every other
//! index is held, a command gets index 0 (no kernel entry; counted by
//! [`unindexed`]) and a round from a counter of its own.

use std::cell::Cell;
use std::num::NonZeroU64;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

/// The unique id of one command invocation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct CommandId(NonZeroU64);

impl CommandId {
    /// The id as a plain integer (what the USDT probes carry).
    pub fn get(self) -> u64 {
        self.0.get()
    }
}

/// Bits of an id that are its index (the kernel view's `FO_COMMAND_BITS`).
pub(crate) const INDEX_BITS: u32 = 16;
const INDICES: usize = 1 << INDEX_BITS;
const WORDS: usize = INDICES / 64;

/// Bit `i % 64` of word `i / 64`: index `i` is held by a live command.
static HELD: [AtomicU64; WORDS] = [const { AtomicU64::new(0) }; WORDS];
/// The round of each index's latest holder. Only the holder writes it.
static ROUNDS: [AtomicU32; INDICES] = [const { AtomicU32::new(0) }; INDICES];
/// Rounds of the commands given index 0.
static UNINDEXED: AtomicU64 = AtomicU64::new(0);
/// Where the next thread starts its walk.
static NEXT_START: AtomicU32 = AtomicU32::new(0);

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
    /// The index the thread tries first for its next command; 0: not yet
    /// chosen.
    static CURSOR: Cell<u32> = const { Cell::new(0) };
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

/// A new, never used command id, whose index the command holds until
/// [`release`].
#[inline]
pub(crate) fn next_id() -> u64 {
    let index = CURSOR.get() as usize & (INDICES - 1);
    // The common case: a free index at or after the cursor, in its word
    // (the cursor is never 0, so neither is the index taken here).
    if index != 0 {
        let word = &HELD[index / 64];
        let free = !word.load(Ordering::Relaxed) & (u64::MAX << (index % 64));
        if free != 0 {
            let mask = free & free.wrapping_neg();
            // Acquire: the previous holder's round is visible.
            if word.fetch_or(mask, Ordering::Acquire) & mask == 0 {
                return holding(index / 64 * 64 + mask.trailing_zeros() as usize);
            }
        }
    }
    next_id_walking(index)
}

/// [`next_id`] when the cursor's word has no free index after it: walks the
/// bitmap.
#[cold]
#[inline(never)]
fn next_id_walking(mut index: usize) -> u64 {
    if index == 0 {
        index = first_index();
    }
    // Each word is visited at most twice: once from the cursor's bit, once
    // whole after the walk wraps; a lost race retries the same word.
    let mut visits = 2 * WORDS + 1;
    while visits > 0 {
        let word = index / 64;
        let held = HELD[word].load(Ordering::Relaxed) | u64::from(word == 0);
        let free = !held & (u64::MAX << (index % 64));
        if free == 0 {
            index = (word + 1) % WORDS * 64;
            visits -= 1;
            continue;
        }
        let bit = free.trailing_zeros() as usize;
        let mask = 1u64 << bit;
        if HELD[word].fetch_or(mask, Ordering::Acquire) & mask != 0 {
            continue;
        }
        return holding(word * 64 + bit);
    }
    unindexed_id()
}

/// The id of the command that has just claimed `index` (never 0); moves the
/// thread's cursor past it.
#[inline(always)]
fn holding(index: usize) -> u64 {
    let index = index & (INDICES - 1);
    CURSOR.set((((index + 1) & (INDICES - 1)) as u32).max(1));
    (u64::from(next_round(index)) << INDEX_BITS) | index as u64
}

/// The round of index `index`'s new holder: its previous holder's plus one,
/// skipping multiples of 2^16 (the kernel view's tag of a round is its low
/// 16 bits, and 0 is the tag of an entry nobody was given).
#[inline(always)]
fn next_round(index: usize) -> u32 {
    let cell = &ROUNDS[index & (INDICES - 1)];
    let mut round = cell.load(Ordering::Relaxed).wrapping_add(1);
    if round & 0xffff == 0 {
        round = round.wrapping_add(1);
    }
    cell.store(round, Ordering::Relaxed);
    round
}

#[cold]
#[inline(never)]
fn first_index() -> usize {
    // Starts 4,099 indices apart (a prime: 64 words and 3 bits), so that
    // threads begin in different words and bits.
    let start = NEXT_START.fetch_add(4099, Ordering::Relaxed) as usize % INDICES;
    start.max(1)
}

#[cold]
#[inline(never)]
fn unindexed_id() -> u64 {
    (UNINDEXED.fetch_add(1, Ordering::Relaxed) + 1) << INDEX_BITS
}

/// Releases the index of command `id` (from [`next_id`]) as the command
/// ends: a later command may hold it.
#[inline]
pub(crate) fn release(id: u64) {
    let index = index_of(id);
    if index != 0 {
        // Release: the next holder sees this holder's round.
        HELD[index / 64].fetch_and(!(1u64 << (index % 64)), Ordering::Release);
    }
}

/// The index of command `id`: its kernel entry, or 0 for none.
#[inline(always)]
pub(crate) fn index_of(id: u64) -> usize {
    id as usize & (INDICES - 1)
}

/// Commands that began while every index was held, so without kernel
/// figures of their own.
#[cfg(any(test, ferrite_kernel))]
pub(crate) fn unindexed() -> u64 {
    UNINDEXED.load(Ordering::Relaxed)
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

    /// The tests that claim many indices take turns.
    static INDICES_IN_USE: std::sync::Mutex<()> = std::sync::Mutex::new(());

    #[test]
    fn ids_are_unique_across_threads_and_never_zero() {
        let _turn = INDICES_IN_USE.lock().unwrap_or_else(|e| e.into_inner());
        let threads: Vec<_> = (0..4)
            .map(|_| {
                std::thread::spawn(|| {
                    (0..3000)
                        .map(|_| {
                            let id = next_id();
                            release(id);
                            id
                        })
                        .collect::<Vec<_>>()
                })
            })
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

    /// 200 threads, each holding up to 300 live commands at once while it
    /// ends others in a different order than it began them: no index is
    /// ever held twice (each thread's live ids are checked against a shared
    /// table of owners), and every id is new.
    #[test]
    fn live_commands_never_share_an_index() {
        let _turn = INDICES_IN_USE.lock().unwrap_or_else(|e| e.into_inner());
        use std::sync::Mutex;
        static OWNERS: Mutex<Vec<u64>> = Mutex::new(Vec::new());
        OWNERS.lock().unwrap().resize(INDICES, 0);
        let barrier = std::sync::Arc::new(std::sync::Barrier::new(200));
        let threads: Vec<_> = (0..200u64)
            .map(|t| {
                let barrier = barrier.clone();
                std::thread::spawn(move || {
                    barrier.wait();
                    let mut live = std::collections::VecDeque::new();
                    let mut seen = Vec::new();
                    for i in 0..1000u64 {
                        let id = next_id();
                        let index = index_of(id);
                        assert_ne!(
                            index, 0,
                            "65,535 indices are enough for 60,000 live commands"
                        );
                        {
                            let mut owners = OWNERS.lock().unwrap();
                            assert_eq!(
                                owners[index], 0,
                                "index {index} is held by {:#x}",
                                owners[index]
                            );
                            owners[index] = id;
                        }
                        live.push_back(id);
                        seen.push(id);
                        // Ends the newest or the oldest, by turns.
                        if live.len() > 300 || (i + t) % 3 == 0 {
                            let id = if i % 2 == 0 {
                                live.pop_front()
                            } else {
                                live.pop_back()
                            };
                            let id = id.unwrap();
                            OWNERS.lock().unwrap()[index_of(id)] = 0;
                            release(id);
                        }
                    }
                    for id in live {
                        OWNERS.lock().unwrap()[index_of(id)] = 0;
                        release(id);
                    }
                    seen
                })
            })
            .collect();
        let mut all: Vec<u64> = threads
            .into_iter()
            .flat_map(|t| t.join().unwrap())
            .collect();
        let n = all.len();
        all.sort_unstable();
        all.dedup();
        assert_eq!(all.len(), n, "command ids are unique");
    }

    #[test]
    fn with_every_index_held_a_command_gets_index_zero_and_is_counted() {
        let _turn = INDICES_IN_USE.lock().unwrap_or_else(|e| e.into_inner());
        // Holds every index this thread can claim, then one more.
        let mut held = Vec::new();
        loop {
            let id = next_id();
            if index_of(id) == 0 {
                let before = unindexed();
                let again = next_id();
                assert_eq!(index_of(again), 0);
                assert_eq!(unindexed(), before + 1);
                assert_ne!(again, id);
                break;
            }
            held.push(id);
            assert!(held.len() < INDICES, "index 0 is never claimed");
        }
        for id in held {
            release(id);
        }
        assert_ne!(index_of(next_id()), 0, "released indices are claimed again");
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
