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

/// Publishes `snapshot` into the installed `metrics` recorder.
pub(crate) fn export(snapshot: &Snapshot) {
    for site in &snapshot.sites {
        let (prefix, labels) = labels(site);
        for family in &SITE_FAMILIES {
            let name = format!("ferrite_{prefix}_{}", family.name);
            let value = (family.value)(site);
            match family.kind {
                // The facade's counters count whole events; a counter of
                // seconds (busy time) is left to `/metrics`.
                "counter" if family.name.ends_with("_seconds_total") => {}
                "counter" => metrics::counter!(name, labels.clone()).absolute(value as u64),
                _ => metrics::gauge!(name, labels.clone()).set(value),
            }
        }
        let latency = metrics::histogram!(format!("ferrite_{prefix}_duration_seconds"), labels);
        for (low, _, count) in site.interval.latency.buckets() {
            let seconds = bucket_value(crate::histogram::bucket_index(low)) as f64 / 1e9;
            latency.record_many(seconds, usize::try_from(count).unwrap_or(usize::MAX));
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
