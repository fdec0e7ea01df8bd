//! Call sites: the static that `#[probe]` places in every instrumented
//! function, holding one lazily allocated shard per thread slot.
//!
//! Protocol. `shards[i]` is null until the owner of slot `i` first records at
//! this site; that thread allocates a zeroed shard and installs it with a
//! compare-exchange (`Release`), and readers load the pointer with `Acquire`,
//! so they see the shard initialised. Only the shared slot can have two
//! threads racing to install; the loser frees its allocation. A pointer, once
//! installed, never changes and the shard is never freed: a site's memory is
//! bounded by one shard per slot. The first thread to allocate a shard also
//! links the site into the registry, so a reader finds every site that has
//! recorded anything.

use std::ptr;

use crate::core::histogram::{Dense, Histogram};
use crate::core::registry::Registry;
use crate::core::shard::{READ_PHASES, ReadPhase, Shard, ShardMemo, Totals};
use crate::core::sync::{AtomicBool, AtomicPtr, AtomicUsize, OnceBox, Ordering};
use crate::core::thread_slot::{SHARED, THREAD_SLOTS, ThreadSlot};

/// `Site::id` before the registry assigns one.
pub(crate) const UNASSIGNED: usize = usize::MAX;

/// What `#[probe]` knows about a call site at compile time.
#[derive(Debug)]
pub struct SiteMeta {
    /// The probe's name (the function's name unless `name = "..."` was given).
    pub name: &'static str,
    /// The same name followed by a NUL byte, handed to USDT probes.
    pub c_name: &'static str,
    /// `module_path!()` of the instrumented function.
    pub module: &'static str,
    /// `file!()` of the instrumented function.
    pub file: &'static str,
    /// `line!()` of the instrumented function.
    pub line: u32,
    /// Whether the function is `async`.
    pub is_async: bool,
    /// Whether the function is a command root (`#[probe(command)]`).
    pub is_command: bool,
}

/// A call site's always-on state. Created by `#[probe]` as a `static`.
pub struct Site {
    pub(crate) meta: &'static SiteMeta,
    pub(crate) registered: AtomicBool,
    pub(crate) id: AtomicUsize,
    pub(crate) next: AtomicPtr<Site>,
    shards: [OnceBox<Shard>; THREAD_SLOTS + 1],
}

impl Site {
    /// A site that has not recorded yet.
    #[cfg(not(loom))]
    pub const fn new(meta: &'static SiteMeta) -> Self {
        Self {
            meta,
            registered: AtomicBool::new(false),
            id: AtomicUsize::new(UNASSIGNED),
            next: AtomicPtr::new(ptr::null_mut()),
            shards: [const { OnceBox::new() }; THREAD_SLOTS + 1],
        }
    }

    /// A site that has not recorded yet.
    #[cfg(loom)]
    pub fn new(meta: &'static SiteMeta) -> Self {
        Self {
            meta,
            registered: AtomicBool::new(false),
            id: AtomicUsize::new(UNASSIGNED),
            next: AtomicPtr::new(ptr::null_mut()),
            shards: std::array::from_fn(|_| OnceBox::new()),
        }
    }

    /// The site's kind as the kernel view records it: its registry id + 1,
    /// or 0 until its registration has completed (the first calls of a site
    /// racing its registration on another thread may see 0).
    #[inline(always)]
    pub(crate) fn kind(&self) -> u32 {
        match self.id.load(Ordering::Relaxed) {
            UNASSIGNED => 0,
            id => kind_of(id),
        }
    }

    /// The site's compile-time description.
    pub fn meta(&self) -> &'static SiteMeta {
        self.meta
    }

    /// The shard of `slot`, allocating it (and registering the site in
    /// `registry`) on the slot's first recording here.
    #[inline(always)]
    pub(crate) fn shard(&'static self, slot: ThreadSlot, registry: &Registry) -> &'static Shard {
        match self.shards[slot.index].get() {
            Some(shard) => shard,
            None => self.install_shard(slot, registry),
        }
    }

    #[cold]
    #[inline(never)]
    fn install_shard(&'static self, slot: ThreadSlot, registry: &Registry) -> &'static Shard {
        registry.register(self);
        self.shards[slot.index].get_or_install(Shard::boxed)
    }

    /// Asks the CPU to fetch the part of the shard table a fold reads.
    pub(crate) fn prefetch_table(&self) {
        let exclusive = exclusive_slots();
        // Eight pointers per cache line.
        for slot in (0..exclusive).step_by(8) {
            prefetch(std::ptr::from_ref(&self.shards[slot]).cast());
        }
        prefetch(std::ptr::from_ref(&self.shards[SHARED]).cast());
    }

    /// Asks the CPU to fetch the first lines of every shard (counters,
    /// bitmap and tags), which a fold reads.
    pub(crate) fn prefetch_shards(&self) {
        for (_, cell) in self.cells(exclusive_slots()) {
            // Only an address: a prefetch reads nothing and never faults.
            Shard::prefetch(cell.address());
        }
    }

    /// Asks the CPU to fetch the pool entries a fold of every shard reads
    /// (with `memo`, of the shards it will read rather than recall); best
    /// after [`Site::prefetch_shards`] has brought their bitmaps in.
    pub(crate) fn prefetch_groups(&self, memo: Option<&SiteMemo>) {
        for (slot, shard) in self.installed(exclusive_slots()) {
            if !memo.is_some_and(|memo| memo.recalls(slot, shard, Ordering::Relaxed)) {
                shard.prefetch_groups();
            }
        }
    }

    /// Folds every shard of this site, following the read order that the
    /// shard protocol requires, without stopping writers. The latency
    /// histogram is summed in `latency` (empty, and left empty: one serves a
    /// whole fold). With `memo`, what earlier folds with the same memo saw
    /// of this site's shards, the histogram of a shard that has stood still
    /// since is recalled rather than read (see [`ShardMemo`]), and when
    /// every shard has, the site's whole histogram is.
    pub(crate) fn read_with(&self, latency: &mut Dense, mut memo: Option<&mut SiteMemo>) -> Totals {
        let mut totals = Totals::default();
        // Read once: every phase must fold the same shards.
        let exclusive = exclusive_slots();
        // `whole`: the site's histogram is taken from the memo. Else
        // `every_shard`: each shard's was (true too when there are none).
        let (mut every_shard, mut whole) = (true, false);
        for phase in READ_PHASES {
            let remembering = memo
                .as_deref_mut()
                .filter(|_| matches!(phase, ReadPhase::Latency));
            let Some(site_memo) = remembering else {
                for (_, shard) in self.installed(exclusive) {
                    shard.read(phase, &mut totals, latency, None);
                }
                continue;
            };
            whole = site_memo.histogram.is_some()
                && self
                    .installed(exclusive)
                    .all(|(slot, shard)| site_memo.recalls(slot, shard, Ordering::Acquire));
            // A shard installed since the line above is read for its sums
            // only, as if its `completed` had been loaded as 0 (it was not
            // in the memo's histogram, and its own memo is still unseen).
            for (slot, shard) in self.installed(exclusive) {
                if whole {
                    shard.read_latency_sums(&mut totals, latency);
                } else {
                    let shard_memo = Some(site_memo.shard(slot));
                    every_shard &= shard.read(phase, &mut totals, latency, shard_memo);
                }
            }
        }
        totals.histogram = latency.take();
        if let Some(memo) = memo {
            match &memo.histogram {
                Some(kept) if whole => totals.histogram = kept.with_sum(totals.histogram.sum()),
                _ if every_shard => memo.histogram = Some(totals.histogram.clone()),
                _ => memo.histogram = None,
            }
        }
        totals
    }

    /// The shard cells a fold looks at, with their slots: the exclusive
    /// slots below `exclusive` (see [`exclusive_slots`]), then the shared
    /// slot.
    fn cells(&self, exclusive: usize) -> impl Iterator<Item = (usize, &OnceBox<Shard>)> {
        self.shards[..exclusive]
            .iter()
            .enumerate()
            .chain([(SHARED, &self.shards[SHARED])])
    }

    /// The shards installed in [`Site::cells`], with their slots.
    fn installed(&self, exclusive: usize) -> impl Iterator<Item = (usize, &Shard)> {
        self.cells(exclusive)
            .filter_map(|(slot, cell)| Some((slot, cell.get()?)))
    }
}

/// What a fold remembers of one site's shards (see [`ShardMemo`]).
#[derive(Debug, Default)]
pub(crate) struct SiteMemo {
    exclusive: Vec<ShardMemo>,
    shared: ShardMemo,
    /// The site's histogram from the last fold that recalled every shard's
    /// (the sum of what they keep; its `sum` is not used, a fold reads the
    /// sums afresh), until a fold finds a shard that does not recall.
    histogram: Option<Histogram>,
}

impl SiteMemo {
    /// Whether a fold would take the histogram of `slot`'s shard from here
    /// (see [`ShardMemo::recalls`]).
    fn recalls(&self, slot: usize, shard: &Shard, order: Ordering) -> bool {
        let memo = if slot == SHARED {
            Some(&self.shared)
        } else {
            self.exclusive.get(slot)
        };
        memo.is_some_and(|memo| memo.recalls(shard, order))
    }

    fn shard(&mut self, slot: usize) -> &mut ShardMemo {
        if slot == SHARED {
            return &mut self.shared;
        }
        if slot >= self.exclusive.len() {
            self.exclusive.resize_with(slot + 1, ShardMemo::default);
        }
        &mut self.exclusive[slot]
    }
}

/// How many exclusive slots may hold shards: those below the high-water mark
/// of claimed slots (a slot claimed later holds only calls that began after).
fn exclusive_slots() -> usize {
    crate::core::thread_slot::high_water().min(THREAD_SLOTS)
}

impl std::fmt::Debug for Site {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Site")
            .field("meta", self.meta)
            .finish_non_exhaustive()
    }
}

/// The kernel view's kind of the site with registry id `id`: `id + 1` (0
/// means no site), or 0 past what the kernel's 32 bits hold.
#[inline(always)]
pub(crate) fn kind_of(id: usize) -> u32 {
    u32::try_from(id + 1).unwrap_or(0)
}

/// A call site made at run time, the way `#[probe]` makes one statically,
/// named `name`; its memory is never freed (sites are `'static`). For
/// benchmarks and tests that need more sites than they can write out.
#[cfg(not(loom))]
pub fn leaked_site(name: String, is_command: bool) -> &'static Site {
    let c_name: &'static str = Box::leak(format!("{name}\0").into_boxed_str());
    let name: &'static str = Box::leak(name.into_boxed_str());
    let meta: &'static SiteMeta = Box::leak(Box::new(SiteMeta {
        name,
        c_name,
        module: module_path!(),
        file: file!(),
        line: line!(),
        is_async: false,
        is_command,
    }));
    Box::leak(Box::new(Site::new(meta)))
}

/// A hint to fetch the cache line at `address` (nothing elsewhere than on
/// x86-64; never a fault: prefetching is not an access).
#[inline(always)]
pub(crate) fn prefetch(address: *const u8) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: `_mm_prefetch` never faults, whatever the address.
    unsafe {
        core::arch::x86_64::_mm_prefetch::<{ core::arch::x86_64::_MM_HINT_T0 }>(address.cast());
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = address;
}
