//! The kernel view's per-command figures (`commands`, an array the programs
//! add to), mapped into the process, so that commands write and read their
//! own entries with plain memory accesses: no system call, no hash.
//!
//! Protocol (see `struct fo_command` in `ferrite_obs.h`). A command's id
//! carries an index no other live command holds (`core::command`), so
//! command `c` owns entry `c & (COMMAND_SLOTS - 1)` from its beginning to
//! its end. [`begin`] writes each figure word as 0 tagged with `c`'s round,
//! before the command can push a request or be switched out inside a poll;
//! the programs add to a word only while it carries that tag, in one
//! compare-and-exchange. [`figures`] reads the words back at the command's
//! end. Index 0 is no entry: its commands have no figures.
//!
//! The array is mapped and released as a [`Region`].

use std::io;
use std::os::fd::BorrowedFd;
use std::sync::atomic::{AtomicPtr, AtomicU64, Ordering};

use ferrite_obs_bpf::{COMMAND_BITS, COMMAND_SLOTS, CommandFigures};

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
const _: () = assert!(COMMAND_BITS == crate::core::command::INDEX_BITS);

/// Where a figure word's tag starts (`FO_TAG_SHIFT`); below it, the value.
const TAG_SHIFT: u32 = 48;
const VALUE_MASK: u64 = (1 << TAG_SHIFT) - 1;

/// The tag of `command`'s figure words (`fo_command_tag`).
fn tag(command: u64) -> u64 {
    (command >> COMMAND_BITS) & 0xffff
}

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

/// The entry of `command` in the mapped table, if one is mapped and the
/// command has one.
#[inline(always)]
fn entry(command: u64) -> Option<&'static Entry> {
    let index = crate::core::command::index_of(command);
    let table = TABLE.load(Ordering::Acquire);
    if table.is_null() || index == 0 {
        return None;
    }
    // SAFETY: the table holds COMMAND_SLOTS entries, and its range stays
    // mapped (to the table or to anonymous memory) until the process exits.
    Some(unsafe { &*table.add(index) })
}

/// Gives `command` its entry, zeroed; a command root calls it as it begins.
#[inline(always)]
pub(super) fn begin(command: u64) {
    if let Some(entry) = entry(command) {
        let zero = tag(command) << TAG_SHIFT;
        entry.command.store(command, Ordering::Relaxed);
        entry.io_ops.store(zero, Ordering::Relaxed);
        entry.io_ns.store(zero, Ordering::Relaxed);
        entry.blocked_ns.store(zero, Ordering::Relaxed);
        entry.preempted_ns.store(zero, Ordering::Relaxed);
    }
}

/// The kernel's figures of `command` so far, if it has an entry.
pub(super) fn figures(command: u64) -> Option<CommandFigures> {
    let entry = entry(command)?;
    let tag = tag(command);
    let read = |word: &AtomicU64| {
        let word = word.load(Ordering::Relaxed);
        (word >> TAG_SHIFT == tag).then_some(word & VALUE_MASK)
    };
    Some(CommandFigures {
        command,
        io_ops: read(&entry.io_ops)?,
        io_ns: read(&entry.io_ns)?,
        blocked_ns: read(&entry.blocked_ns)?,
        preempted_ns: read(&entry.preempted_ns)?,
    })
}

/// In a forked child: stops using the table, whose pages the parent still
/// shares (see `crate::fork`).
pub(super) fn forget_in_child() {
    TABLE.store(std::ptr::null_mut(), Ordering::Release);
    REGION.forget_in_child();
}
