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
//! shards are written with atomic read-modify-write instructions.

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
    /// Gives the slot back when the thread exits.
    static OWNER: SlotOwner = const { SlotOwner(Cell::new(UNASSIGNED)) };
}

/// The calling thread's slot, claiming one on first use.
#[cfg(not(loom))]
#[inline(always)]
pub(crate) fn current() -> ThreadSlot {
    let index = CURRENT.get();
    if index != UNASSIGNED {
        return ThreadSlot::new(index);
    }
    claim()
}

#[cfg(not(loom))]
#[cold]
#[inline(never)]
fn claim() -> ThreadSlot {
    let Some(index) = claim_bit() else {
        CURRENT.set(SHARED);
        return ThreadSlot::new(SHARED);
    };
    // Registering the owner fails only while the thread's locals are being
    // destroyed; the slot could then never be given back, so do not keep it.
    if OWNER.try_with(|owner| owner.0.set(index)).is_err() {
        release_bit(index);
        CURRENT.set(SHARED);
        return ThreadSlot::new(SHARED);
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
}

struct SlotOwner(Cell<usize>);

impl Drop for SlotOwner {
    fn drop(&mut self) {
        let index = self.0.get();
        if index == UNASSIGNED {
            return;
        }
        // Recordings made by later thread-local destructors go to the shared
        // slot from now on.
        let _ = CURRENT.try_with(|current| current.set(SHARED));
        #[cfg(not(loom))]
        release_bit(index);
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn exiting_threads_give_their_slot_back() {
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
}
