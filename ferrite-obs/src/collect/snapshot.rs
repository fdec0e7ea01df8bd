//! Immutable snapshots of every call site, and the rollup that makes them.
//!
//! Shards hold monotonic counters that are never cleared: a rollup reads them
//! (see [`crate::sites`]) and subtracts the previous reading of the same site,
//! so figures of an interval are what happened between two rollups, and no
//! write of a recording thread can race with a reset.

use std::collections::HashMap;
use std::time::{Duration, Instant, SystemTime};

use crate::call::slowlog::{self, SlowLog};
use crate::collect::fold::{FoldMemo, SiteStats};
use crate::core::figures::site_counters;
use crate::core::histogram::Histogram;
use crate::kernel::{CommandName, Kernel, KernelSnapshot};

/// Everything the collector knows at one rollup. Published whole; readers
/// get an `Arc` and never see a half-made snapshot.
#[derive(Clone, Debug)]
pub struct Snapshot {
    /// Wall-clock time of the rollup.
    pub taken_at: SystemTime,
    /// Time covered by the interval figures (since the previous rollup).
    pub interval: Duration,
    /// Rollups made since the runtime started, this one included.
    pub sequence: u64,
    /// Every call site that has recorded, in registration order.
    pub sites: Vec<SiteSnapshot>,
    /// What the collector itself costs.
    pub collector: CollectorCost,
    /// The slow-command log at the rollup.
    pub slowlog: SlowLog,
    /// What the instrumentation cost the host.
    pub instrumentation: InstrumentationCost,
    /// The kernel view's figures, when it runs (see [`crate::kernel`]).
    pub kernel: Option<KernelSnapshot>,
}

/// The time the instrumentation costs the host, estimated as calls times the
/// per-call cost measured on this machine when the runtime started.
#[derive(Clone, Copy, Debug, Default)]
pub struct InstrumentationCost {
    /// Nanoseconds a recorded call adds to a bare one.
    pub per_call_ns: f64,
    /// Estimated time added to the host during the interval.
    pub interval: Duration,
    /// Estimated time added since the runtime started.
    pub total: Duration,
    /// Threads that have recorded on the shared slot, every one of the 256
    /// exclusive thread slots being taken (their calls cost about twice as
    /// much: atomic read-modify-writes).
    pub shared_slot_threads: u64,
    /// Those of them that have moved to an exclusive slot since, one being
    /// given back.
    pub shared_slot_moves: u64,
}

/// One call site in a snapshot.
#[derive(Clone, Debug)]
pub struct SiteSnapshot {
    /// Figures since the process started (monotonic).
    pub total: SiteStats,
    /// Figures of the last interval.
    pub interval: IntervalStats,
}

macro_rules! interval_stats {
    ($($field:ident: $family:literal, $scale:literal, $help:literal;)*) => {
        /// What one call site did during one interval.
        #[derive(Clone, Debug, Default)]
        pub struct IntervalStats {
            $(
                #[doc = $help]
                pub $field: u64,
            )*
            /// Latency of the calls completed in the interval.
            pub latency: Histogram,
            /// Completed calls per second.
            pub calls_per_second: f64,
        }

        /// `now - before`, counter by counter; every counter is monotonic, so
        /// a difference is what happened in between (floored at zero).
        fn interval_between(before: &SiteStats, now: &SiteStats, seconds: f64) -> IntervalStats {
            let calls = now.calls.saturating_sub(before.calls);
            IntervalStats {
                $($field: now.$field.saturating_sub(before.$field),)*
                latency: now.latency.delta(&before.latency),
                calls_per_second: if seconds > 0.0 {
                    calls as f64 / seconds
                } else {
                    0.0
                },
            }
        }
    };
}

site_counters!(interval_stats! {});

impl IntervalStats {
    /// Latency at quantile `q` in nanoseconds (within 1.6 %), if any call
    /// completed in the interval.
    pub fn quantile(&self, q: f64) -> Option<u64> {
        self.latency.quantile(q)
    }
}

/// The collector's own cost.
#[derive(Clone, Copy, Debug, Default)]
pub struct CollectorCost {
    /// Wall time of the last rollup.
    pub last_rollup: Duration,
    /// Sum of the wall time of every rollup.
    pub total_rollup: Duration,
    /// CPU time of the collector's thread.
    pub thread_cpu: Duration,
}

impl Snapshot {
    /// The snapshot before the first rollup: no sites, no interval.
    pub(crate) fn empty() -> Snapshot {
        Snapshot {
            taken_at: SystemTime::now(),
            interval: Duration::ZERO,
            sequence: 0,
            sites: Vec::new(),
            collector: CollectorCost::default(),
            slowlog: SlowLog::default(),
            instrumentation: InstrumentationCost::default(),
            kernel: None,
        }
    }

    /// The site named `name` (the first one, if several share it).
    pub fn site(&self, name: &str) -> Option<&SiteSnapshot> {
        self.sites.iter().find(|s| s.total.name == name)
    }
}

/// Makes snapshots: remembers each site's previous reading.
#[derive(Debug)]
pub(crate) struct Rollup {
    kernel: Kernel,
    last: Instant,
    sequence: u64,
    cost: CollectorCost,
    instrumentation: InstrumentationCost,
    /// What the last fold kept, for the next.
    memo: FoldMemo,
}

impl Rollup {
    /// `per_call_ns`: what a recorded call costs on this machine; `kernel`:
    /// the kernel view to fold in (loaded or not).
    pub(crate) fn new(per_call_ns: f64, kernel: Kernel) -> Rollup {
        Rollup {
            kernel,
            last: Instant::now(),
            sequence: 0,
            cost: CollectorCost::default(),
            instrumentation: InstrumentationCost {
                per_call_ns,
                ..InstrumentationCost::default()
            },
            memo: FoldMemo::default(),
        }
    }

    /// Reads every site and returns the snapshot of the interval since
    /// `previous`, the one this rollup made last (or the empty one).
    /// `thread_cpu` is the collector thread's CPU time so far.
    ///
    /// Nothing of `self` changes before every figure has been made, but for
    /// the fold's memo: after a panic here, [`Rollup::forget`] it.
    pub(crate) fn next(&mut self, previous: &Snapshot, thread_cpu: Duration) -> Snapshot {
        let started = Instant::now();
        let interval = started.saturating_duration_since(self.last);
        let seconds = interval.as_secs_f64();
        let mut interval_calls = 0u64;
        // Both lists are sorted by site id: one walk through each.
        let mut before = previous.sites.iter().peekable();
        let sites: Vec<SiteSnapshot> = self
            .memo
            .sites()
            .into_iter()
            .map(|total| {
                while before.next_if(|s| s.total.id < total.id).is_some() {}
                let interval = match before.next_if(|s| s.total.id == total.id) {
                    Some(before) => interval_between(&before.total, &total, seconds),
                    None => interval_between(&SiteStats::zero_like(&total), &total, seconds),
                };
                // Every call that began counts, whether it ended or not.
                interval_calls = interval_calls
                    .saturating_add(interval.calls + interval.cancelled + interval.panicked);
                SiteSnapshot { total, interval }
            })
            .collect();
        let names: HashMap<u32, CommandName> = sites
            .iter()
            .filter(|s| s.total.is_command)
            .map(|s| {
                let name = CommandName {
                    name: s.total.name,
                    module: s.total.module,
                };
                (crate::core::site::kind_of(s.total.id), name)
            })
            .collect();
        let kernel = self.kernel.read(&|kind| names.get(&kind).copied());
        let slowlog = slowlog::read();
        let added = Duration::from_secs_f64(
            (interval_calls as f64 * self.instrumentation.per_call_ns / 1e9).min(1e9),
        );
        let took = started.elapsed();
        self.last = started;
        self.sequence += 1;
        self.instrumentation.interval = added;
        self.instrumentation.total += added;
        self.cost.last_rollup = took;
        self.cost.total_rollup += took;
        self.cost.thread_cpu = thread_cpu;
        (
            self.instrumentation.shared_slot_threads,
            self.instrumentation.shared_slot_moves,
        ) = crate::core::thread_slot::shared_threads();
        Snapshot {
            taken_at: SystemTime::now(),
            interval,
            sequence: self.sequence,
            sites,
            collector: self.cost,
            slowlog,
            instrumentation: self.instrumentation,
            kernel,
        }
    }

    /// Forgets what the folds remembered, after one that panicked may have
    /// left it half-updated: the next fold reads every shard whole. Nothing
    /// recorded is lost (shards hold totals), and the next snapshot's
    /// interval runs from the last one published.
    pub(crate) fn forget(&mut self) {
        self.memo = FoldMemo::default();
    }

    /// Detaches the kernel view's programs and frees its maps.
    pub(crate) fn unload_kernel(&mut self) {
        self.kernel.unload();
    }
}
