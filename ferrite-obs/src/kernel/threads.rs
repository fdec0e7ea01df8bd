//! Per-thread attribution state the kernel programs read: each thread's slot
//! table (user_data -> command, written by [`tag_as`]) and its
//! current-command cell, registered in the `registrations` array (mapped
//! into the process, direct-mapped by thread id) or, when another thread
//! holds its entry there, in the `threads` map.
//!
//! Protocol. While a kernel view is loaded, [`GENERATION`] holds its non-zero
//! generation and [`REGISTRAR`] the descriptor of its `threads` map and its
//! slot tables: the `slots` array, mapped into the process (a
//! [`Region`]), one table of `SLOTS` entries per thread that tags SQEs. A
//! thread registers itself (a few stores into its `registrations` entry,
//! or one `bpf(BPF_MAP_UPDATE_ELEM)` of `threads`) the first time it enters
//! a command's poll or tags an SQE under a generation, taking a
//! table (zeroed) the first time it tags, and notes that generation, so the
//! hot path is one relaxed load and a compare. A thread writes no slot while
//! unregistered or without a table: its SQEs count as unattributed. The
//! registrar is read under [`WRITING`], shared by registering threads and
//! taken exclusively to install or uninstall a load, so a thread never
//! writes a registration or zeroes a table of a load that is gone (whose
//! address range the next load may have reused). At thread exit the
//! state's destructor removes the registration, then gives its table back.
//!
//! Only the owning thread writes its table and its cell, and the programs
//! read them from that thread's own context (its io_uring_enter, its
//! switch-out), after the writes in program order: no synchronisation is
//! needed beyond the syscall boundary. A table's address stays valid after
//! its load is gone (see [`Region`]), so a thread that wrote to it just as
//! the view unloaded wrote to memory nobody reads.

use std::cell::Cell;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use arc_swap::ArcSwapOption;
use ferrite_obs_bpf::{REGISTRATIONS, Registration, SLOTS, Slot, SwitchOut, ThreadRegistration};

use super::mapped::Region;

type Table = [Slot; SLOTS];

/// The generation of the loaded kernel view; 0 while none is loaded.
static GENERATION: AtomicU64 = AtomicU64::new(0);
static NEXT_GENERATION: AtomicU64 = AtomicU64::new(1);
/// The `threads` map and slot tables of the loaded kernel view.
static REGISTRAR: ArcSwapOption<Registrar> = ArcSwapOption::const_empty();
/// Held (shared) by a thread while it writes its registration or takes or
/// gives back a table, and (exclusive) while a load is installed or
/// uninstalled: a thread that loaded an unloading view's registrar cannot
/// write into that view's arrays after the next load has been mapped in
/// their place.
static WRITING: RwLock<()> = RwLock::new(());
/// Where the slot tables and the registrations are mapped.
static TABLES: Region = Region::new();
static REGISTRATION_ARRAY: Region = Region::new();
/// Set in a forked child: the registrations and the `threads` map are the
/// parent's, and no thread of the child may touch them, even as it exits.
static FORKED: AtomicBool = AtomicBool::new(false);

/// `struct fo_registration` as shared memory: the programs write `last_seq`
/// and `switched` (a pending switch-out: at, command, kind and blocked).
#[repr(C)]
struct Entry {
    table: AtomicU64,
    current: AtomicU64,
    last_seq: AtomicU64,
    switched: [AtomicU64; 3],
    tid: AtomicU32,
    _pad: u32,
}

const _: () = assert!(size_of::<Entry>() == size_of::<Registration>());

struct Registrar {
    threads_map: OwnedFd,
    generation: u32,
    /// The first table (`tables` of them follow), as a number: the range
    /// stays mapped for the life of the process.
    base: usize,
    tables: u32,
    /// The `registrations` array, as a number (mapped for good, as `base`).
    registrations: usize,
    /// Tables never handed out start at `fresh`; `returned` were given back.
    free: Mutex<Free>,
    /// Threads that tagged an SQE but found every table taken.
    refused: AtomicU64,
    /// Threads the `threads` map refused (full): unregistered for this load.
    unregistered: AtomicU64,
}

struct Free {
    fresh: u32,
    returned: Vec<u32>,
}

impl Registrar {
    /// A table for a thread, zeroed, or `None` when all are taken.
    fn take_table(&self) -> Option<(u32, *mut Table)> {
        let index = {
            let mut free = self.free.lock().unwrap_or_else(|e| e.into_inner());
            match free.returned.pop() {
                Some(index) => index,
                None if free.fresh < self.tables => {
                    free.fresh += 1;
                    free.fresh - 1
                }
                None => return None,
            }
        };
        let table = (self.base as *mut Table).wrapping_add(index as usize);
        // SAFETY: `index` is below `tables`, so the table lies in the mapped
        // range, and no registration names it (a thread gives its table
        // back after removing its registration), so nothing reads it now.
        unsafe { std::ptr::write_bytes(table, 0, 1) };
        Some((index, table))
    }

    /// Thread `tid`'s entry of `registrations`, whoever holds it.
    fn entry(&self, tid: u32) -> &Entry {
        let index = tid as usize & (REGISTRATIONS - 1);
        // SAFETY: `index` is below REGISTRATIONS, the array's length, and
        // its range stays mapped for the life of the process.
        unsafe { &*(self.registrations as *const Entry).add(index) }
    }

    /// Thread `tid`'s entry of `registrations`, if it is free or already
    /// the thread's; claimed for it.
    fn claim(&self, tid: u32) -> Option<&Entry> {
        let entry = self.entry(tid);
        match entry
            .tid
            .compare_exchange(0, tid, Ordering::AcqRel, Ordering::Acquire)
        {
            Ok(_) => Some(entry),
            Err(owner) if owner == tid => Some(entry),
            Err(_) => None,
        }
    }

    fn give_back(&self, index: u32) {
        let mut free = self.free.lock().unwrap_or_else(|e| e.into_inner());
        free.returned.push(index);
    }
}

/// A new generation for the next load: the programs get it as a load-time
/// constant, and slots written under another one are never trusted.
pub(super) fn reserve_generation() -> u32 {
    // Wrapping past u32::MAX would take four billion loads.
    NEXT_GENERATION.fetch_add(1, Ordering::Relaxed) as u32
}

/// Maps the `tables` slot tables of the `slots` array and the
/// `registrations` array, and starts registering threads under
/// `generation`.
pub(super) fn install(
    threads_map: OwnedFd,
    generation: u32,
    slots: BorrowedFd<'_>,
    tables: u32,
    registrations_map: BorrowedFd<'_>,
) -> io::Result<()> {
    let bytes = tables as usize * std::mem::size_of::<Table>();
    let base = TABLES.install(slots, bytes, generation)? as usize;
    let bytes = REGISTRATIONS * std::mem::size_of::<Entry>();
    let registrations = match REGISTRATION_ARRAY.install(registrations_map, bytes, generation) {
        Ok(address) => address as usize,
        Err(e) => {
            TABLES.retire(generation, || {});
            return Err(e);
        }
    };
    let _writing = WRITING.write().unwrap_or_else(|e| e.into_inner());
    REGISTRAR.store(Some(Arc::new(Registrar {
        threads_map,
        generation,
        base,
        tables,
        registrations,
        free: Mutex::new(Free {
            fresh: 0,
            returned: Vec::new(),
        }),
        refused: AtomicU64::new(0),
        unregistered: AtomicU64::new(0),
    })));
    GENERATION.store(u64::from(generation), Ordering::Release);
    Ok(())
}

/// Stops registering threads into the map of load `generation`, closes it
/// (once no thread is using it) and releases its slot tables. A later load
/// that has installed itself meanwhile (a runtime dropped without
/// `shutdown` unloads in the background, possibly after the next one
/// started) is left alone.
pub(super) fn uninstall(generation: u32) {
    let _writing = WRITING.write().unwrap_or_else(|e| e.into_inner());
    let _ = GENERATION.compare_exchange(
        u64::from(generation),
        0,
        Ordering::AcqRel,
        Ordering::Relaxed,
    );
    let current = REGISTRAR.load();
    if current.as_ref().is_some_and(|r| r.generation == generation) {
        REGISTRAR.compare_and_swap(&*current, None);
    }
    TABLES.retire(generation, || {});
    REGISTRATION_ARRAY.retire(generation, || {});
}

/// Threads that tagged SQEs under the loaded view but found every slot
/// table taken: their SQEs count as unattributed.
pub(super) fn refused() -> u64 {
    REGISTRAR
        .load()
        .as_ref()
        .map_or(0, |registrar| registrar.refused.load(Ordering::Relaxed))
}

/// Threads that could not register under the loaded view (its entry of
/// `registrations` taken and the `threads` map full): nothing of theirs is
/// attributed, and they do not try again under that load.
pub(super) fn unregistered() -> u64 {
    REGISTRAR.load().as_ref().map_or(0, |registrar| {
        registrar.unregistered.load(Ordering::Relaxed)
    })
}

/// A thread's attribution state.
struct ThreadState {
    /// The generation this thread registered under; 0: none. Under it, the
    /// registration is in `registrations` if `claimed` is that generation,
    /// in `threads` otherwise.
    registered: Cell<u64>,
    claimed: Cell<u64>,
    /// The thread's slot table and its index, valid under `table_generation`.
    table: Cell<*mut Table>,
    table_index: Cell<u32>,
    table_generation: Cell<u64>,
    /// The generation under which no table was left for this thread.
    refused: Cell<u64>,
    /// The generation whose `threads` map refused this thread: it stays
    /// unregistered under it, and never retries (a lock and a system call
    /// on every command's poll).
    unregistered: Cell<u64>,
    /// The sequence number of the next slot written. The programs keep the
    /// last one they read in the thread's registration (reset to 0 by every
    /// registration), so it starts at 1.
    seq: Cell<u64>,
}

thread_local! {
    static THREAD: ThreadState = const {
        ThreadState {
            registered: Cell::new(0),
            claimed: Cell::new(0),
            table: Cell::new(std::ptr::null_mut()),
            table_index: Cell::new(0),
            table_generation: Cell::new(0),
            refused: Cell::new(0),
            unregistered: Cell::new(0),
            seq: Cell::new(1),
        }
    };
}

/// On a thread entering a command: registers it if it is not yet. Returns
/// the sequence number of the next slot the thread writes (for
/// [`tag_as`]'s `since`), or `None` while no kernel view is loaded.
#[inline(always)]
pub(super) fn enter_command() -> Option<u64> {
    let generation = GENERATION.load(Ordering::Relaxed);
    if generation == 0 {
        return None;
    }
    THREAD
        .try_with(|state| {
            if state.registered.get() != generation && state.unregistered.get() != generation {
                state.register(generation, false);
            }
            state.seq.get()
        })
        .ok()
}

/// Writes the slot of `user_data` with the thread's current command.
#[inline]
pub(super) fn tag(user_data: u64) {
    if GENERATION.load(Ordering::Relaxed) != 0 {
        let (command, kind) = crate::core::command::current_with_kind();
        tag_as(user_data, command, kind, u64::MAX);
    }
}

/// Writes the slot of `user_data` with `command` of `kind`, unless the
/// thread wrote it for the same `user_data` at sequence `since` or later: a
/// command root polled inside the command's poll already tagged that SQE as
/// its own.
#[inline]
pub(super) fn tag_as(user_data: u64, command: u64, kind: u32, since: u64) {
    let generation = GENERATION.load(Ordering::Relaxed);
    if generation == 0 {
        return;
    }
    let _ = THREAD.try_with(|state| {
        if !state.ready(generation) {
            if state.refused.get() == generation || state.unregistered.get() == generation {
                return;
            }
            state.register(generation, true);
            // Unregistered (the map refused the thread) or no table left:
            // the SQE counts as unattributed.
            if !state.ready(generation) {
                return;
            }
        }
        let table = state.table.get();
        // SAFETY: `table` is this thread's table of this generation's
        // mapped array, whose range stays mapped for the life of the
        // process; only this thread writes it.
        let slot = unsafe { &mut (*table)[(user_data as usize) & (SLOTS - 1)] };
        if slot.user_data == user_data && slot.seq >= since {
            return;
        }
        let seq = state.seq.get();
        state.seq.set(seq + 1);
        *slot = Slot {
            user_data,
            command,
            seq,
            kind,
            generation: generation as u32,
        };
    });
}

impl ThreadState {
    /// Whether the thread is registered under `generation` with a table.
    #[inline(always)]
    fn ready(&self, generation: u64) -> bool {
        self.registered.get() == generation && self.table_generation.get() == generation
    }

    /// Registers the thread under `generation`, with its table, taking one
    /// first if `want_table` and it has none of this generation.
    #[cold]
    #[inline(never)]
    fn register(&self, generation: u64, want_table: bool) {
        let _writing = WRITING.read().unwrap_or_else(|e| e.into_inner());
        let Some(registrar) = REGISTRAR.load_full() else {
            return;
        };
        if u64::from(registrar.generation) != generation {
            return;
        }
        if want_table && self.table_generation.get() != generation {
            match registrar.take_table() {
                Some((index, table)) => {
                    self.table.set(table);
                    self.table_index.set(index);
                    self.table_generation.set(generation);
                }
                None => {
                    self.refused.set(generation);
                    registrar.refused.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
        let table = if self.table_generation.get() == generation {
            u64::from(self.table_index.get()) + 1
        } else {
            0
        };
        let registration = ThreadRegistration {
            table,
            current: crate::core::command::current_cell_address(),
            last_seq: 0,
            switched: SwitchOut::default(),
        };
        let tid = gettid();
        // The thread's entry of `registrations`, unless another thread holds
        // it, or this one registered in `threads` already under this load
        // (it stays there: the programs look in the array first).
        let in_threads = self.registered.get() == generation && self.claimed.get() != generation;
        if !in_threads && let Some(entry) = registrar.claim(tid) {
            entry.table.store(registration.table, Ordering::Relaxed);
            entry.current.store(registration.current, Ordering::Relaxed);
            entry.last_seq.store(0, Ordering::Relaxed);
            for word in &entry.switched {
                word.store(0, Ordering::Relaxed);
            }
            self.claimed.set(generation);
            self.registered.set(generation);
            return;
        }
        // A failed update (map full) leaves the thread unregistered under
        // this load, counted: its requests count as unattributed.
        if update(&registrar.threads_map, tid, &registration) {
            self.registered.set(generation);
        } else {
            self.unregistered.set(generation);
            registrar.unregistered.fetch_add(1, Ordering::Relaxed);
        }
    }
}

impl Drop for ThreadState {
    fn drop(&mut self) {
        // In a forked child, the state is a copy of the forking parent
        // thread's: its registration and table are that thread's.
        if FORKED.load(Ordering::Relaxed) {
            return;
        }
        let _writing = WRITING.read().unwrap_or_else(|e| e.into_inner());
        let Some(registrar) = REGISTRAR.load_full() else {
            return;
        };
        let generation = u64::from(registrar.generation);
        if self.registered.get() == generation {
            let tid = gettid();
            if self.claimed.get() == generation {
                let entry = registrar.entry(tid);
                // Only while it is still this thread's.
                if entry.tid.load(Ordering::Acquire) == tid {
                    entry.table.store(0, Ordering::Relaxed);
                    entry.current.store(0, Ordering::Relaxed);
                    entry.tid.store(0, Ordering::Release);
                }
            } else {
                delete(&registrar.threads_map, tid);
            }
        }
        // After the registration is gone: no program reads the table now.
        if self.table_generation.get() == generation {
            registrar.give_back(self.table_index.get());
        }
    }
}

fn gettid() -> u32 {
    // SAFETY: gettid has no preconditions and cannot fail.
    let tid = unsafe { libc::syscall(libc::SYS_gettid) };
    tid as u32
}

/// `union bpf_attr` for the map element commands.
#[repr(C)]
struct ElemAttr {
    map_fd: u32,
    _pad: u32,
    key: u64,
    value: u64,
    flags: u64,
}

const BPF_MAP_UPDATE_ELEM: libc::c_long = 2;
const BPF_MAP_DELETE_ELEM: libc::c_long = 3;

fn update(map: &OwnedFd, tid: u32, value: &ThreadRegistration) -> bool {
    let attr = ElemAttr {
        map_fd: map.as_raw_fd() as u32,
        _pad: 0,
        key: std::ptr::from_ref(&tid) as u64,
        value: std::ptr::from_ref(value) as u64,
        flags: 0, // BPF_ANY
    };
    bpf(BPF_MAP_UPDATE_ELEM, &attr)
}

fn delete(map: &OwnedFd, tid: u32) {
    let attr = ElemAttr {
        map_fd: map.as_raw_fd() as u32,
        _pad: 0,
        key: std::ptr::from_ref(&tid) as u64,
        value: 0,
        flags: 0,
    };
    bpf(BPF_MAP_DELETE_ELEM, &attr);
}

fn bpf(command: libc::c_long, attr: &ElemAttr) -> bool {
    // SAFETY: `attr` is a valid bpf_attr prefix for the element commands,
    // its key and value point at live values of the map's sizes, and the
    // size passed is the struct's.
    let result = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            command,
            std::ptr::from_ref(attr),
            std::mem::size_of::<ElemAttr>(),
        )
    };
    result == 0
}

/// In a forked child: stops registering threads and tagging SQEs, and
/// replaces the registrations and slot tables, whose pages the parent still
/// shares, with private memory (see `crate::fork`).
pub(super) fn forget_in_child() {
    FORKED.store(true, Ordering::Relaxed);
    GENERATION.store(0, Ordering::Relaxed);
    TABLES.forget_in_child();
    REGISTRATION_ARRAY.forget_in_child();
}
