//! Reading the call-site figures.

use crate::core::sync::Ordering;

use crate::core::figures::site_counters;
use crate::core::histogram::{Dense, Histogram};
use crate::core::registry::REGISTRY;
use crate::core::site::{Site, SiteMemo, SiteMeta};

static CALIBRATION_META: SiteMeta = SiteMeta {
    name: "ferrite_obs_calibration",
    c_name: "ferrite_obs_calibration\0",
    module: module_path!(),
    file: file!(),
    line: line!(),
    is_async: false,
    is_command: false,
};

/// The site the runtime measures the per-call cost at (`cost`); left out
/// of every listing.
pub(crate) static CALIBRATION: Site = Site::new(&CALIBRATION_META);

macro_rules! site_stats {
    ($($field:ident: $family:literal, $scale:literal, $help:literal;)*) => {
        /// The figures of one call site, folded from every thread's shard.
        ///
        /// All counters are monotonic since the process started (the runtime
        /// turns them into per-interval rates). Read while calls are running,
        /// the figures are not one instant's cut, but they are always
        /// consistent as inequalities: `errors <= calls <= latency.count()`
        /// and `calls + cancelled + panicked <= started`. Once the calls have
        /// finished, they are exact.
        #[derive(Clone, Debug)]
        pub struct SiteStats {
            /// Registration order of the site, unique in the process.
            pub id: usize,
            /// Probe name (the function's name unless `name = "..."` was given).
            pub name: &'static str,
            /// Module path of the instrumented function.
            pub module: &'static str,
            /// Source file of the instrumented function.
            pub file: &'static str,
            /// Source line of the instrumented function.
            pub line: u32,
            /// Whether the function is `async`.
            pub is_async: bool,
            /// Whether the function is a command root (`#[probe(command)]`).
            pub is_command: bool,
            /// Calls that began while recording.
            pub started: u64,
            $(
                #[doc = $help]
                pub $field: u64,
            )*
            /// Latency of completed calls in nanoseconds: call to return, or an
            /// async call's first poll to completion. Its sum is the total time.
            pub latency: Histogram,
        }

        impl SiteStats {
            /// The same site with every figure zero: the reading before the
            /// first.
            #[cfg(feature = "runtime")]
            pub(crate) fn zero_like(site: &SiteStats) -> SiteStats {
                SiteStats {
                    started: 0,
                    $($field: 0,)*
                    latency: Histogram::new(),
                    ..site.clone()
                }
            }

            fn read(
                site: &'static Site,
                latency: &mut Dense,
                memo: Option<&mut SiteMemo>,
            ) -> SiteStats {
                let meta = site.meta();
                let totals = site.read_with(latency, memo);
                SiteStats {
                    id: site.id.load(Ordering::Relaxed),
                    name: meta.name,
                    module: meta.module,
                    file: meta.file,
                    line: meta.line,
                    is_async: meta.is_async,
                    is_command: meta.is_command,
                    started: totals.started,
                    $($field: totals.$field,)*
                    latency: totals.histogram,
                }
            }
        }
    };
}

site_counters!(site_stats! {});

impl SiteStats {
    /// Calls under way: started and not yet returned, cancelled or panicked.
    pub fn in_flight(&self) -> u64 {
        self.started
            .saturating_sub(self.calls)
            .saturating_sub(self.cancelled)
            .saturating_sub(self.panicked)
    }

    /// Latency at quantile `q` in nanoseconds (within 1.6 %).
    pub fn quantile(&self, q: f64) -> Option<u64> {
        self.latency.quantile(q)
    }
}

/// Figures of every call site that has recorded, in registration order.
///
/// Reading never blocks or slows down the probed calls. Sites that have not
/// recorded yet are not listed.
pub fn sites() -> Vec<SiteStats> {
    fold(None)
}

/// What the collector's folds remember of every site, by site id (see
/// [`crate::core::shard::ShardMemo`]).
#[derive(Debug, Default)]
pub(crate) struct FoldMemo {
    sites: Vec<SiteMemo>,
}

impl FoldMemo {
    /// [`sites`], recalling from this memo the histograms of shards that
    /// have stood still since its earlier folds.
    #[cfg(feature = "runtime")]
    pub(crate) fn sites(&mut self) -> Vec<SiteStats> {
        fold(Some(self))
    }

    fn site(&self, site: &Site) -> Option<&SiteMemo> {
        self.sites.get(site.id.load(Ordering::Relaxed))
    }
}

fn fold(mut memo: Option<&mut FoldMemo>) -> Vec<SiteStats> {
    let sites: Vec<&'static Site> = REGISTRY
        .sites()
        .filter(|site| !std::ptr::eq(*site, &CALIBRATION))
        .collect();
    if let Some(memo) = memo.as_deref_mut() {
        // Ids are registration order (assigned before a site is listed):
        // this is room for every site's.
        let len = sites.iter().map(|s| s.id.load(Ordering::Relaxed) + 1).max();
        if let Some(len) = len.filter(|&len| len > memo.sites.len()) {
            memo.sites.resize_with(len, SiteMemo::default);
        }
    }
    let mut all = Vec::with_capacity(sites.len());
    let mut latency = Dense::new();
    for (i, site) in sites.iter().enumerate() {
        // Memory a few sites ahead is requested while this one is folded:
        // a fold mostly waits for cache lines, and this way several arrive
        // at once.
        if let Some(ahead) = sites.get(i + 4) {
            ahead.prefetch_table();
        }
        if let Some(ahead) = sites.get(i + 2) {
            ahead.prefetch_shards();
        }
        if let Some(ahead) = sites.get(i + 1) {
            ahead.prefetch_groups(memo.as_deref().and_then(|memo| memo.site(ahead)));
        }
        let id = site.id.load(Ordering::Relaxed);
        let site_memo = memo.as_deref_mut().and_then(|memo| memo.sites.get_mut(id));
        all.push(SiteStats::read(site, &mut latency, site_memo));
    }
    all.sort_by_key(|s| s.id);
    all
}

/// Figures of the command roots (`#[probe(command)]`), in registration order.
pub fn commands() -> Vec<SiteStats> {
    let mut latency = Dense::new();
    let mut all: Vec<SiteStats> = REGISTRY
        .sites()
        .filter(|site| site.meta().is_command)
        .map(|site| SiteStats::read(site, &mut latency, None))
        .collect();
    all.sort_by_key(|s| s.id);
    all
}
