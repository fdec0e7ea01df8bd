//! Export into the `metrics` facade, for servers that already run a
//! `metrics` recorder (metrics-exporter-prometheus, an OpenTelemetry bridge).
//!
//! After every rollup: counters are set to the sites' monotonic totals
//! (`absolute`), gauges to their current values, and the interval's latency
//! histogram is recorded bucket by bucket (`record_many` of the bucket's
//! value, in seconds), so a recorder sees every call within 1.6 % without
//! ferrite-obs replaying samples. Names and labels are those of `/metrics`,
//! but for two that the facade's integer counters cannot carry: busy time
//! (only in `/metrics`) and the collector's CPU time (a gauge,
//! `ferrite_obs_collector_cpu_seconds`).
//! Without a recorder installed, every call here is a no-op.

use metrics::{Label, Unit};

use crate::histogram::bucket_value;
use crate::prometheus::SITE_FAMILIES;
use crate::snapshot::{SiteSnapshot, Snapshot};

/// Gives the installed recorder the help text and unit of every metric.
pub(crate) fn describe() {
    for prefix in ["probe", "command"] {
        for family in &SITE_FAMILIES {
            let name = format!("ferrite_{prefix}_{}", family.name);
            match family.kind {
                "counter" if family.name.ends_with("_seconds_total") => {}
                "counter" => metrics::describe_counter!(name, Unit::Count, family.help),
                _ => metrics::describe_gauge!(name, Unit::Count, family.help),
            }
        }
        metrics::describe_histogram!(
            format!("ferrite_{prefix}_duration_seconds"),
            Unit::Seconds,
            "Latency of completed calls."
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
    metrics::describe_gauge!(
        "ferrite_obs_collector_cpu_seconds",
        Unit::Seconds,
        "CPU time of the collector's thread so far."
    );
    crate::kernel::export::describe();
}

/// The collector's handles into the `metrics` recorder: each site's metrics
/// are registered once (a name formatted, labels built, a key hashed and
/// looked up per metric) and then only updated, which costs a rollup a few
/// nanoseconds per metric rather than that registration. Registered afresh,
/// with their descriptions, when another recorder has been installed since.
#[derive(Default)]
pub(crate) struct Exporter {
    /// The address of the recorder the handles belong to.
    recorder: Option<usize>,
    /// Each site's handles, by site id.
    sites: Vec<Option<SiteHandles>>,
}

impl std::fmt::Debug for Exporter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Exporter")
            .field("sites", &self.sites.iter().flatten().count())
            .finish_non_exhaustive()
    }
}

/// One site's metrics: one handle per [`SITE_FAMILIES`] entry, then the
/// latency histogram.
struct SiteHandles {
    families: Vec<Handle>,
    latency: metrics::Histogram,
}

enum Handle {
    Counter(metrics::Counter),
    Gauge(metrics::Gauge),
    /// A counter of seconds: the facade's counters count whole events, so
    /// it is left to `/metrics`.
    Skipped,
}

impl Exporter {
    /// Publishes `snapshot` into the installed `metrics` recorder.
    pub(crate) fn export(&mut self, snapshot: &Snapshot) {
        let recorder = metrics::with_recorder(|r| std::ptr::from_ref(r).cast::<()>() as usize);
        if self.recorder != Some(recorder) {
            if self.recorder.is_some() {
                describe();
            }
            self.recorder = Some(recorder);
            self.sites.clear();
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
            for (low, _, count) in site.interval.latency.buckets() {
                let seconds = bucket_value(crate::histogram::bucket_index(low)) as f64 / 1e9;
                handles
                    .latency
                    .record_many(seconds, usize::try_from(count).unwrap_or(usize::MAX));
            }
        }
        let cost = &snapshot.collector;
        metrics::counter!("ferrite_obs_rollups_total").absolute(snapshot.sequence);
        metrics::gauge!("ferrite_obs_rollup_seconds").set(cost.last_rollup.as_secs_f64());
        metrics::gauge!("ferrite_obs_collector_cpu_seconds").set(cost.thread_cpu.as_secs_f64());
        metrics::gauge!("ferrite_obs_instrumentation_seconds")
            .set(snapshot.instrumentation.total.as_secs_f64());
        if let Some(kernel) = &snapshot.kernel {
            crate::kernel::export::export(kernel);
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
                match family.kind {
                    "counter" if family.name.ends_with("_seconds_total") => Handle::Skipped,
                    "counter" => Handle::Counter(metrics::counter!(name, labels.clone())),
                    _ => Handle::Gauge(metrics::gauge!(name, labels.clone())),
                }
            })
            .collect();
        let latency = metrics::histogram!(format!("ferrite_{prefix}_duration_seconds"), labels);
        SiteHandles { families, latency }
    }
}

fn labels(site: &SiteSnapshot) -> (&'static str, Vec<Label>) {
    if site.total.is_command {
        (
            "command",
            vec![Label::from_static_parts("command", site.total.name)],
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
