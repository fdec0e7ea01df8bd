//! The registry of call sites: an intrusive, push-only, lock-free list.
//!
//! Protocol. A site is linked exactly once, by the thread that wins the
//! `registered` flag (`swap`, `AcqRel`): it takes the next id, stores the
//! current head into the site's `next` and publishes the site as the new head
//! with a compare-exchange (`Release`). Readers load the head with `Acquire`:
//! successful compare-exchanges form one release sequence on `head`, so
//! acquiring any head also sees every earlier push, and the `next` links,
//! written before publication and never changed, can be read `Relaxed`. Sites
//! are never unlinked (they are `static`), so a reader can walk the list while
//! sites register: it sees every site pushed before it loaded the head, and
//! possibly none of those pushed after.

use std::ptr;

use crate::core::site::Site;
use crate::core::sync::{AtomicPtr, AtomicUsize, Ordering};

/// The list of every call site that has recorded.
pub(crate) struct Registry {
    head: AtomicPtr<Site>,
    count: AtomicUsize,
}

impl Registry {
    #[cfg(not(loom))]
    pub(crate) const fn new() -> Self {
        Self {
            head: AtomicPtr::new(ptr::null_mut()),
            count: AtomicUsize::new(0),
        }
    }

    #[cfg(loom)]
    pub(crate) fn new() -> Self {
        Self {
            head: AtomicPtr::new(ptr::null_mut()),
            count: AtomicUsize::new(0),
        }
    }

    /// Links `site` unless it is linked already.
    pub(crate) fn register(&self, site: &'static Site) {
        if site.registered.swap(true, Ordering::AcqRel) {
            return;
        }
        let id = self.count.fetch_add(1, Ordering::Relaxed);
        site.id.store(id, Ordering::Relaxed);
        let site_ptr = ptr::from_ref(site).cast_mut();
        let mut head = self.head.load(Ordering::Relaxed);
        loop {
            site.next.store(head, Ordering::Relaxed);
            match self.head.compare_exchange_weak(
                head,
                site_ptr,
                Ordering::Release,
                Ordering::Relaxed,
            ) {
                Ok(_) => return,
                Err(now) => head = now,
            }
        }
    }

    /// Every linked site, most recently registered first.
    pub(crate) fn sites(&self) -> impl Iterator<Item = &'static Site> + '_ {
        let mut next = self.head.load(Ordering::Acquire);
        std::iter::from_fn(move || {
            // SAFETY: only `&'static Site`s are linked, and never unlinked.
            let site: &'static Site = unsafe { next.as_ref() }?;
            next = site.next.load(Ordering::Relaxed);
            Some(site)
        })
    }
}

/// The process-wide registry that `#[probe]` sites link into.
#[cfg(not(loom))]
pub(crate) static REGISTRY: Registry = Registry::new();
