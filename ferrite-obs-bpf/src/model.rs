//! The attribution decisions of `bpf/ferrite_obs.bpf.c` as pure functions,
//! for tests that drive them through long simulated histories
//! (`tests/attribution_model.rs`).
//!
//! [`consume_slot`] mirrors `consume_slot`, [`submit`] mirrors `fo_submit`,
//! [`failed`] mirrors `fo_failed` and [`complete`] mirrors `fo_complete`,
//! line for line, in the same order, with the maps they touch passed in and
//! handed back. They are a copy of the C by hand, so they must change with
//! it: a change to any of these programs that is not made here too leaves
//! the model testing something the kernel no longer runs.

use crate::{Counter, Inflight, SLOTS, Slot};

/// The index of `user_data`'s entry in a slot table: `user_data & (FO_SLOTS - 1)`.
pub fn slot_index(user_data: u64) -> usize {
    (user_data & (SLOTS as u64 - 1)) as usize
}

/// What `consume_slot` finds when it looks for the submitting thread's slot.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SlotRead {
    /// The thread is not in `threads`, or registered no slot table
    /// (`!thread || !thread->slots`).
    NoTable,
    /// The lookup of the slot in `slots` found nothing (a registration
    /// naming a table beyond `slot_tables`: the host never writes one).
    Fault,
    /// The slot at [`slot_index`] of the SQE's `user_data`.
    Slot(Slot),
}

/// What `consume_slot` decides for one SQE.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Consumption {
    /// The value returned: the command the SQE is attributed to, 0 for none.
    pub command: u64,
    /// `*kind` (left as the caller set it, 0, unless the slot is used).
    pub kind: u32,
    /// The thread's `last_seq` (`thread->last_seq`, in its `threads`
    /// entry) after the decision: the slot's `seq` when the slot is used,
    /// unchanged otherwise.
    pub last_seq: u64,
    /// Why the slot was not used, when one was read but not used:
    /// [`Counter::ReadFaults`], [`Counter::SlotMismatch`] or
    /// [`Counter::StaleSlots`], as counted.
    pub rejected: Option<Counter>,
}

/// `consume_slot(tid, user_data, &kind)` for the SQE carrying `user_data`,
/// given what it reads from the submitting thread's slot table, the load's
/// `generation` constant and the thread's `last_seq` (its `threads` entry's;
/// neither read nor written when there is no table, [`SlotRead::NoTable`]).
pub fn consume_slot(read: SlotRead, user_data: u64, generation: u32, last_seq: u64) -> Consumption {
    let unused = |rejected| Consumption {
        command: 0,
        kind: 0,
        last_seq,
        rejected,
    };
    let slot = match read {
        // if (!thread || !thread->slots) return 0;
        SlotRead::NoTable => return unused(None),
        // if (!entry) { count(FO_C_READ_FAULTS); return 0; }
        SlotRead::Fault => return unused(Some(Counter::ReadFaults)),
        SlotRead::Slot(slot) => slot,
    };
    // if (slot.user_data != user_data || slot.generation != generation)
    //         { count(FO_C_SLOT_MISMATCH); return 0; }
    if slot.user_data != user_data || slot.generation != generation {
        return unused(Some(Counter::SlotMismatch));
    }
    // if (slot.seq <= thread->last_seq) { count(FO_C_STALE_SLOTS); return 0; }
    if slot.seq <= last_seq {
        return unused(Some(Counter::StaleSlots));
    }
    // thread->last_seq = slot.seq;
    // *kind = slot.kind; return slot.command;
    Consumption {
        command: slot.command,
        kind: slot.kind,
        last_seq: slot.seq,
        rejected: None,
    }
}

/// What `fo_submit` decides for one submitted request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Submission {
    /// `request.command`: the command the request is attributed to, 0 for
    /// none.
    pub command: u64,
    /// `request.kind`.
    pub kind: u32,
    /// The thread's `last_seq` after the decision (see [`Consumption`]).
    pub last_seq: u64,
    /// Why the slot was not used, when it was not: [`Counter::ReadFaults`],
    /// [`Counter::SlotMismatch`] or [`Counter::StaleSlots`].
    pub rejected: Option<Counter>,
    /// [`Counter::Attributed`] or [`Counter::Unattributed`], as counted.
    pub counted: Counter,
}

/// `fo_submit`'s decision for the request carrying `user_data`, given what
/// `consume_slot` reads from the slot table, the load's `generation` and the
/// submitting thread's `last_seq`. Mirrors the C from
/// `count(FO_C_SUBMITTED)` to the counting of attributed and unattributed
/// requests.
pub fn submit(read: SlotRead, user_data: u64, generation: u32, last_seq: u64) -> Submission {
    // request.command = consume_slot(tid, tp->user_data, &request.kind);
    let consumed = consume_slot(read, user_data, generation, last_seq);
    // count(request.command ? FO_C_ATTRIBUTED : FO_C_UNATTRIBUTED);
    let counted = if consumed.command != 0 {
        Counter::Attributed
    } else {
        Counter::Unattributed
    };
    Submission {
        command: consumed.command,
        kind: consumed.kind,
        last_seq: consumed.last_seq,
        rejected: consumed.rejected,
        counted,
    }
}

/// `fo_failed` for an SQE carrying `user_data` that failed before
/// `io_uring_submit_req`: counted as [`Counter::Failed`], never as submitted,
/// attributed or unattributed, yet it consumes its slot exactly like a
/// submitted one (the command found is dropped). Arguments as [`submit`].
pub fn failed(read: SlotRead, user_data: u64, generation: u32, last_seq: u64) -> Consumption {
    // count(FO_C_FAILED);
    // __u32 kind = 0;
    // consume_slot(tid, tp->user_data, &kind);
    consume_slot(read, user_data, generation, last_seq)
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
