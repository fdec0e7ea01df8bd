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
//! Lifetime. A thread may hold the table's address while the view unloads,
//! so unloading never unmaps the range: [`retire`] maps fresh anonymous
//! memory over it (`MAP_FIXED`), which releases the map's pages (the map is
//! freed with its last descriptor) while a late write lands in memory that
//! nobody reads. The range stays reserved, and the next load maps its own
//! table onto it.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};
use std::sync::Mutex;
use std::sync::atomic::{AtomicPtr, AtomicU64, Ordering};

use ferrite_obs_bpf::{COMMAND_SLOTS, CommandFigures};

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
/// The address range reserved for tables, and the load mapped there.
static RANGE: Mutex<Range> = Mutex::new(Range {
    address: 0,
    mapped: None,
});

struct Range {
    /// 0: none reserved yet.
    address: usize,
    /// The generation of the load whose table is mapped there, if one is.
    mapped: Option<u32>,
}

/// Maps the `commands` array behind `map`, of load `generation`, and starts
/// using it (in place of an earlier load's, if that one is still mapped).
pub(super) fn install(map: BorrowedFd<'_>, generation: u32) -> io::Result<()> {
    let mut range = RANGE.lock().unwrap_or_else(|e| e.into_inner());
    let (hint, fixed) = match range.address {
        0 => (std::ptr::null_mut(), 0),
        address => (address as *mut libc::c_void, libc::MAP_FIXED),
    };
    // SAFETY: maps the array's pages over our own reserved range (or a new
    // one); nothing else lives there.
    let address = unsafe {
        libc::mmap(
            hint,
            BYTES,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED | fixed,
            map.as_raw_fd(),
            0,
        )
    };
    if address == libc::MAP_FAILED {
        return Err(io::Error::last_os_error());
    }
    range.address = address as usize;
    range.mapped = Some(generation);
    TABLE.store(address.cast(), Ordering::Release);
    Ok(())
}

/// Stops using the table of load `generation` and releases its pages,
/// keeping the range. A later load's table mapped there meanwhile (a
/// runtime dropped without `shutdown` unloads in the background, possibly
/// after the next one started) is left alone.
pub(super) fn retire(generation: u32) {
    let mut range = RANGE.lock().unwrap_or_else(|e| e.into_inner());
    if range.mapped != Some(generation) {
        return;
    }
    TABLE.store(std::ptr::null_mut(), Ordering::Release);
    // SAFETY: replaces our own mapping, in place, with zeroed private memory.
    let address = unsafe {
        libc::mmap(
            range.address as *mut libc::c_void,
            BYTES,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_FIXED,
            -1,
            0,
        )
    };
    // On failure the map's pages stay mapped (and the map alive) rather
    // than pull memory from under a thread that may still write to it.
    if address != libc::MAP_FAILED {
        range.mapped = None;
    }
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
