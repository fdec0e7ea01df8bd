//! The latest snapshot, published whole: the collector stores a new one
//! after every rollup; any number of readers load the current one.
//!
//! Protocol. A snapshot is built completely, then published by one pointer
//! swap (arc-swap: `store` is a release, `load` an acquire, so a reader sees
//! everything the collector wrote into the snapshot before publishing it).
//! A snapshot is never changed after publication: a reader holds an `Arc`
//! and sees one rollup whole, never a mix of two. Readers never lock and
//! never wait for a rollup in progress; the previous snapshot is freed when
//! its last reader drops it.
//!
//! Under `--cfg loom` the cell is a loom mutex around the `Arc`: arc-swap
//! does not run under loom, and its own atomicity is its authors' to prove.
//! What the models check is ours: what the collector publishes, in which
//! order, and what a reader may see while writers record (`crate::loom`).

#[cfg(not(loom))]
use std::sync::Arc;

#[cfg(loom)]
use loom::sync::{Arc, Mutex};

/// The latest published value.
#[derive(Debug)]
pub(crate) struct Latest<T> {
    #[cfg(not(loom))]
    cell: arc_swap::ArcSwap<T>,
    #[cfg(loom)]
    cell: Mutex<Arc<T>>,
}

impl<T> Latest<T> {
    pub(crate) fn new(value: T) -> Self {
        Latest {
            #[cfg(not(loom))]
            cell: arc_swap::ArcSwap::from_pointee(value),
            #[cfg(loom)]
            cell: Mutex::new(Arc::new(value)),
        }
    }

    /// Publishes `value`, replacing the current one.
    pub(crate) fn store(&self, value: T) {
        #[cfg(not(loom))]
        self.cell.store(Arc::new(value));
        #[cfg(loom)]
        {
            *self.cell.lock().unwrap() = Arc::new(value);
        }
    }

    /// The current value.
    pub(crate) fn load(&self) -> Arc<T> {
        #[cfg(not(loom))]
        return self.cell.load_full();
        #[cfg(loom)]
        return Arc::clone(&self.cell.lock().unwrap());
    }
}
