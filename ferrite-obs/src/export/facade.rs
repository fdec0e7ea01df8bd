//! Export into the `metrics` facade, for servers that already run a
//! `metrics` recorder (metrics-exporter-prometheus, an OpenTelemetry bridge).
//!
//! After every rollup: counters are set to the sites' monotonic totals
//! (`absolute`), gauges to their current values, and the latency of the
//! interval's calls goes out as one gauge per quantile,
//! `ferrite_{probe,command}_interval_duration_seconds{..., stat="p50"}`
//! (also `p90`, `p99`, `p999` and `max`, as in `/snapshot`), NaN for an
//! interval in which no call completed (`quantile` is a summary's label,
//! which a gauge may not use). Not as a facade histogram: the facade takes
//! samples one at a time, and replaying a rollup's calls into it would cost
//! the collector (and the recorder's memory) in proportion to the host's
//! call rate; the exact histograms, with every bucket, are in the
//! endpoint's `/metrics`.
//! Names and labels are those of `/metrics`, but for two that the facade's
//! integer counters cannot carry: busy time (only in `/metrics`) and the
//! collector's CPU time (a gauge, `ferrite_obs_collector_cpu_seconds`).
//! Without a recorder installed, every call here is a no-op.
//!
//! Everything here calls into the recorder, which is foreign code: the
//! runtime runs it on a thread of its own, as a watched stage
//! ([`Stage::Facade`](crate::status::Stage)), so that a recorder that
//! blocks or panics holds up nothing else.

use metrics::{Label, Unit};

use crate::collect::snapshot::{SiteSnapshot, Snapshot};
use crate::export::prometheus::{Family, SITE_FAMILIES};

/// Gives the installed recorder the help text and unit of every metric.
fn describe() {
    for prefix in ["probe", "command"] {
        for family in SITE_FAMILIES {
            let name = format!("ferrite_{prefix}_{}", family.name);
            match facade_kind(family) {
                FacadeKind::Counter => metrics::describe_counter!(name, Unit::Count, family.help),
                FacadeKind::Gauge => metrics::describe_gauge!(name, Unit::Count, family.help),
                FacadeKind::Skipped => {}
            }
        }
        metrics::describe_gauge!(
            format!("ferrite_{prefix}_interval_duration_seconds"),
            Unit::Seconds,
            "Latency of the calls completed in the last rollup interval, by quantile \
             (within 1.6 %); NaN when none completed."
        );
    }
    metrics::describe_counter!(
        "ferrite_obs_rollups_total",
        Unit::Count,
        "Rollups made by the collector."
    );
    metrics::describe_gauge!(
        "ferrite_obs_rollup_seconds",
        Unit::Seconds,
        "Wall time of the last rollup."
    );
    metrics::describe_gauge!(
        "ferrite_obs_instrumentation_seconds",
        Unit::Seconds,
        "Estimated time the instrumentation added to the host so far."
    );
    metrics::describe_counter!(
        "ferrite_obs_shared_slot_threads_total",
        Unit::Count,
        "Threads that recorded on the shared slot, every exclusive thread slot being taken."
    );
    metrics::describe_counter!(
        "ferrite_obs_shared_slot_moves_total",
        Unit::Count,
        "Threads on the shared slot that moved to an exclusive one given back."
    );
    metrics::describe_gauge!(
        "ferrite_obs_collector_cpu_seconds",
        Unit::Seconds,
        "CPU time of the collector's thread so far."
    );
    crate::export::kernel::describe();
}

/// The export's handles into the `metrics` recorder: each site's metrics
/// are registered once (a name formatted, labels built, a key hashed and
/// looked up per metric) and then only updated, which costs a rollup a few
/// nanoseconds per metric rather than that registration. Described and
/// registered at the first export, and afresh when another recorder has
/// been installed since.
#[derive(Default)]
pub(crate) struct Exporter {
    /// The address of the recorder the handles belong to.
    recorder: Option<usize>,
    /// Each site's handles, by site id.
    sites: Vec<Option<SiteHandles>>,
    /// The kernel view's figures' handles.
    kernel: crate::export::kernel::KernelHandles,
}

impl std::fmt::Debug for Exporter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Exporter")
            .field("sites", &self.sites.iter().flatten().count())
            .finish_non_exhaustive()
    }
}

/// The quantiles exported as gauges, with their label values.
const QUANTILES: [(f64, &str); 5] = [
    (0.5, "p50"),
    (0.9, "p90"),
    (0.99, "p99"),
    (0.999, "p999"),
    (1.0, "max"),
];

/// One site's metrics: one handle per [`SITE_FAMILIES`] entry, then one
/// latency gauge per [`QUANTILES`] entry.
struct SiteHandles {
    families: Vec<Handle>,
    latency: Vec<metrics::Gauge>,
}

enum Handle {
    Counter(metrics::Counter),
    Gauge(metrics::Gauge),
    Skipped,
}

/// What a site family is in the facade.
enum FacadeKind {
    Counter,
    Gauge,
    /// A counter of seconds: the facade's counters count whole events, so
    /// it is left to `/metrics`.
    Skipped,
}

fn facade_kind(family: &Family) -> FacadeKind {
    match family.kind {
        "counter" if family.name.ends_with("_seconds_total") => FacadeKind::Skipped,
        "counter" => FacadeKind::Counter,
        _ => FacadeKind::Gauge,
    }
}

impl Exporter {
    /// Publishes `snapshot` into the installed `metrics` recorder.
    pub(crate) fn export(&mut self, snapshot: &Snapshot) {
        let recorder = metrics::with_recorder(|r| std::ptr::from_ref(r).cast::<()>() as usize);
        if self.recorder != Some(recorder) {
            describe();
            self.recorder = Some(recorder);
            self.sites.clear();
            self.kernel = crate::export::kernel::KernelHandles::default();
        }
        for site in &snapshot.sites {
            let id = site.total.id;
            if self.sites.len() <= id {
                self.sites.resize_with(id + 1, || None);
            }
            let handles = self.sites[id].get_or_insert_with(|| SiteHandles::register(site));
            for (family, handle) in SITE_FAMILIES.iter().zip(&handles.families) {
                let value = (family.value)(site);
                match handle {
                    Handle::Counter(counter) => counter.absolute(value as u64),
                    Handle::Gauge(gauge) => gauge.set(value),
                    Handle::Skipped => {}
                }
            }
            let values = site.interval.latency.quantiles(QUANTILES.map(|(q, _)| q));
            for (ns, gauge) in values.iter().zip(&handles.latency) {
                gauge.set(ns.map_or(f64::NAN, |ns| ns as f64 / 1e9));
            }
        }
        let cost = &snapshot.collector;
        metrics::counter!("ferrite_obs_rollups_total").absolute(snapshot.sequence);
        metrics::counter!("ferrite_obs_shared_slot_threads_total")
            .absolute(snapshot.instrumentation.shared_slot_threads);
        metrics::counter!("ferrite_obs_shared_slot_moves_total")
            .absolute(snapshot.instrumentation.shared_slot_moves);
        metrics::gauge!("ferrite_obs_rollup_seconds").set(cost.last_rollup.as_secs_f64());
        metrics::gauge!("ferrite_obs_collector_cpu_seconds").set(cost.thread_cpu.as_secs_f64());
        metrics::gauge!("ferrite_obs_instrumentation_seconds")
            .set(snapshot.instrumentation.total.as_secs_f64());
        if let Some(kernel) = &snapshot.kernel {
            self.kernel.export(kernel);
        }
    }
}

impl SiteHandles {
    fn register(site: &SiteSnapshot) -> SiteHandles {
        let (prefix, labels) = labels(site);
        let families = SITE_FAMILIES
            .iter()
            .map(|family| {
                let name = format!("ferrite_{prefix}_{}", family.name);
                match facade_kind(family) {
                    FacadeKind::Counter => Handle::Counter(metrics::counter!(name, labels.clone())),
                    FacadeKind::Gauge => Handle::Gauge(metrics::gauge!(name, labels.clone())),
                    FacadeKind::Skipped => Handle::Skipped,
                }
            })
            .collect();
        let name = format!("ferrite_{prefix}_interval_duration_seconds");
        let latency = QUANTILES
            .iter()
            .map(|(_, stat)| {
                let mut labels = labels.clone();
                labels.push(Label::from_static_parts("stat", stat));
                metrics::gauge!(name.clone(), labels)
            })
            .collect();
        SiteHandles { families, latency }
    }
}

fn labels(site: &SiteSnapshot) -> (&'static str, Vec<Label>) {
    if site.total.is_command {
        (
            "command",
            vec![
                Label::from_static_parts("command", site.total.name),
                Label::from_static_parts("module", site.total.module),
            ],
        )
    } else {
        (
            "probe",
            vec![
                Label::from_static_parts("site", site.total.name),
                Label::from_static_parts("module", site.total.module),
            ],
        )
    }
}
