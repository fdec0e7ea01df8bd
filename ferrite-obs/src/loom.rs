//! Loom models of the lock-free call-site structures: registration, recording
//! and the shard fold. Run with
//! `RUSTFLAGS="--cfg loom" cargo test -p ferrite-obs --release --lib loom`.
//!
//! What they prove, in every interleaving loom explores:
//! - a site registered by racing threads is linked exactly once, and a reader
//!   walking the registry while sites register sees a subset of them, all
//!   intact;
//! - a reader folding shards while writers record sees figures consistent as
//!   inequalities (`errors <= calls <= histogram count`,
//!   `calls + cancelled + panicked <= started`), and once the writers are
//!   joined the fold is exact: nothing is lost, on exclusive slots (plain
//!   stores, each call's bucket counted at the writer's next call, the last
//!   one pending, never counted twice) and on the shared slot (atomic adds)
//!   alike;
//! - a reader loading published snapshots while the collector folds and
//!   publishes and a writer records sees each snapshot whole and consistent,
//!   and never an older one after a newer: sequence and every total only go
//!   up; the final rollup after the writers finish is exact.

use loom::thread;

use crate::core::latest::Latest;
use crate::core::registry::Registry;
use crate::core::shard::Totals;
use crate::core::site::{Site, SiteMemo, SiteMeta};
use crate::core::thread_slot::{SHARED, ThreadSlot};

static META: SiteMeta = SiteMeta {
    name: "model",
    c_name: "model\0",
    module: "loom",
    file: file!(),
    line: line!(),
    is_async: false,
    is_command: false,
};

fn leak<T>(value: T) -> &'static T {
    Box::leak(Box::new(value))
}

fn model(f: impl Fn() + Sync + Send + 'static) {
    model_bounded(3, f);
}

/// [`model`] with at most `preemptions` preemptions per execution: for
/// models whose reader makes many folds.
fn model_bounded(preemptions: usize, f: impl Fn() + Sync + Send + 'static) {
    let mut builder = loom::model::Builder::new();
    builder.preemption_bound = Some(preemptions);
    builder.check(f);
}

/// A writer's first operation, a store the reader's first operation reads.
///
/// loom 0.7 does not reorder a thread whose next operation is a load ahead of
/// another thread's loads: a writer that begins with loads (every recording
/// does: load, then store) would never run inside the read, and the model
/// would pass whatever the read order. Starting each writer with a store the
/// reader conflicts with makes loom explore the writers running before,
/// inside and after the read (checked: reversing the read order fails).
#[derive(Default)]
struct Running(crate::core::sync::AtomicUsize);

impl Running {
    fn start(&self) {
        self.0.fetch_add(1, crate::core::sync::Ordering::Relaxed);
    }

    fn observe(&self) {
        self.0.load(crate::core::sync::Ordering::Relaxed);
    }
}

/// A thread that, on exclusive slot 0 of `site`, makes one call of each of
/// `ns` nanoseconds.
fn spawn_calls(
    site: &'static Site,
    running: &'static Running,
    ns: &'static [u64],
) -> thread::JoinHandle<()> {
    let registry = leak(Registry::new());
    thread::spawn(move || {
        running.start();
        let shard = site.shard(ThreadSlot::new(0), registry);
        for &ns in ns {
            shard.record_start(true);
            shard.record_end(ns, false, true);
        }
    })
}

/// A reader's fold of every shard of `site`.
fn fold(site: &Site) -> Totals {
    site.read_with(&mut crate::core::histogram::Dense::new(), None)
}

fn assert_consistent(t: &Totals) {
    let hist = t.histogram.count();
    assert!(
        t.errors <= t.calls,
        "errors {} > calls {}",
        t.errors,
        t.calls
    );
    assert!(
        t.calls <= hist,
        "calls {} > histogram count {hist}",
        t.calls
    );
    assert!(
        t.calls + t.cancelled + t.panicked <= t.started,
        "ended {} > started {}",
        t.calls + t.cancelled + t.panicked,
        t.started
    );
}

#[test]
fn racing_registrations_link_each_site_once() {
    model(|| {
        let registry = leak(Registry::new());
        let a = leak(Site::new(&META));
        let b = leak(Site::new(&META));
        let t1 = thread::spawn(move || registry.register(a));
        let t2 = thread::spawn(move || {
            registry.register(a);
            registry.register(b);
        });
        // A reader walking mid-registration sees intact sites, each once.
        let seen: Vec<_> = registry.sites().map(std::ptr::from_ref).collect();
        assert!(seen.len() <= 2);
        if seen.len() == 2 {
            assert_ne!(seen[0], seen[1]);
        }
        t1.join().unwrap();
        t2.join().unwrap();
        let all: Vec<_> = registry.sites().map(std::ptr::from_ref).collect();
        assert_eq!(all.len(), 2, "both sites linked, once each");
        assert!(all.contains(&std::ptr::from_ref(a)) && all.contains(&std::ptr::from_ref(b)));
        let mut ids: Vec<_> = [a, b]
            .iter()
            .map(|s| s.id.load(crate::core::sync::Ordering::Relaxed))
            .collect();
        ids.sort_unstable();
        assert_eq!(ids, [0, 1], "ids are unique and dense");
    });
}

#[test]
fn concurrent_fold_is_consistent_and_exact_after_join() {
    model(|| {
        let registry = leak(Registry::new());
        let site = leak(Site::new(&META));
        let running = leak(Running::default());
        let writer = |slot: ThreadSlot, error: bool| {
            move || {
                running.start();
                let shard = site.shard(slot, registry);
                shard.record_start(slot.exclusive());
                shard.record_end(3, error, slot.exclusive());
            }
        };
        let t1 = thread::spawn(writer(ThreadSlot::new(0), true));
        let t2 = thread::spawn(writer(ThreadSlot::new(1), false));

        running.observe();
        assert_consistent(&fold(site));

        t1.join().unwrap();
        t2.join().unwrap();
        let totals = fold(site);
        assert_eq!(totals.started, 2);
        assert_eq!(totals.calls, 2);
        assert_eq!(totals.errors, 1);
        assert_eq!(totals.histogram.count(), 2);
        assert_eq!(totals.histogram.sum(), 6);
    });
}

#[test]
fn a_group_beyond_the_pool_is_folded_from_the_overflow_array() {
    model(|| {
        let site = leak(Site::new(&META));
        let running = leak(Running::default());
        // Groups 0 and 2: the (one-entry) pool takes the first, the overflow
        // array, allocated meanwhile, the second. An exclusive writer counts
        // a call's bucket at its next call's end (the last one stays
        // pending): the third call places the second.
        let t = spawn_calls(site, running, &[1, 40, 1]);
        running.observe();
        let during = fold(site);
        assert_consistent(&during);
        // The pending call is counted once, from its bucket or as pending.
        assert!(during.histogram.bucket_count(40) <= 1, "{during:?}");
        t.join().unwrap();
        let totals = fold(site);
        assert_eq!((totals.started, totals.calls), (3, 3));
        assert_eq!(totals.histogram.count(), 3);
        assert_eq!(totals.histogram.sum(), 42);
        assert_eq!(totals.histogram.bucket_count(40), 1);
        assert_eq!(totals.histogram.bucket_count(1), 2);
    });
}

#[test]
fn a_recalled_histogram_is_consistent_and_exact_after_join() {
    // Seven folds: three preemptions would take loom over ten minutes.
    model_bounded(2, || {
        let site = leak(Site::new(&META));
        let running = leak(Running::default());
        let t = spawn_calls(site, running, &[1, 40]);
        // Folds that remember, while the calls run: a fold that finds the
        // shard as the one before did keeps what it reads, and the next
        // that finds it so again recalls that.
        let mut memo = SiteMemo::default();
        let mut latency = crate::core::histogram::Dense::new();
        running.observe();
        for _ in 0..3 {
            assert_consistent(&site.read_with(&mut latency, Some(&mut memo)));
        }
        t.join().unwrap();
        // Enough folds that, whatever the ones above kept, the last ones
        // recall every shard's histogram and then the site's.
        for _ in 0..4 {
            let totals = site.read_with(&mut latency, Some(&mut memo));
            assert_eq!(totals.calls, 2);
            assert_eq!(totals.histogram.count(), 2, "{totals:?}");
            assert_eq!(totals.histogram.bucket_count(40), 1, "{totals:?}");
            assert_eq!(totals.histogram.sum(), 41, "{totals:?}");
        }
    });
}

#[test]
fn shared_slot_writers_lose_nothing() {
    model(|| {
        let registry = leak(Registry::new());
        let site = leak(Site::new(&META));
        let running = leak(Running::default());
        let writer = move || {
            running.start();
            let slot = ThreadSlot::new(SHARED);
            let shard = site.shard(slot, registry);
            shard.record_start(false);
            shard.record_end(1, false, false);
        };
        let t1 = thread::spawn(writer);
        let t2 = thread::spawn(writer);
        running.observe();
        assert_consistent(&fold(site));
        t1.join().unwrap();
        t2.join().unwrap();
        let totals = fold(site);
        assert_eq!((totals.started, totals.calls), (2, 2));
        assert_eq!(totals.histogram.count(), 2);
        assert_eq!(registry.sites().count(), 1, "the site registered once");
    });
}

#[test]
fn abandoned_calls_are_counted_before_they_are_visible_as_ended() {
    model(|| {
        let registry = leak(Registry::new());
        let site = leak(Site::new(&META));
        let running = leak(Running::default());
        let t1 = thread::spawn(move || {
            running.start();
            let shard = site.shard(ThreadSlot::new(0), registry);
            shard.record_start(true);
            shard.record_abandoned(false, true);
            shard.record_start(true);
            shard.record_abandoned(true, true);
        });
        running.observe();
        assert_consistent(&fold(site));
        t1.join().unwrap();
        let totals = fold(site);
        assert_eq!(
            (totals.started, totals.cancelled, totals.panicked),
            (2, 1, 1)
        );
    });
}

/// What the collector publishes, reduced to what the protocol is about.
#[derive(Debug, Default)]
struct Published {
    sequence: u64,
    totals: Totals,
}

#[test]
fn published_snapshots_are_whole_and_never_go_back() {
    model(|| {
        let registry = leak(Registry::new());
        let site = leak(Site::new(&META));
        let running = leak(Running::default());
        // Not leaked: loom checks that every `Arc` it tracks is dropped.
        let latest = loom::sync::Arc::new(Latest::new(Published::default()));
        let published = loom::sync::Arc::clone(&latest);
        let writer = thread::spawn(move || {
            running.start();
            let shard = site.shard(ThreadSlot::new(0), registry);
            shard.record_start(true);
            shard.record_end(5, true, true);
        });
        // The collector: a rollup is a fold, then one publication.
        let collector = thread::spawn(move || {
            for sequence in 1..=2 {
                let totals = fold(site);
                published.store(Published { sequence, totals });
            }
        });

        running.observe();
        let first = latest.load();
        let second = latest.load();
        for seen in [&first, &second] {
            assert_consistent(&seen.totals);
        }
        assert!(first.sequence <= second.sequence, "a newer, then an older");
        let (a, b) = (&first.totals, &second.totals);
        assert!(
            a.started <= b.started && a.calls <= b.calls && a.errors <= b.errors,
            "totals went back: {a:?} then {b:?}"
        );

        writer.join().unwrap();
        collector.join().unwrap();
        // The final rollup, once the writers are done, is exact.
        latest.store(Published {
            sequence: 3,
            totals: fold(site),
        });
        let last = latest.load();
        assert_eq!(last.sequence, 3);
        assert_eq!(
            (last.totals.started, last.totals.calls, last.totals.errors),
            (1, 1, 1)
        );
        assert_eq!(last.totals.histogram.sum(), 5);
    });
}
