//! The kernel view's figures in the exports: Prometheus text for
//! `/metrics`, JSON for `/snapshot` and `/status`, and the `metrics` facade.
//!
//! Names: `ferrite_kernel_*`, labelled `command` (the command's probe name,
//! empty for unattributed requests) and `opcode` (`read`, `write`, ...).
//! Kernel io latency histograms are exported with the log2 bucket edges the
//! kernel keeps (1.024 µs to about 4.6 minutes), so every cumulative count
//! is exact.

use std::collections::HashMap;
use std::fmt::Write as _;

use metrics::{Label, Unit};

use super::{KernelCounters, KernelSnapshot, KernelStatus};
use crate::endpoint::json_string;
use crate::prometheus::escape;

/// One kernel counter: its name (after `ferrite_kernel_`), help text and
/// value. The one list every export is generated from.
type CounterField = (&'static str, &'static str, fn(&KernelCounters) -> u64);

const COUNTERS: [CounterField; 19] = [
    (
        "requests_submitted_total",
        "io_uring requests the process submitted.",
        |c| c.submitted,
    ),
    (
        "requests_attributed_total",
        "Submitted requests attributed to a command.",
        |c| c.attributed,
    ),
    (
        "requests_unattributed_total",
        "Submitted requests attributed to no command (pushed outside commands or never tagged).",
        |c| c.unattributed,
    ),
    (
        "slot_mismatches_total",
        "Submitted requests whose slot held another request's tag.",
        |c| c.slot_mismatches,
    ),
    (
        "stale_slots_total",
        "Submitted requests whose slot had already been used.",
        |c| c.stale_slots,
    ),
    (
        "requests_completed_total",
        "Completions of submitted requests.",
        |c| c.completed,
    ),
    (
        "requests_punted_total",
        "Requests handed to an io-wq worker.",
        |c| c.punted,
    ),
    (
        "submissions_failed_total",
        "Submissions the kernel failed.",
        |c| c.failed,
    ),
    ("short_writes_total", "Short writes.", |c| c.short_writes),
    (
        "cqe_overflows_total",
        "Completions that overflowed a CQ ring.",
        |c| c.cqe_overflows,
    ),
    (
        "events_dropped_total",
        "Outlier records lost because the ring buffer was full.",
        |c| c.events_dropped,
    ),
    (
        "read_faults_total",
        "Failed reads of the process's attribution tables.",
        |c| c.read_faults,
    ),
    (
        "inflight_full_total",
        "Requests not tracked because the in-flight map refused them.",
        |c| c.inflight_full,
    ),
    (
        "stats_full_total",
        "Completions or switches not aggregated because a map was full.",
        |c| c.stats_full,
    ),
    (
        "switch_outs_total",
        "Switch-outs of threads inside a command's poll.",
        |c| c.switch_outs,
    ),
    (
        "switch_ins_total",
        "Switch-outs matched by their switch-in.",
        |c| c.switch_ins,
    ),
    (
        "command_misses_total",
        "Completions or switches of a command whose own figures were no longer kept.",
        |c| c.command_misses,
    ),
    (
        "threads_without_slot_table_total",
        "Threads that tagged io_uring requests but found every slot table taken.",
        |c| c.threads_without_slot_table,
    ),
    (
        "program_runs_skipped_total",
        "Runs of the kernel view's programs the kernel skipped (never nested on one CPU): their events are missing.",
        |c| c.runs_skipped,
    ),
];

/// Per (command, opcode) io counters: name, help, value.
type IoField = (&'static str, &'static str, fn(&super::IoFigures) -> u64);

const IO_COUNTERS: [IoField; 4] = [
    ("io_ops_total", "Completed io_uring requests.", |io| io.ops),
    (
        "io_errors_total",
        "io_uring requests that completed with an error.",
        |io| io.errors,
    ),
    (
        "io_bytes_total",
        "Bytes moved by io_uring requests.",
        |io| io.bytes,
    ),
    (
        "io_punts_total",
        "io_uring requests handed to an io-wq worker.",
        |io| io.punts,
    ),
];

/// The first exported log2 edge: 2^10 ns.
const FIRST_EDGE: usize = 9;

/// Appends the kernel families to a Prometheus text exposition.
pub(crate) fn prometheus(out: &mut String, kernel: Option<&KernelSnapshot>) {
    let _ = writeln!(
        out,
        "# HELP ferrite_kernel_up Whether the kernel view (eBPF) is running."
    );
    let _ = writeln!(out, "# TYPE ferrite_kernel_up gauge");
    let _ = writeln!(out, "ferrite_kernel_up {}", u8::from(kernel.is_some()));
    let Some(kernel) = kernel else {
        return;
    };
    for (name, help, value) in COUNTERS {
        let _ = writeln!(out, "# HELP ferrite_kernel_{name} {help}");
        let _ = writeln!(out, "# TYPE ferrite_kernel_{name} counter");
        let _ = writeln!(out, "ferrite_kernel_{name} {}", value(&kernel.counters));
    }
    let io_labels = |io: &super::IoFigures| {
        format!(
            "command=\"{}\",opcode=\"{}\"",
            escape(io.command.unwrap_or("")),
            escape(&io.opcode_name)
        )
    };
    if !kernel.io.is_empty() {
        for (name, help, value) in IO_COUNTERS {
            let _ = writeln!(out, "# HELP ferrite_kernel_{name} {help}");
            let _ = writeln!(out, "# TYPE ferrite_kernel_{name} counter");
            for io in &kernel.io {
                let _ = writeln!(
                    out,
                    "ferrite_kernel_{name}{{{}}} {}",
                    io_labels(io),
                    value(io)
                );
            }
        }
        let name = "ferrite_kernel_io_duration_seconds";
        let _ = writeln!(
            out,
            "# HELP {name} Latency of io_uring requests, from their submission batch to their completion flush."
        );
        let _ = writeln!(out, "# TYPE {name} histogram");
        for io in &kernel.io {
            let labels = io_labels(io);
            let mut cumulative = 0u64;
            for (i, count) in io.buckets.iter().enumerate() {
                cumulative += count;
                if i >= FIRST_EDGE && i + 1 < io.buckets.len() {
                    let le = (1u64 << (i + 1)) as f64 / 1e9;
                    let _ = writeln!(out, "{name}_bucket{{{labels},le=\"{le}\"}} {cumulative}");
                }
            }
            let _ = writeln!(out, "{name}_bucket{{{labels},le=\"+Inf\"}} {cumulative}");
            let _ = writeln!(
                out,
                "{name}_sum{{{labels}}} {}",
                io.latency_sum.as_secs_f64()
            );
            let _ = writeln!(out, "{name}_count{{{labels}}} {cumulative}");
        }
    }
    if !kernel.off_cpu.is_empty() {
        let name = "ferrite_kernel_off_cpu_seconds_total";
        let _ = writeln!(
            out,
            "# HELP {name} Time commands' polls spent switched out: blocked (sleeping) or preempted (runnable)."
        );
        let _ = writeln!(out, "# TYPE {name} counter");
        for off in &kernel.off_cpu {
            let command = escape(off.command.unwrap_or(""));
            for (state, time) in [("blocked", off.blocked), ("preempted", off.preempted)] {
                let _ = writeln!(
                    out,
                    "{name}{{command=\"{command}\",state=\"{state}\"}} {}",
                    time.as_secs_f64()
                );
            }
        }
        for (name, help, value) in [
            (
                "ferrite_kernel_off_cpu_switches_total",
                "Switches ending a command's time off the CPU.",
                (|o| o.switches) as fn(&super::OffCpuFigures) -> u64,
            ),
            (
                "ferrite_kernel_blocking_polls_total",
                "Command polls that blocked their thread longer than ebpf.blocking_threshold.",
                |o| o.long_blocks,
            ),
        ] {
            let _ = writeln!(out, "# HELP {name} {help}");
            let _ = writeln!(out, "# TYPE {name} counter");
            for off in &kernel.off_cpu {
                let command = escape(off.command.unwrap_or(""));
                let _ = writeln!(out, "{name}{{command=\"{command}\"}} {}", value(off));
            }
        }
    }
    for (name, help, value) in [
        (
            "ferrite_kernel_events_total",
            "Outlier records received from the kernel.",
            kernel.events_received,
        ),
        (
            "ferrite_kernel_events_malformed_total",
            "Outlier records that could not be decoded.",
            kernel.events_malformed,
        ),
    ] {
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} counter");
        let _ = writeln!(out, "{name} {value}");
    }
}

/// The kernel figures as a JSON value (`null` when the view is not running).
pub(crate) fn json(out: &mut String, kernel: Option<&KernelSnapshot>) {
    let Some(kernel) = kernel else {
        out.push_str("null");
        return;
    };
    out.push_str("{\"counters\":{");
    for (i, (name, _, value)) in COUNTERS.iter().enumerate() {
        let key = name.strip_suffix("_total").unwrap_or(name);
        let _ = write!(out, "{}\"{key}\":{}", comma(i), value(&kernel.counters));
    }
    out.push_str("},\"io\":[");
    for (i, io) in kernel.io.iter().enumerate() {
        let bound = |q: f64| {
            io.quantile_upper_bound(q)
                .map_or_else(|| "null".to_owned(), |d| d.as_nanos().to_string())
        };
        let _ = write!(
            out,
            "{}{{\"command\":{},\"opcode\":{},\"opcode_name\":{},\"ops\":{},\"errors\":{},\"bytes\":{},\"punts\":{},\"latency_sum_ns\":{},\"p50_upper_ns\":{},\"p99_upper_ns\":{},\"log2_buckets\":{:?}}}",
            comma(i),
            io.command.map_or_else(|| "null".to_owned(), json_string),
            io.opcode,
            json_string(&io.opcode_name),
            io.ops,
            io.errors,
            io.bytes,
            io.punts,
            io.latency_sum.as_nanos(),
            bound(0.5),
            bound(0.99),
            io.buckets,
        );
    }
    out.push_str("],\"off_cpu\":[");
    for (i, off) in kernel.off_cpu.iter().enumerate() {
        let _ = write!(
            out,
            "{}{{\"command\":{},\"blocked_ns\":{},\"preempted_ns\":{},\"switches\":{},\"blocking_polls\":{}}}",
            comma(i),
            off.command.map_or_else(|| "null".to_owned(), json_string),
            off.blocked.as_nanos(),
            off.preempted.as_nanos(),
            off.switches,
            off.long_blocks,
        );
    }
    let _ = write!(
        out,
        "],\"events_received\":{},\"events_malformed\":{},\"recent_events\":[",
        kernel.events_received, kernel.events_malformed
    );
    for (i, event) in kernel.recent_events.iter().enumerate() {
        let _ = write!(
            out,
            "{}{{\"kind\":\"{}\",\"tid\":{},\"command_id\":{},\"command\":{},\"duration_ns\":{},\"opcode\":{},\"result\":{}}}",
            comma(i),
            event.kind.as_str(),
            event.tid,
            event.command_id,
            event.command.map_or_else(|| "null".to_owned(), json_string),
            event.duration.as_nanos(),
            event
                .opcode
                .as_deref()
                .map_or_else(|| "null".to_owned(), json_string),
            event
                .result
                .map_or_else(|| "null".to_owned(), |r| r.to_string()),
        );
    }
    out.push_str("]}");
}

/// The kernel status as a JSON object.
pub(crate) fn status_json(status: &KernelStatus) -> String {
    match status {
        KernelStatus::Off => "{\"state\":\"off\"}".to_owned(),
        KernelStatus::Unsupported { reason } => {
            format!(
                "{{\"state\":\"unsupported\",\"reason\":{}}}",
                json_string(reason)
            )
        }
        KernelStatus::Active {
            kernel,
            attached,
            unavailable,
        } => format!(
            "{{\"state\":\"active\",\"kernel\":{},\"attached\":[{}],\"unavailable\":[{}]}}",
            json_string(kernel),
            attached
                .iter()
                .map(|a| json_string(a))
                .collect::<Vec<_>>()
                .join(","),
            unavailable
                .iter()
                .map(|u| format!(
                    "{{\"figure\":\"{}\",\"reason\":{}}}",
                    u.figure,
                    json_string(&u.reason)
                ))
                .collect::<Vec<_>>()
                .join(",")
        ),
        KernelStatus::Degraded {
            kernel,
            step,
            cause,
            error,
            fix,
        } => format!(
            "{{\"state\":\"degraded\",\"kernel\":{},\"step\":\"{step}\",\"cause\":\"{cause}\",\"error\":{},\"fix\":{}}}",
            json_string(kernel),
            json_string(error),
            json_string(fix)
        ),
    }
}

fn comma(i: usize) -> &'static str {
    if i == 0 { "" } else { "," }
}

/// A kernel counter's name in the `metrics` facade.
fn facade_name(name: &str) -> String {
    format!("ferrite_kernel_{name}")
}

/// Gives the installed `metrics` recorder the kernel counters' help text.
pub(crate) fn describe() {
    let counters = COUNTERS.iter().map(|(name, help, _)| (name, help));
    let io = IO_COUNTERS.iter().map(|(name, help, _)| (name, help));
    for (name, help) in counters.chain(io) {
        metrics::describe_counter!(facade_name(name), Unit::Count, *help);
    }
    metrics::describe_gauge!(
        "ferrite_kernel_off_cpu_seconds",
        Unit::Seconds,
        "Time commands' polls spent switched out so far, by state."
    );
}

/// The kernel figures' handles into the installed `metrics` recorder, each
/// registered the first time its figure appears and then only updated (the
/// site metrics' way: see `crate::metrics_export::Exporter`). Bounded: one
/// entry per (command, opcode) pair and per command the kernel view saw.
#[derive(Default)]
pub(crate) struct KernelHandles {
    /// One per [`COUNTERS`] entry, once registered.
    counters: Vec<metrics::Counter>,
    /// One per [`IO_COUNTERS`] entry, by (command, opcode).
    io: HashMap<(Option<&'static str>, u32), Vec<metrics::Counter>>,
    /// Blocked, then preempted time, by command.
    off_cpu: HashMap<Option<&'static str>, [metrics::Gauge; 2]>,
}

impl KernelHandles {
    /// Publishes `kernel`: counters as their totals, off-CPU time as gauges
    /// of seconds (the facade's counters are integers). Latency histograms
    /// are in `/metrics`.
    pub(crate) fn export(&mut self, kernel: &KernelSnapshot) {
        if self.counters.is_empty() {
            self.counters = COUNTERS
                .iter()
                .map(|(name, _, _)| metrics::counter!(facade_name(name)))
                .collect();
        }
        for ((_, _, value), counter) in COUNTERS.iter().zip(&self.counters) {
            counter.absolute(value(&kernel.counters));
        }
        for io in &kernel.io {
            let counters = self.io.entry((io.command, io.opcode)).or_insert_with(|| {
                let labels = vec![
                    Label::from_static_parts("command", io.command.unwrap_or("")),
                    Label::new("opcode", io.opcode_name.clone()),
                ];
                IO_COUNTERS
                    .iter()
                    .map(|(name, _, _)| metrics::counter!(facade_name(name), labels.clone()))
                    .collect()
            });
            for ((_, _, value), counter) in IO_COUNTERS.iter().zip(counters.iter()) {
                counter.absolute(value(io));
            }
        }
        for off in &kernel.off_cpu {
            let gauges = self.off_cpu.entry(off.command).or_insert_with(|| {
                let command = off.command.unwrap_or("");
                ["blocked", "preempted"].map(|state| {
                    metrics::gauge!(
                        "ferrite_kernel_off_cpu_seconds",
                        vec![
                            Label::from_static_parts("command", command),
                            Label::from_static_parts("state", state),
                        ]
                    )
                })
            });
            for (gauge, time) in gauges.iter().zip([off.blocked, off.preempted]) {
                gauge.set(time.as_secs_f64());
            }
        }
    }
}
