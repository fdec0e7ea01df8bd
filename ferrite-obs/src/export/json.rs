//! The JSON documents of the endpoint: `/snapshot`, `/status`, `/slowlog`.

use std::fmt::Write as _;

use super::format::json_string;
use crate::collect::snapshot::Snapshot;
use crate::status::Status;

/// `/status`: what is running.
pub(crate) fn status(status: &Status) -> String {
    format!(
        "{{\"enabled\":{},\"recording\":{},\"rollup_interval_seconds\":{},\"endpoint\":{},\"kernel\":{}}}\n",
        status.enabled,
        status.recording,
        status.rollup_interval.as_secs_f64(),
        json_string(&status.endpoint.map_or_else(String::new, |a| a.to_string())),
        super::kernel::status_json(&status.kernel),
    )
}

/// `/snapshot`: every site's totals and last interval, and the kernel view.
pub(crate) fn snapshot(snapshot: &Snapshot) -> String {
    let mut out = String::with_capacity(512 + snapshot.sites.len() * 512);
    let _ = write!(
        out,
        "{{\"sequence\":{},\"interval_seconds\":{},\"collector\":{{\"last_rollup_seconds\":{},\"total_rollup_seconds\":{},\"thread_cpu_seconds\":{}}},\"instrumentation\":{{\"per_call_ns\":{},\"interval_seconds\":{},\"total_seconds\":{}}},\"sites\":[",
        snapshot.sequence,
        snapshot.interval.as_secs_f64(),
        snapshot.collector.last_rollup.as_secs_f64(),
        snapshot.collector.total_rollup.as_secs_f64(),
        snapshot.collector.thread_cpu.as_secs_f64(),
        snapshot.instrumentation.per_call_ns,
        snapshot.instrumentation.interval.as_secs_f64(),
        snapshot.instrumentation.total.as_secs_f64(),
    );
    for (i, site) in snapshot.sites.iter().enumerate() {
        let t = &site.total;
        let v = &site.interval;
        let [p50, p90, p99, p999, max] = v
            .latency
            .quantiles([0.5, 0.9, 0.99, 0.999, 1.0])
            .map(|ns| ns.map_or("null".to_owned(), |ns| ns.to_string()));
        let _ = write!(
            out,
            "{}{{\"name\":{},\"module\":{},\"command\":{},\"async\":{},\
             \"total\":{{\"calls\":{},\"errors\":{},\"cancelled\":{},\"panicked\":{},\"in_flight\":{},\"polls\":{},\"busy_ns\":{},\"latency_sum_ns\":{},\"latency_buckets\":[{}]}},\
             \"interval\":{{\"calls\":{},\"errors\":{},\"calls_per_second\":{},\"polls\":{},\"busy_ns\":{},\
             \"p50_ns\":{},\"p90_ns\":{},\"p99_ns\":{},\"p999_ns\":{},\"max_ns\":{}}}}}",
            if i == 0 { "" } else { "," },
            json_string(t.name),
            json_string(t.module),
            t.is_command,
            t.is_async,
            t.calls,
            t.errors,
            t.cancelled,
            t.panicked,
            t.in_flight(),
            t.polls,
            t.busy_ns,
            t.latency.sum(),
            t.latency
                .buckets()
                .map(|(low, high, count)| format!("[{low},{high},{count}]"))
                .collect::<Vec<_>>()
                .join(","),
            v.calls,
            v.errors,
            v.calls_per_second,
            v.polls,
            v.busy_ns,
            p50,
            p90,
            p99,
            p999,
            max,
        );
    }
    out.push_str("],\"kernel\":");
    super::kernel::json(&mut out, snapshot.kernel.as_ref());
    out.push_str("}\n");
    out
}

/// `/slowlog`: the slow commands of the latest snapshot.
pub(crate) fn slowlog(snapshot: &Snapshot) -> String {
    let log = &snapshot.slowlog;
    let mut out = format!(
        "{{\"logged\":{},\"dropped\":{},\"entries\":[",
        log.logged, log.dropped
    );
    for (i, entry) in log.entries.iter().enumerate() {
        let started = entry
            .started_at
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64());
        let _ = write!(
            out,
            "{}{{\"id\":{},\"command\":{},\"started_at_unix_seconds\":{started},\"duration_ns\":{},\"busy_ns\":{},\"error\":{},\"kernel\":{}}}",
            if i == 0 { "" } else { "," },
            entry.id,
            json_string(entry.command),
            entry.duration.as_nanos(),
            entry.busy.as_nanos(),
            entry.error,
            entry.kernel.map_or_else(
                || "null".to_owned(),
                |k| format!(
                    "{{\"io_requests\":{},\"io_wait_ns\":{},\"off_cpu_ns\":{},\"on_cpu_ns\":{}}}",
                    k.io_requests,
                    k.io_wait.as_nanos(),
                    k.off_cpu.as_nanos(),
                    k.on_cpu.as_nanos()
                ),
            ),
        );
    }
    out.push_str("]}\n");
    out
}
