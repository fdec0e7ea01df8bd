//! Prometheus text exposition (format 0.0.4) of a [`Snapshot`].
//!
//! Names follow Prometheus conventions: `ferrite_<subsystem>_<name>_<unit>`,
//! base units, `_total` on counters. Command roots are exported as
//! `ferrite_command_*{command="..."}`, every other site as
//! `ferrite_probe_*{site="...",module="..."}`. Latency histograms use
//! bucket bounds at the octave edges of ferrite-obs's own buckets (1 µs to
//! about 73 minutes), so each exported cumulative count is exact.

use std::fmt::Write;

use super::format::escape;
use crate::collect::snapshot::{SiteSnapshot, Snapshot};
use crate::core::figures::site_counters;
use crate::core::histogram::{BUCKETS, Histogram, bucket_bounds};

/// One metric family: its name, type and help text, and how a site's value
/// is read. The one list both exports (this text and the `metrics` facade)
/// are generated from.
pub(crate) struct Family {
    pub(crate) name: &'static str,
    pub(crate) kind: &'static str,
    pub(crate) help: &'static str,
    pub(crate) value: fn(&SiteSnapshot) -> f64,
}

macro_rules! site_families {
    ($($field:ident: $family:literal, $scale:literal, $help:literal;)*) => {
        /// The per-site families, named `ferrite_{probe|command}_{name}`: a
        /// counter per site counter, and the calls in flight.
        pub(crate) const SITE_FAMILIES: &[Family] = &[
            $(
                Family {
                    name: $family,
                    kind: "counter",
                    help: $help,
                    value: |s| s.total.$field as f64 * $scale,
                },
            )*
            Family {
                name: "in_flight",
                kind: "gauge",
                help: "Calls started and not yet ended.",
                value: |s| s.total.in_flight() as f64,
            },
        ];
    };
}

site_counters!(site_families! {});

/// The octave edges used as `le` bounds: indices of the last bucket of each
/// octave from 1 µs up.
fn exported_edges() -> impl Iterator<Item = usize> {
    (0..BUCKETS).filter(|&i| {
        let (_, high) = bucket_bounds(i);
        let next = high + 1;
        next >= 1024 && next.is_power_of_two() && i < BUCKETS - 1
    })
}

/// Renders `snapshot` as Prometheus text.
pub(crate) fn render(snapshot: &Snapshot) -> String {
    let mut out = String::with_capacity(4096 + snapshot.sites.len() * 4096);
    for (prefix, label, commands) in [("probe", "site", false), ("command", "command", true)] {
        let sites: Vec<&SiteSnapshot> = snapshot
            .sites
            .iter()
            .filter(|s| s.total.is_command == commands)
            .collect();
        if sites.is_empty() {
            continue;
        }
        for family in SITE_FAMILIES {
            let name = format!("ferrite_{prefix}_{}", family.name);
            let _ = writeln!(out, "# HELP {name} {}", family.help);
            let _ = writeln!(out, "# TYPE {name} {}", family.kind);
            for site in &sites {
                let _ = writeln!(
                    out,
                    "{name}{{{}}} {}",
                    labels(label, site),
                    (family.value)(site)
                );
            }
        }
        let name = format!("ferrite_{prefix}_duration_seconds");
        let _ = writeln!(out, "# HELP {name} Latency of completed calls.");
        let _ = writeln!(out, "# TYPE {name} histogram");
        for site in &sites {
            histogram(&mut out, &name, &labels(label, site), &site.total.latency);
        }
    }
    collector(&mut out, snapshot);
    super::kernel::prometheus(&mut out, snapshot.kernel.as_ref());
    out
}

/// A site's labels: its name (`command` or `site`) and its module, which
/// keeps apart two sites, or two commands, that share a name.
fn labels(label: &str, site: &SiteSnapshot) -> String {
    format!(
        "{label}=\"{}\",module=\"{}\"",
        escape(site.total.name),
        escape(site.total.module)
    )
}

fn histogram(out: &mut String, name: &str, labels: &str, latency: &Histogram) {
    let mut cumulative = 0u64;
    let mut next = 0usize;
    for edge in exported_edges() {
        while next <= edge {
            cumulative = cumulative.saturating_add(latency.bucket_count(next));
            next += 1;
        }
        let le = (bucket_bounds(edge).1 + 1) as f64 / 1e9;
        let _ = writeln!(out, "{name}_bucket{{{labels},le=\"{le}\"}} {cumulative}");
    }
    let count = latency.count();
    let _ = writeln!(out, "{name}_bucket{{{labels},le=\"+Inf\"}} {count}");
    let _ = writeln!(out, "{name}_sum{{{labels}}} {}", latency.sum() as f64 / 1e9);
    let _ = writeln!(out, "{name}_count{{{labels}}} {count}");
}

fn collector(out: &mut String, snapshot: &Snapshot) {
    let cost = &snapshot.collector;
    for (name, kind, help, value) in [
        (
            "ferrite_obs_rollups_total",
            "counter",
            "Rollups made by the collector.",
            snapshot.sequence as f64,
        ),
        (
            "ferrite_obs_rollup_seconds",
            "gauge",
            "Wall time of the last rollup.",
            cost.last_rollup.as_secs_f64(),
        ),
        (
            "ferrite_obs_rollup_seconds_total",
            "counter",
            "Wall time of every rollup.",
            cost.total_rollup.as_secs_f64(),
        ),
        (
            "ferrite_obs_instrumentation_seconds_total",
            "counter",
            "Estimated time the instrumentation added to the host: calls times the measured per-call cost.",
            snapshot.instrumentation.total.as_secs_f64(),
        ),
        (
            "ferrite_obs_instrumentation_call_seconds",
            "gauge",
            "Measured cost of one recorded call on this machine.",
            snapshot.instrumentation.per_call_ns / 1e9,
        ),
        (
            "ferrite_obs_shared_slot_threads_total",
            "counter",
            "Threads that recorded on the shared slot, every exclusive thread slot being taken (their calls cost about twice as much).",
            snapshot.instrumentation.shared_slot_threads as f64,
        ),
        (
            "ferrite_obs_shared_slot_moves_total",
            "counter",
            "Threads on the shared slot that moved to an exclusive one given back.",
            snapshot.instrumentation.shared_slot_moves as f64,
        ),
        (
            "ferrite_obs_collector_cpu_seconds_total",
            "counter",
            "CPU time of the collector's thread.",
            cost.thread_cpu.as_secs_f64(),
        ),
    ] {
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} {kind}");
        let _ = writeln!(out, "{name} {value}");
    }
}
