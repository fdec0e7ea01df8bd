//! BPF arrays mapped into the process (`BPF_F_MMAPABLE`), for tables the
//! host writes or reads on its hot paths with plain memory accesses.
//!
//! Lifetime. A thread may hold an address in a table while the kernel view
//! unloads, so unloading never unmaps the range: [`Region::retire`] maps
//! fresh anonymous memory over it (`MAP_FIXED`), which releases the map's
//! pages (the map is freed with its last descriptor) while a late access
//! lands in memory that nobody reads. The range stays reserved, and the
//! next load of the same size maps its own array onto it.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

/// One reserved address range and the load mapped there.
pub(super) struct Region {
    state: Mutex<State>,
    /// The range, as `state` has it, for [`Region::forget_in_child`], which
    /// may not lock.
    address: AtomicUsize,
    bytes: AtomicUsize,
}

struct State {
    /// The reserved range (0: none yet) and its length.
    address: usize,
    bytes: usize,
    /// The generation of the load whose array is mapped there, if one is.
    mapped: Option<u32>,
}

impl Region {
    pub(super) const fn new() -> Region {
        Region {
            state: Mutex::new(State {
                address: 0,
                bytes: 0,
                mapped: None,
            }),
            address: AtomicUsize::new(0),
            bytes: AtomicUsize::new(0),
        }
    }

    /// Maps the first `bytes` of the array behind `map`, of load
    /// `generation`, in place of what the range held (a retired array, or
    /// an earlier load's still mapped). Returns its address.
    pub(super) fn install(
        &self,
        map: BorrowedFd<'_>,
        bytes: usize,
        generation: u32,
    ) -> io::Result<*mut u8> {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        // A range of another size stays as it is (anonymous memory, or a
        // mapping nobody reads any more): a late access may still land there.
        let (hint, fixed) = if state.address != 0 && state.bytes == bytes {
            (state.address as *mut libc::c_void, libc::MAP_FIXED)
        } else {
            (std::ptr::null_mut(), 0)
        };
        // SAFETY: maps the array's pages over our own reserved range (or a
        // new one); nothing else lives there.
        let address = unsafe {
            libc::mmap(
                hint,
                bytes,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED | fixed,
                map.as_raw_fd(),
                0,
            )
        };
        if address == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        *state = State {
            address: address as usize,
            bytes,
            mapped: Some(generation),
        };
        self.bytes.store(bytes, Ordering::Relaxed);
        self.address.store(address as usize, Ordering::Release);
        Ok(address.cast())
    }

    /// Releases the array of load `generation`, keeping the range. A later
    /// load's array mapped there meanwhile (a runtime dropped without
    /// `shutdown` unloads in the background, possibly after the next one
    /// started) is left alone. `unpublish` runs first, under the lock:
    /// it stops handing out the array's address.
    pub(super) fn retire(&self, generation: u32, unpublish: impl FnOnce()) {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if state.mapped != Some(generation) {
            return;
        }
        unpublish();
        // SAFETY: replaces our own mapping, in place, with zeroed private
        // memory.
        let address = unsafe {
            libc::mmap(
                state.address as *mut libc::c_void,
                state.bytes,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_FIXED,
                -1,
                0,
            )
        };
        // On failure the map's pages stay mapped (and the map alive) rather
        // than pull memory from under a thread that may still use it.
        if address != libc::MAP_FAILED {
            state.mapped = None;
        }
    }

    /// In a forked child: replaces whatever the range holds with private
    /// zeroed memory, so that nothing the child writes there reaches the
    /// map, which the parent still uses. No lock: a parent thread may have
    /// held it at the instant of the fork.
    pub(super) fn forget_in_child(&self) {
        let address = self.address.load(Ordering::Acquire);
        if address == 0 {
            return;
        }
        let bytes = self.bytes.load(Ordering::Relaxed);
        // SAFETY: replaces our own range, in place, with zeroed private
        // memory. On failure the shared mapping stays (nothing is written
        // there: the callers stop using it first).
        unsafe {
            libc::mmap(
                address as *mut libc::c_void,
                bytes,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_FIXED,
                -1,
                0,
            );
        }
    }
}
