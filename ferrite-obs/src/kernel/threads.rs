//! Per-thread attribution state the kernel programs read: each thread's slot
//! table (user_data -> command, written by [`tag`]) and its current-command
//! cell, registered by address in the `threads` map.
//!
//! Protocol. While a kernel view is loaded, [`GENERATION`] holds its non-zero
//! generation and [`REGISTRAR`] the descriptor of its `threads` map. A thread
//! registers itself (one `bpf(BPF_MAP_UPDATE_ELEM)`) the first time it enters
//! a command's poll or tags an SQE under a generation, and notes that
//! generation, so the hot path is one relaxed load and a compare. The
//! registrar is an `Arc` loaded through arc-swap, so a thread registering
//! while the view unloads uses a descriptor that stays open until it is done
//! (and then updates a map nobody reads). At thread exit the state's
//! destructor removes the registration before freeing the table, so the
//! programs never read freed memory through a live registration.
//!
//! Only the owning thread writes its table and its cell, and the programs
//! read them from that thread's own context (its io_uring_enter, its
//! switch-out), after the writes in program order: no synchronisation is
//! needed beyond the syscall boundary.

use std::cell::Cell;
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use arc_swap::ArcSwapOption;
use ferrite_obs_bpf::{SLOTS, Slot, ThreadRegistration};

/// The generation of the loaded kernel view; 0 while none is loaded.
static GENERATION: AtomicU64 = AtomicU64::new(0);
static NEXT_GENERATION: AtomicU64 = AtomicU64::new(1);
/// The `threads` map of the loaded kernel view.
static REGISTRAR: ArcSwapOption<Registrar> = ArcSwapOption::const_empty();

#[derive(Debug)]
struct Registrar {
    threads_map: OwnedFd,
    generation: u32,
}

/// A new generation for the next load: the programs get it as a load-time
/// constant, and slots written under another one are never trusted.
pub(super) fn reserve_generation() -> u32 {
    // Wrapping past u32::MAX would take four billion loads.
    NEXT_GENERATION.fetch_add(1, Ordering::Relaxed) as u32
}

/// Starts registering threads into `threads_map` under `generation`.
pub(super) fn install(threads_map: OwnedFd, generation: u32) {
    REGISTRAR.store(Some(Arc::new(Registrar {
        threads_map,
        generation,
    })));
    GENERATION.store(u64::from(generation), Ordering::Release);
}

/// Stops registering threads into the map of load `generation` and closes
/// it (once no thread is using it). A later load that has installed itself
/// meanwhile (a runtime dropped without `shutdown` unloads in the
/// background, possibly after the next one started) is left alone.
pub(super) fn uninstall(generation: u32) {
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
}

/// A thread's attribution state.
struct ThreadState {
    /// The generation this thread registered under; 0: none.
    registered: Cell<u64>,
    /// Whether the registration includes the slot table.
    registered_slots: Cell<bool>,
    /// The slot table, allocated on the first tag; null until then.
    slots: Cell<*mut [Slot; SLOTS]>,
    /// The sequence number of the next slot written. The programs keep the
    /// last one they read in the thread's registration (reset to 0 by every
    /// registration), so it starts at 1.
    seq: Cell<u64>,
}

thread_local! {
    static THREAD: ThreadState = const {
        ThreadState {
            registered: Cell::new(0),
            registered_slots: Cell::new(false),
            slots: Cell::new(std::ptr::null_mut()),
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
            if state.registered.get() != generation {
                state.register(generation);
            }
            state.seq.get()
        })
        .ok()
}

/// Writes the slot of `user_data` with the thread's current command.
#[inline]
pub(super) fn tag(user_data: u64) {
    if GENERATION.load(Ordering::Relaxed) != 0 {
        let (command, kind) = crate::command::current_with_kind();
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
        let table = state.table();
        if state.registered.get() != generation || !state.registered_slots.get() {
            state.register(generation);
        }
        // Unregistered (the map refused the thread): a slot written now
        // would be trusted once a later registration succeeds, for an SQE
        // the kernel never read it for. Generation 0 is never trusted.
        let generation = if state.registered.get() == generation && state.registered_slots.get() {
            generation
        } else {
            0
        };
        // SAFETY: `table` is this thread's own allocation, alive until the
        // thread-local is destroyed, and only this thread touches it here.
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
    /// The slot table, allocated on first use.
    fn table(&self) -> *mut [Slot; SLOTS] {
        let table = self.slots.get();
        if !table.is_null() {
            return table;
        }
        let table = Box::into_raw(Box::new([Slot::default(); SLOTS]));
        self.slots.set(table);
        table
    }

    #[cold]
    #[inline(never)]
    fn register(&self, generation: u64) {
        let Some(registrar) = REGISTRAR.load_full() else {
            return;
        };
        let registration = ThreadRegistration {
            slots: self.slots.get() as u64,
            current: crate::command::current_cell_address(),
            last_seq: 0,
        };
        // A failed update (map full) leaves the thread unregistered: its
        // requests count as unattributed, and the next poll tries again.
        if update(&registrar.threads_map, gettid(), &registration) {
            self.registered.set(generation);
            self.registered_slots.set(registration.slots != 0);
        }
    }
}

impl Drop for ThreadState {
    fn drop(&mut self) {
        if self.registered.get() != 0
            && let Some(registrar) = REGISTRAR.load_full()
        {
            delete(&registrar.threads_map, gettid());
        }
        let table = self.slots.replace(std::ptr::null_mut());
        if !table.is_null() {
            // SAFETY: allocated by `Box::into_raw` in `table`, freed once.
            drop(unsafe { Box::from_raw(table) });
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
