//! Per-thread shard slots.
//!
//! Every thread that records gets a small integer, its slot, on its first
//! recording; each call site keeps one shard per slot, so a slot's shards
//! have exactly one writer and need no read-modify-write instructions.
//!
//! Protocol: `TAKEN` is a bitmap of slots in use. A thread claims a free bit
//! with a compare-exchange (`Acquire`) and gives it back when it exits
//! (`fetch_and`, `Release`): the next owner of the slot therefore sees every
//! write the previous owner made to the slot's shards, so the single-writer
//! rule holds across the hand-over and nothing recorded is lost. When all
//! [`THREAD_SLOTS`] are in use, further threads share the [`SHARED`] slot, whose
//! shards are written with atomic read-modify-write instructions, until one
//! is given back: every release bumps [`RELEASES`], and a thread on the
//! shared slot tries again for an exclusive one at its next call after the
//! count has moved (one load and a compare on the shared slot's path, none
//! on an exclusive slot's). A call started on one slot may end on another;
//! the fold sums every slot, as it does for a task that moves between
//! threads.

use std::cell::Cell;

use crate::core::sync::{AtomicU64, Ordering};

/// Number of exclusive slots: threads recording at the same time beyond this
/// share one slot (correct, but with `lock`-prefixed adds).
#[cfg(not(loom))]
pub(crate) const THREAD_SLOTS: usize = 256;
#[cfg(loom)]
pub(crate) const THREAD_SLOTS: usize = 2;

/// The slot shared by threads that found every exclusive slot taken.
pub(crate) const SHARED: usize = THREAD_SLOTS;

const UNASSIGNED: usize = usize::MAX;
/// The slot of a thread whose locals are being destroyed: the shared one,
/// for good (a slot claimed now could never be given back).
const EXITING: usize = SHARED + 1;

/// A thread's slot: where it writes, and whether it is the only writer there.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct ThreadSlot {
    pub(crate) index: usize,
}

impl ThreadSlot {
    pub(crate) const fn new(index: usize) -> Self {
        Self { index }
    }

    /// True when no other thread writes to this slot.
    #[inline(always)]
    pub(crate) fn exclusive(self) -> bool {
        self.index != SHARED
    }
}

#[cfg(not(loom))]
static TAKEN: [AtomicU64; THREAD_SLOTS / 64] = [const { AtomicU64::new(0) }; THREAD_SLOTS / 64];

/// One past the highest exclusive slot ever claimed: shards of higher slots
/// do not exist, so readers need not look at them. Raised (`Release`) before
/// the claiming thread records anything; a reader that loads it (`Acquire`)
/// and misses a slot claimed meanwhile misses only calls still in progress
/// when it began, as any concurrent read may.
#[cfg(not(loom))]
static HIGH_WATER: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// Exclusive slots given back so far.
#[cfg(not(loom))]
static RELEASES: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
/// Threads that found every exclusive slot taken, and those of them that
/// moved to an exclusive slot later.
#[cfg(not(loom))]
static SHARED_THREADS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
#[cfg(not(loom))]
static MOVED_THREADS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Threads that have recorded on the shared slot (every exclusive one
/// taken), and how many of them have since moved to an exclusive slot.
#[cfg(all(not(loom), any(test, feature = "runtime")))]
pub(crate) fn shared_threads() -> (u64, u64) {
    (
        SHARED_THREADS.load(std::sync::atomic::Ordering::Relaxed),
        MOVED_THREADS.load(std::sync::atomic::Ordering::Relaxed),
    )
}

/// The exclusive slots that may hold shards: `0..high_water()`.
#[inline]
pub(crate) fn high_water() -> usize {
    #[cfg(not(loom))]
    return HIGH_WATER.load(std::sync::atomic::Ordering::Acquire);
    // The loom models hand out slots directly: every one may hold shards.
    #[cfg(loom)]
    return THREAD_SLOTS;
}

thread_local! {
    /// The calling thread's slot; `UNASSIGNED` until its first recording.
    static CURRENT: Cell<usize> = const { Cell::new(UNASSIGNED) };
    /// On the shared slot: `RELEASES` as it was when the thread last found
    /// every exclusive slot taken.
    static SHARED_SINCE: Cell<usize> = const { Cell::new(0) };
    /// Gives the slot back when the thread exits.
    static OWNER: SlotOwner = const { SlotOwner(Cell::new(UNASSIGNED)) };
}

/// The calling thread's slot, claiming one on first use.
#[cfg(not(loom))]
#[inline(always)]
pub(crate) fn current() -> ThreadSlot {
    let index = CURRENT.get();
    if index < SHARED {
        return ThreadSlot::new(index);
    }
    shared_or_claim(index)
}

/// The slot of a thread without an exclusive one: the shared slot, unless
/// a slot was given back since the thread last tried.
#[cfg(not(loom))]
#[cold]
#[inline(never)]
fn shared_or_claim(index: usize) -> ThreadSlot {
    if index == EXITING
        || (index == SHARED
            && RELEASES.load(std::sync::atomic::Ordering::Relaxed) == SHARED_SINCE.get())
    {
        return ThreadSlot::new(SHARED);
    }
    claim(index == SHARED)
}

#[cfg(not(loom))]
fn claim(was_shared: bool) -> ThreadSlot {
    // Read before trying: a release after it makes the next call try again.
    let releases = RELEASES.load(std::sync::atomic::Ordering::Relaxed);
    let Some(index) = claim_bit() else {
        if !was_shared {
            SHARED_THREADS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        SHARED_SINCE.set(releases);
        CURRENT.set(SHARED);
        return ThreadSlot::new(SHARED);
    };
    // Registering the owner fails only while the thread's locals are being
    // destroyed; the slot could then never be given back, so do not keep it.
    if OWNER.try_with(|owner| owner.0.set(index)).is_err() {
        release_bit(index);
        CURRENT.set(EXITING);
        return ThreadSlot::new(SHARED);
    }
    if was_shared {
        MOVED_THREADS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }
    CURRENT.set(index);
    ThreadSlot::new(index)
}

#[cfg(not(loom))]
fn claim_bit() -> Option<usize> {
    for (word_index, word) in TAKEN.iter().enumerate() {
        let mut bits = word.load(Ordering::Relaxed);
        while bits != u64::MAX {
            let bit = (!bits).trailing_zeros();
            match word.compare_exchange_weak(
                bits,
                bits | (1 << bit),
                Ordering::Acquire,
                Ordering::Relaxed,
            ) {
                Ok(_) => {
                    let index = word_index * 64 + bit as usize;
                    HIGH_WATER.fetch_max(index + 1, std::sync::atomic::Ordering::Release);
                    return Some(index);
                }
                Err(now) => bits = now,
            }
        }
    }
    None
}

#[cfg(not(loom))]
fn release_bit(index: usize) {
    TAKEN[index / 64].fetch_and(!(1 << (index % 64)), Ordering::Release);
    RELEASES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
}

struct SlotOwner(Cell<usize>);

impl Drop for SlotOwner {
    fn drop(&mut self) {
        let index = self.0.get();
        if index == UNASSIGNED {
            return;
        }
        // Recordings made by later thread-local destructors go to the shared
        // slot from now on (and claim none: `SlotOwner` is gone).
        let _ = CURRENT.try_with(|current| current.set(EXITING));
        #[cfg(not(loom))]
        release_bit(index);
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    /// The tests that need every exclusive slot take turns.
    static SLOTS: std::sync::Mutex<()> = std::sync::Mutex::new(());

    #[test]
    fn exiting_threads_give_their_slot_back() {
        let _turn = SLOTS.lock().unwrap_or_else(|e| e.into_inner());
        // More threads than slots, one after another: each must still get an
        // exclusive slot, which is only possible if exited threads freed theirs.
        for _ in 0..THREAD_SLOTS + 64 {
            let slot = std::thread::spawn(|| {
                let slot = current();
                assert_eq!(current(), slot, "a thread's slot is stable");
                slot
            })
            .join()
            .unwrap();
            assert!(slot.exclusive(), "slots must be recycled when threads exit");
        }
    }

    #[test]
    fn a_thread_on_the_shared_slot_moves_to_a_slot_given_back() {
        use std::sync::mpsc;
        let _turn = SLOTS.lock().unwrap_or_else(|e| e.into_inner());
        // Holds every exclusive slot still free, with parked threads.
        let (hold_tx, hold_rx) = mpsc::channel::<()>();
        let hold_rx = std::sync::Arc::new(std::sync::Mutex::new(hold_rx));
        let mut holders = Vec::new();
        let (took_tx, took_rx) = mpsc::channel();
        loop {
            let took_tx = took_tx.clone();
            let hold_rx = hold_rx.clone();
            holders.push(std::thread::spawn(move || {
                let slot = current();
                took_tx.send(slot.exclusive()).unwrap();
                if slot.exclusive() {
                    let _ = hold_rx.lock().unwrap().recv();
                }
            }));
            if !took_rx.recv().unwrap() {
                break;
            }
        }
        let (shared_before, moved_before) = shared_threads();
        let (step_tx, step_rx) = mpsc::channel::<()>();
        let (slot_tx, slot_rx) = mpsc::channel();
        let mover = std::thread::spawn(move || {
            slot_tx.send(current()).unwrap();
            step_rx.recv().unwrap();
            slot_tx.send(current()).unwrap();
        });
        let first = slot_rx.recv().unwrap();
        assert!(!first.exclusive(), "every exclusive slot is held");
        // One holder exits, giving its slot back.
        hold_tx.send(()).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(50));
        step_tx.send(()).unwrap();
        let second = slot_rx.recv().unwrap();
        mover.join().unwrap();
        drop(hold_tx);
        for holder in holders {
            holder.join().unwrap();
        }
        assert!(
            second.exclusive(),
            "the thread moved to the slot given back"
        );
        let (shared_after, moved_after) = shared_threads();
        assert!(shared_after > shared_before && moved_after > moved_before);
    }
}
