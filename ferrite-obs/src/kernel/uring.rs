//! The tokio-uring adapter: io_uring requests pushed by tokio-uring attributed
//! to the commands whose polls pushed them.
//!
//! tokio-uring pushes an SQE when an operation is created (inside some
//! task's poll) and enters the ring later, in a batch, when its thread
//! parks: by then no command is running. So the attribution is made at push
//! time instead: around each poll of a `#[probe(command)]` future, the
//! runtime reads the ring's shared SQ tail before and after; every SQE
//! pushed in between belongs to that command, and its `user_data` (the
//! operation's slab index) is written into the thread's slot table, where the
//! kernel program reads it at submission.
//!
//! Finding the thread's ring: [`start`] notes the process's io_uring
//! mappings, starts the tokio-uring runtime, and in the root future's first
//! poll finds the one new ring (its SQ-ring mapping and its SQE-array
//! mapping, paired by inode, as `/proc/self/maps` lists them). A global lock
//! keeps two runtimes from starting at the same instant. The ring's field
//! offsets come from the kernel (`io_uring_params` of a throwaway ring of
//! the same sizes). The view is this thread's own and is cleared when the
//! runtime ends, before its ring is unmapped.

use std::cell::Cell;
use std::future::Future;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

/// Serialises ring discovery between runtimes starting on several threads.
static DISCOVERY: Mutex<()> = Mutex::new(());
/// Runtimes whose ring could not be found (their requests are unattributed).
static UNDISCOVERED: AtomicU64 = AtomicU64::new(0);

/// Where this thread's ring lives, for reading what a poll pushed.
#[derive(Clone, Copy, Debug)]
struct RingView {
    /// The SQ ring's shared head: the kernel has consumed every SQE before it.
    head: *const AtomicU32,
    /// The SQ ring's shared tail.
    tail: *const AtomicU32,
    /// `sq_array[pos & mask]` is the SQE index of position `pos`.
    array: *const u32,
    mask: u32,
    entries: u32,
    /// The SQE array (64-byte entries).
    sqes: *const u8,
}

thread_local! {
    static RING: Cell<Option<RingView>> = const { Cell::new(None) };
}

/// Runs `future` on a new tokio-uring runtime (as `tokio_uring::start`),
/// with its io_uring requests attributed to the commands that push them.
///
/// Use it, or [`start_with`], in place of `tokio_uring::start` on every
/// thread that runs a tokio-uring runtime (one per core, say): requests
/// pushed during a poll of a `#[probe(command)]` future then count for that
/// command in the kernel view; the rest count as unattributed.
pub fn start<F: Future>(future: F) -> F::Output {
    start_with(&tokio_uring::builder(), future)
}

/// [`start`] with a tokio-uring builder (ring size, io_uring flags).
/// SQPOLL rings are not supported: their submissions happen on a kernel
/// thread and count as unattributed.
pub fn start_with<F: Future>(builder: &tokio_uring::Builder, future: F) -> F::Output {
    let discovery = DISCOVERY.lock().unwrap_or_else(|e| e.into_inner());
    let before = rings();
    let _clear = ClearOnDrop;
    builder.start(async move {
        let found: Vec<Ring> = rings()
            .into_iter()
            .filter(|r| !before.contains(r))
            .collect();
        drop(discovery);
        let view = match found.as_slice() {
            [ring] => ring.view(),
            _ => None,
        };
        if view.is_none() {
            UNDISCOVERED.fetch_add(1, Ordering::Relaxed);
        }
        RING.set(view);
        future.await
    })
}

/// Runtimes started with [`start`] whose ring could not be identified.
pub fn undiscovered_rings() -> u64 {
    UNDISCOVERED.load(Ordering::Relaxed)
}

/// Clears the thread's ring view when the runtime ends (also by panic).
struct ClearOnDrop;

impl Drop for ClearOnDrop {
    fn drop(&mut self) {
        let _ = RING.try_with(|ring| ring.set(None));
    }
}

/// The SQ tail of this thread's ring, if it has one we know.
#[inline(always)]
pub(super) fn tail() -> Option<u32> {
    let view = RING.try_with(Cell::get).ok().flatten()?;
    // SAFETY: the view is this thread's own ring, mapped for as long as its
    // runtime runs; the view is cleared before the runtime (and its ring)
    // is dropped. The tail is a u32 the io-uring crate stores atomically.
    Some(unsafe { (*view.tail).load(Ordering::Acquire) })
}

/// Calls `tag(user_data)` for every SQE pushed since the tail was `before`.
#[inline]
pub(super) fn pushed_since(before: u32, mut tag: impl FnMut(u64)) {
    let Some(view) = RING.try_with(Cell::get).ok().flatten() else {
        return;
    };
    // SAFETY: as in `tail`; the head is a u32 the kernel stores atomically.
    let after = unsafe { (*view.tail).load(Ordering::Acquire) };
    if after == before {
        return; // most polls push nothing
    }
    // SAFETY: as above.
    let head = unsafe { (*view.head).load(Ordering::Acquire) };
    // The ring may have been entered during the poll (tokio-uring does when
    // the SQ is full): SQEs the kernel already consumed were submitted
    // unattributed, and tagging their slots now would leave slots nobody
    // reads for a later SQE to inherit. Only the unconsumed are tagged.
    let pushed = after
        .wrapping_sub(before)
        .min(after.wrapping_sub(head))
        .min(view.entries);
    for position in after.wrapping_sub(pushed)..after {
        // SAFETY: `position & mask` indexes the sq_array of `entries` u32s;
        // the index read there is below `entries` (the kernel rejects any
        // other), so the SQE is inside the SQE array; user_data is at offset
        // 32 of the 64-byte SQE. The SQEs pushed in this poll stay intact
        // until the ring is entered, which happens after this poll.
        let user_data = unsafe {
            let index = *view.array.add((position & view.mask) as usize) % view.entries;
            std::ptr::read_unaligned(view.sqes.add(index as usize * 64 + 32).cast::<u64>())
        };
        tag(user_data);
    }
}

/// One io_uring instance as `/proc/self/maps` lists it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Ring {
    inode: u64,
    /// The mapping at page offset 0: the SQ ring (and the CQ ring, with
    /// IORING_FEAT_SINGLE_MMAP).
    sq_ring: usize,
    /// The mapping at page offset 0x10000000: the SQE array.
    sqes: usize,
}

const IORING_OFF_SQ_RING: u64 = 0;
const IORING_OFF_SQES: u64 = 0x1000_0000;

/// Every io_uring of the process, its mappings paired by inode.
fn rings() -> Vec<Ring> {
    let Ok(maps) = std::fs::read_to_string("/proc/self/maps") else {
        return Vec::new();
    };
    let mut sq = Vec::new();
    let mut sqes = Vec::new();
    for line in maps
        .lines()
        .filter(|l| l.ends_with("anon_inode:[io_uring]"))
    {
        let mut fields = line.split_whitespace();
        let (Some(range), Some(_), Some(offset), Some(_), Some(inode)) = (
            fields.next(),
            fields.next(),
            fields.next(),
            fields.next(),
            fields.next(),
        ) else {
            continue;
        };
        let (Some(start), Ok(offset), Ok(inode)) = (
            range
                .split('-')
                .next()
                .and_then(|s| usize::from_str_radix(s, 16).ok()),
            u64::from_str_radix(offset, 16),
            inode.parse::<u64>(),
        ) else {
            continue;
        };
        match offset {
            IORING_OFF_SQ_RING => sq.push((inode, start)),
            IORING_OFF_SQES => sqes.push((inode, start)),
            _ => {}
        }
    }
    sq.into_iter()
        .filter_map(|(inode, sq_ring)| {
            let (_, sqes) = sqes.iter().find(|(i, _)| *i == inode)?;
            Some(Ring {
                inode,
                sq_ring,
                sqes: *sqes,
            })
        })
        .collect()
}

impl Ring {
    /// The ring's field addresses, from the kernel's offsets for its sizes.
    fn view(&self) -> Option<RingView> {
        let probe = params(1, None)?;
        let base = self.sq_ring as *const u8;
        // SAFETY: the SQ ring mapping is at least a page and holds the
        // ring_entries fields at the kernel's offsets, which do not depend on
        // the sizes; the ring is alive (its runtime is starting).
        let (sq_entries, cq_entries) = unsafe {
            (
                *base.add(probe.sq_off.ring_entries as usize).cast::<u32>(),
                *base.add(probe.cq_off.ring_entries as usize).cast::<u32>(),
            )
        };
        // sq_off.array depends on the CQ size: ask for this ring's sizes.
        let offsets = params(sq_entries, Some(cq_entries))?;
        // SAFETY: as above, at this ring's own offsets.
        let mask = unsafe { *base.add(offsets.sq_off.ring_mask as usize).cast::<u32>() };
        Some(RingView {
            // SAFETY: offsets inside the SQ ring mapping.
            head: unsafe { base.add(offsets.sq_off.head as usize).cast() },
            // SAFETY: as above.
            tail: unsafe { base.add(offsets.sq_off.tail as usize).cast() },
            // SAFETY: as above.
            array: unsafe { base.add(offsets.sq_off.array as usize).cast() },
            mask,
            entries: sq_entries,
            sqes: self.sqes as *const u8,
        })
    }
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
struct SqOffsets {
    head: u32,
    tail: u32,
    ring_mask: u32,
    ring_entries: u32,
    flags: u32,
    dropped: u32,
    array: u32,
    resv1: u32,
    user_addr: u64,
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
struct CqOffsets {
    head: u32,
    tail: u32,
    ring_mask: u32,
    ring_entries: u32,
    overflow: u32,
    cqes: u32,
    flags: u32,
    resv1: u32,
    user_addr: u64,
}

/// `struct io_uring_params`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
struct Params {
    sq_entries: u32,
    cq_entries: u32,
    flags: u32,
    sq_thread_cpu: u32,
    sq_thread_idle: u32,
    features: u32,
    wq_fd: u32,
    resv: [u32; 3],
    sq_off: SqOffsets,
    cq_off: CqOffsets,
}

const IORING_SETUP_CQSIZE: u32 = 1 << 3;

/// The kernel's offsets for a ring of these sizes, from a throwaway ring.
fn params(sq_entries: u32, cq_entries: Option<u32>) -> Option<Params> {
    let mut params = Params::default();
    if let Some(cq) = cq_entries {
        params.flags = IORING_SETUP_CQSIZE;
        params.cq_entries = cq;
    }
    // SAFETY: `params` is a valid io_uring_params for the kernel to fill.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_io_uring_setup,
            sq_entries,
            std::ptr::from_mut(&mut params),
        )
    };
    if fd < 0 {
        return None;
    }
    // SAFETY: `fd` is the descriptor io_uring_setup just returned, ours to close.
    unsafe { libc::close(fd as libc::c_int) };
    Some(params)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn params_match_the_kernel_layout() {
        assert_eq!(std::mem::size_of::<Params>(), 120);
        let Some(p) = params(8, Some(64)) else {
            eprintln!("SKIPPED params_match_the_kernel_layout: io_uring_setup is not available");
            return;
        };
        assert_eq!((p.sq_entries, p.cq_entries), (8, 64));
        assert!(p.sq_off.array > p.sq_off.tail, "{p:?}");
    }
}
