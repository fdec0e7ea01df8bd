//! The JSON documents of the endpoint, `/snapshot`, `/status` and
//! `/slowlog`: each snapshot figure put into its [`schema`](crate::schema)
//! type, then serialised.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::format::json_string;
use crate::collect::snapshot::{SiteSnapshot, Snapshot};
use crate::core::figures::site_counters;
use crate::schema::{self, SCHEMA_VERSION};
use crate::status::{
    CaughtPanic, CollectorState, CollectorStatus, FacadeState, FacadeStatus, Status,
};

/// `/status`: what is running.
pub(crate) fn status(status: &Status) -> String {
    render(&schema::Status {
        schema_version: SCHEMA_VERSION,
        enabled: status.enabled,
        recording: status.recording,
        collector_running: status.collector_running,
        rollup_interval_seconds: status.rollup_interval.as_secs_f64(),
        endpoint: status.endpoint.map_or_else(String::new, |a| a.to_string()),
        endpoint_listening: Some(status.endpoint_listening),
        endpoint_evicted: status.endpoint_evicted,
        endpoint_refused: status.endpoint_refused,
        kernel: super::kernel::status_document(&status.kernel),
        collector: Some(collector(&status.collector)),
        facade: Some(facade(&status.facade)),
    })
}

fn collector(collector: &CollectorStatus) -> schema::CollectorStatus {
    schema::CollectorStatus {
        state: match &collector.state {
            CollectorState::Off => schema::CollectorState::Off,
            CollectorState::Running => schema::CollectorState::Running,
            CollectorState::Failing => schema::CollectorState::Failing,
            CollectorState::Stalled {
                stage,
                since,
                duration,
            } => schema::CollectorState::Stalled {
                stage: stage.map(|s| s.as_str().to_owned()),
                since_unix_seconds: unix_seconds(*since),
                stalled_seconds: duration.as_secs_f64(),
            },
            CollectorState::Exited { reason } => schema::CollectorState::Exited {
                reason: reason.clone(),
            },
        },
        rollups: collector.rollups,
        last_rollup_unix_seconds: collector.last_rollup.map(unix_seconds),
        last_rollup_age_seconds: collector.last_rollup_age.map(|d| d.as_secs_f64()),
        panics: collector.panics,
        last_panic: collector.last_panic.as_ref().map(caught),
    }
}

fn facade(facade: &FacadeStatus) -> schema::FacadeStatus {
    schema::FacadeStatus {
        state: match &facade.state {
            FacadeState::Off => schema::FacadeState::Off,
            FacadeState::Running => schema::FacadeState::Running,
            FacadeState::Stalled { since, duration } => schema::FacadeState::Stalled {
                since_unix_seconds: unix_seconds(*since),
                stalled_seconds: duration.as_secs_f64(),
            },
            FacadeState::Failed => schema::FacadeState::Failed,
        },
        exports: facade.exports,
        last_export_unix_seconds: facade.last_export.map(unix_seconds),
        last_export_age_seconds: facade.last_export_age.map(|d| d.as_secs_f64()),
        panics: facade.panics,
        last_panic: facade.last_panic.as_ref().map(caught),
    }
}

fn caught(panic: &CaughtPanic) -> schema::CaughtPanic {
    schema::CaughtPanic {
        stage: panic.stage.as_str().to_owned(),
        message: panic.message.clone(),
        at_unix_seconds: unix_seconds(panic.at),
    }
}

fn unix_seconds(at: SystemTime) -> f64 {
    at.duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// `/snapshot`: every site's totals and last interval, and the kernel view.
pub(crate) fn snapshot(snapshot: &Snapshot) -> String {
    render(&schema::Snapshot {
        schema_version: SCHEMA_VERSION,
        sequence: snapshot.sequence,
        interval_seconds: snapshot.interval.as_secs_f64(),
        collector: schema::Collector {
            last_rollup_seconds: snapshot.collector.last_rollup.as_secs_f64(),
            total_rollup_seconds: snapshot.collector.total_rollup.as_secs_f64(),
            thread_cpu_seconds: snapshot.collector.thread_cpu.as_secs_f64(),
        },
        instrumentation: schema::Instrumentation {
            per_call_ns: snapshot.instrumentation.per_call_ns,
            interval_seconds: snapshot.instrumentation.interval.as_secs_f64(),
            total_seconds: snapshot.instrumentation.total.as_secs_f64(),
            shared_slot_threads: snapshot.instrumentation.shared_slot_threads,
            shared_slot_moves: snapshot.instrumentation.shared_slot_moves,
        },
        sites: snapshot.sites.iter().map(site).collect(),
        kernel: snapshot.kernel.as_ref().map(super::kernel::document),
    })
}

macro_rules! site_document {
    ($($field:ident: $family:literal, $scale:literal, $help:literal;)*) => {
        fn site(site: &SiteSnapshot) -> schema::Site {
            let (t, v) = (&site.total, &site.interval);
            let [p50_ns, p90_ns, p99_ns, p999_ns, max_ns] =
                v.latency.quantiles([0.5, 0.9, 0.99, 0.999, 1.0]);
            schema::Site {
                name: t.name.to_owned(),
                module: t.module.to_owned(),
                command: t.is_command,
                is_async: t.is_async,
                total: schema::Totals {
                    $($field: t.$field,)*
                    in_flight: t.in_flight(),
                    latency_sum_ns: t.latency.sum(),
                    latency_buckets: t
                        .latency
                        .buckets()
                        .map(|(low, high, count)| [low, high, count])
                        .collect(),
                },
                interval: schema::Interval {
                    $($field: v.$field,)*
                    calls_per_second: v.calls_per_second,
                    p50_ns,
                    p90_ns,
                    p99_ns,
                    p999_ns,
                    max_ns,
                },
            }
        }
    };
}

site_counters!(site_document! {});

/// `/slowlog`: the slow commands of the latest snapshot.
pub(crate) fn slowlog(snapshot: &Snapshot) -> String {
    let log = &snapshot.slowlog;
    let nanos = |d: Duration| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
    render(&schema::SlowLog {
        schema_version: SCHEMA_VERSION,
        logged: log.logged,
        dropped: log.dropped,
        entries: log
            .entries
            .iter()
            .map(|entry| schema::SlowEntry {
                id: entry.id,
                command: entry.command.to_owned(),
                started_at_unix_seconds: unix_seconds(entry.started_at),
                duration_ns: nanos(entry.duration),
                busy_ns: nanos(entry.busy),
                error: entry.error,
                kernel: entry.kernel.map(|k| schema::SlowKernel {
                    io_requests: k.io_requests,
                    io_wait_ns: nanos(k.io_wait),
                    off_cpu_ns: nanos(k.off_cpu),
                    on_cpu_ns: nanos(k.on_cpu),
                }),
            })
            .collect(),
    })
}

/// A document as one line of JSON. The schema's types hold only numbers,
/// strings, options and sequences, so serialising them cannot fail; were it
/// ever to, the answer names the failure instead of being cut short.
fn render(document: &impl serde::Serialize) -> String {
    match serde_json::to_string(document) {
        Ok(mut json) => {
            json.push('\n');
            json
        }
        Err(error) => format!("{{\"error\":{}}}\n", json_string(&error.to_string())),
    }
}
