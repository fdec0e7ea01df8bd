//! The attribution decisions of `bpf/ferrite_obs.bpf.c` as pure functions,
//! for tests that drive them through long simulated histories
//! (`tests/attribution_model.rs`).
//!
//! [`submit`] mirrors `fo_submit` and [`complete`] mirrors `fo_complete`
//! line for line, in the same order, with the maps they touch passed in and
//! handed back. They are a copy of the C by hand, so they must change with
//! it: a change to either program that is not made here too leaves the
//! model testing something the kernel no longer runs.

use crate::{Counter, Inflight, SLOTS, Slot};

/// The index of `user_data`'s entry in a slot table: `user_data & (FO_SLOTS - 1)`.
pub fn slot_index(user_data: u64) -> usize {
    (user_data & (SLOTS as u64 - 1)) as usize
}

/// What `fo_submit` finds when it looks for the submitting thread's slot.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SlotRead {
    /// The thread is not in `threads`, or registered no slot table
    /// (`!thread || !thread->slots`).
    NoTable,
    /// `bpf_probe_read_user` of the slot failed.
    Fault,
    /// The slot at [`slot_index`] of the submitted `user_data`.
    Slot(Slot),
}

/// What `fo_submit` decides for one submitted request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Submission {
    /// `request.command`: the command the request is attributed to, 0 for
    /// none.
    pub command: u64,
    /// `request.kind`.
    pub kind: u32,
    /// The ring's `ring_seq` entry after the decision (`None`: still absent).
    pub ring_seq: Option<u64>,
    /// Why the slot was not used, when it was not: [`Counter::ReadFaults`],
    /// [`Counter::SlotMismatch`] or [`Counter::StaleSlots`].
    pub rejected: Option<Counter>,
    /// [`Counter::Attributed`] or [`Counter::Unattributed`], as counted.
    pub counted: Counter,
}

/// `fo_submit`'s decision for the request carrying `user_data`, given what
/// it read from the slot table and the ring's `ring_seq` entry (`None`:
/// absent). Mirrors the C from the `threads` lookup to the counting of
/// attributed and unattributed requests.
pub fn submit(read: SlotRead, user_data: u64, ring_seq: Option<u64>) -> Submission {
    let mut command = 0;
    let mut kind = 0;
    let mut last = ring_seq;
    let mut rejected = None;
    // if (thread && thread->slots) {
    match read {
        SlotRead::NoTable => {}
        // if (bpf_probe_read_user(...) != 0) count(FO_C_READ_FAULTS);
        SlotRead::Fault => rejected = Some(Counter::ReadFaults),
        // else if (slot.user_data != user_data) count(FO_C_SLOT_MISMATCH);
        SlotRead::Slot(slot) if slot.user_data != user_data => {
            rejected = Some(Counter::SlotMismatch);
        }
        SlotRead::Slot(slot) => match ring_seq {
            // if (last && slot.seq <= *last) count(FO_C_STALE_SLOTS);
            Some(seq) if slot.seq <= seq => rejected = Some(Counter::StaleSlots),
            // else { request.command = ...; request.kind = ...; *last = slot.seq
            //        (or insert it when absent) }
            _ => {
                command = slot.command;
                kind = slot.kind;
                last = Some(slot.seq);
            }
        },
    }
    // count(request.command ? FO_C_ATTRIBUTED : FO_C_UNATTRIBUTED);
    let counted = if command != 0 {
        Counter::Attributed
    } else {
        Counter::Unattributed
    };
    Submission {
        command,
        kind,
        ring_seq: last,
        rejected,
        counted,
    }
}

/// `IORING_CQE_F_MORE`: the request stays in flight (multishot).
pub const CQE_F_MORE: u32 = 1 << 1;

/// What `fo_complete` does with one completion.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Completion {
    /// No tracked request of that ring at that address: nothing is counted.
    Untracked,
    /// The request submitted at that address, as `inflight` held it: its
    /// figures go to `request.command` and `request.kind`.
    Tracked {
        /// The `inflight` entry.
        request: Inflight,
        /// Whether the entry stays (multishot, with `punted` cleared)
        /// rather than being deleted.
        stays: bool,
    },
}

/// `fo_complete`'s decision for a completion of the request at `req` on the
/// ring `ctx`, given the `inflight` entry at `req` (`found`). Mirrors the C
/// up to the deletion of the entry; what follows only aggregates `request`.
pub fn complete(req: u64, found: Option<&Inflight>, ctx: u64, cflags: u32) -> Completion {
    // if (!req) return 0;
    if req == 0 {
        return Completion::Untracked;
    }
    // if (!found || found->ctx != ctx) return 0;
    let Some(found) = found.filter(|found| found.ctx == ctx) else {
        return Completion::Untracked;
    };
    // if (cflags & CQE_F_MORE) found->punted = 0; else delete;
    Completion::Tracked {
        request: *found,
        stays: cflags & CQE_F_MORE != 0,
    }
}
