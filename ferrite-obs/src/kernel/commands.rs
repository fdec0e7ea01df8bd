//! The kernel view's per-command figures (`commands`, an array the programs
//! add to), mapped into the process, so that commands write and read their
//! own entries with plain memory accesses: no system call, no hash.
//!
//! Protocol (see `struct fo_command` in `ferrite_obs.h`). Command `c` owns
//! entry `c & (COMMAND_SLOTS - 1)` from its beginning: [`begin`] zeroes the
//! figures and then stores `c`, before the command can push a request or be
//! switched out inside a poll, and the programs add only to an entry that
//! names their command. [`figures`] reads the entry back at the command's
//! end. Command ids are handed out in sequence, so an entry is reused only
//! `COMMAND_SLOTS` commands later.
//!
//! The array is mapped and released as a [`Region`].

use std::io;
use std::os::fd::BorrowedFd;
use std::sync::atomic::{AtomicPtr, AtomicU64, Ordering};

use ferrite_obs_bpf::{COMMAND_SLOTS, CommandFigures};

use super::mapped::Region;

/// `struct fo_command` as shared memory: the programs add with atomic
/// instructions while the host reads.
#[repr(C)]
struct Entry {
    command: AtomicU64,
    io_ops: AtomicU64,
    io_ns: AtomicU64,
    blocked_ns: AtomicU64,
    preempted_ns: AtomicU64,
}

const _: () = assert!(size_of::<Entry>() == size_of::<CommandFigures>());

/// Bytes of the table: the array's values, whole pages (640 pages of 4 KiB).
const BYTES: usize = COMMAND_SLOTS * size_of::<Entry>();

/// The mapped table of the loaded view; null while none is mapped.
static TABLE: AtomicPtr<Entry> = AtomicPtr::new(std::ptr::null_mut());
static REGION: Region = Region::new();

/// Maps the `commands` array behind `map`, of load `generation`, and starts
/// using it (in place of an earlier load's, if that one is still mapped).
pub(super) fn install(map: BorrowedFd<'_>, generation: u32) -> io::Result<()> {
    // Published after the mapping: a retirement of an earlier load that
    // runs meanwhile finds this load's mapping and leaves it (and TABLE).
    let table = REGION.install(map, BYTES, generation)?;
    TABLE.store(table.cast(), Ordering::Release);
    Ok(())
}

/// Stops using the table of load `generation` and releases its pages; a
/// later load's table is left alone.
pub(super) fn retire(generation: u32) {
    REGION.retire(generation, || {
        TABLE.store(std::ptr::null_mut(), Ordering::Release);
    });
}

/// The entry of `command` in the mapped table, if one is mapped.
#[inline(always)]
fn entry(command: u64) -> Option<&'static Entry> {
    let table = TABLE.load(Ordering::Acquire);
    if table.is_null() {
        return None;
    }
    // SAFETY: the table holds COMMAND_SLOTS entries, and its range stays
    // mapped (to the table or to anonymous memory) until the process exits.
    Some(unsafe { &*table.add(command as usize & (COMMAND_SLOTS - 1)) })
}

/// Gives `command` its entry, zeroed; a command root calls it as it begins.
#[inline(always)]
pub(super) fn begin(command: u64) {
    if let Some(entry) = entry(command) {
        entry.io_ops.store(0, Ordering::Relaxed);
        entry.io_ns.store(0, Ordering::Relaxed);
        entry.blocked_ns.store(0, Ordering::Relaxed);
        entry.preempted_ns.store(0, Ordering::Relaxed);
        entry.command.store(command, Ordering::Release);
    }
}

/// The kernel's figures of `command` so far, while its entry is its own.
pub(super) fn figures(command: u64) -> Option<CommandFigures> {
    let entry = entry(command)?;
    if entry.command.load(Ordering::Acquire) != command {
        return None;
    }
    let figures = CommandFigures {
        command,
        io_ops: entry.io_ops.load(Ordering::Relaxed),
        io_ns: entry.io_ns.load(Ordering::Relaxed),
        blocked_ns: entry.blocked_ns.load(Ordering::Relaxed),
        preempted_ns: entry.preempted_ns.load(Ordering::Relaxed),
    };
    // Handed to a later command meanwhile: what was read may be its.
    (entry.command.load(Ordering::Acquire) == command).then_some(figures)
}
