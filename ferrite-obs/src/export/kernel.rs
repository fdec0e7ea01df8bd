//! The kernel view's figures in the exports: Prometheus text for
//! `/metrics`, the documents of `/snapshot` and `/status`, and the `metrics`
//! facade.
//!
//! Names: `ferrite_kernel_*`, labelled `command` (the command's probe name,
//! empty for unattributed requests), `module` (its function's module, which
//! keeps apart two commands of one name) and `opcode` (`read`, `write`, ...).
//! Kernel io latency histograms are exported with the log2 bucket edges the
//! kernel keeps (1.024 µs to about 4.6 minutes), so every cumulative count
//! is exact.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::time::Duration;

use metrics::{Label, Unit};

use super::format::escape;
use crate::kernel::{IoFigures, KERNEL_COUNTERS, KernelSnapshot, KernelStatus, OffCpuFigures};
use crate::schema;

/// Per (command, opcode) io counters: name, help, value.
type IoField = (&'static str, &'static str, fn(&IoFigures) -> u64);

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
    for (name, help, value) in KERNEL_COUNTERS {
        let _ = writeln!(out, "# HELP ferrite_kernel_{name} {help}");
        let _ = writeln!(out, "# TYPE ferrite_kernel_{name} counter");
        let _ = writeln!(out, "ferrite_kernel_{name} {}", value(&kernel.counters));
    }
    let io_labels = |io: &IoFigures| {
        format!(
            "command=\"{}\",module=\"{}\",opcode=\"{}\"",
            escape(io.command.unwrap_or("")),
            escape(io.module.unwrap_or("")),
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
            let command = off_cpu_labels(off);
            for (state, time) in [("blocked", off.blocked), ("preempted", off.preempted)] {
                let _ = writeln!(
                    out,
                    "{name}{{{command},state=\"{state}\"}} {}",
                    time.as_secs_f64()
                );
            }
        }
        for (name, help, value) in [
            (
                "ferrite_kernel_off_cpu_switches_total",
                "Switches ending a command's time off the CPU.",
                (|o| o.switches) as fn(&OffCpuFigures) -> u64,
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
                let _ = writeln!(out, "{name}{{{}}} {}", off_cpu_labels(off), value(off));
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

/// The labels of a command's off-CPU series.
fn off_cpu_labels(off: &OffCpuFigures) -> String {
    format!(
        "command=\"{}\",module=\"{}\"",
        escape(off.command.unwrap_or("")),
        escape(off.module.unwrap_or(""))
    )
}

/// The kernel figures in the `/snapshot` document.
pub(crate) fn document(kernel: &KernelSnapshot) -> schema::Kernel {
    let command = |c: Option<&'static str>| c.map(str::to_owned);
    let nanos = |d: Duration| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
    schema::Kernel {
        counters: KERNEL_COUNTERS
            .iter()
            .map(|(name, _, value)| {
                let key = name.strip_suffix("_total").unwrap_or(name);
                (key.to_owned(), value(&kernel.counters))
            })
            .collect(),
        io: kernel
            .io
            .iter()
            .map(|io| {
                let bound = |q: f64| io.quantile_upper_bound(q).map(nanos);
                schema::Io {
                    command: command(io.command),
                    module: command(io.module),
                    opcode: io.opcode,
                    opcode_name: io.opcode_name.clone(),
                    ops: io.ops,
                    errors: io.errors,
                    bytes: io.bytes,
                    punts: io.punts,
                    latency_sum_ns: nanos(io.latency_sum),
                    p50_upper_ns: bound(0.5),
                    p99_upper_ns: bound(0.99),
                    log2_buckets: io.buckets.clone(),
                }
            })
            .collect(),
        off_cpu: kernel
            .off_cpu
            .iter()
            .map(|off| schema::OffCpu {
                command: command(off.command),
                module: command(off.module),
                blocked_ns: nanos(off.blocked),
                preempted_ns: nanos(off.preempted),
                switches: off.switches,
                blocking_polls: off.long_blocks,
            })
            .collect(),
        events_received: kernel.events_received,
        events_malformed: kernel.events_malformed,
        recent_events: kernel
            .recent_events
            .iter()
            .map(|event| schema::Event {
                kind: event.kind.as_str().to_owned(),
                tid: event.tid,
                command_id: event.command_id,
                command: command(event.command),
                duration_ns: nanos(event.duration),
                opcode: event.opcode.clone(),
                result: event.result,
            })
            .collect(),
    }
}

/// The kernel status in the `/status` document.
pub(crate) fn status_document(status: &KernelStatus) -> schema::KernelStatus {
    match status {
        KernelStatus::Off => schema::KernelStatus::Off,
        KernelStatus::Unsupported { reason } => schema::KernelStatus::Unsupported {
            reason: reason.clone(),
        },
        KernelStatus::Active {
            kernel,
            attached,
            unavailable,
        } => schema::KernelStatus::Active {
            kernel: kernel.clone(),
            attached: attached.clone(),
            unavailable: unavailable
                .iter()
                .map(|u| schema::Unavailable {
                    figure: u.figure.to_string(),
                    reason: u.reason.clone(),
                })
                .collect(),
        },
        KernelStatus::Degraded {
            kernel,
            step,
            cause,
            error,
            fix,
        } => schema::KernelStatus::Degraded {
            kernel: kernel.clone(),
            step: step.to_string(),
            cause: cause.to_string(),
            error: error.clone(),
            fix: fix.clone(),
        },
    }
}

/// A kernel counter's name in the `metrics` facade.
fn facade_name(name: &str) -> String {
    format!("ferrite_kernel_{name}")
}

/// Gives the installed `metrics` recorder the kernel counters' help text.
pub(crate) fn describe() {
    let counters = KERNEL_COUNTERS.iter().map(|(name, help, _)| (name, help));
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

/// A command's name and module, as a series key.
type Command = (Option<&'static str>, Option<&'static str>);

/// The kernel figures' handles into the installed `metrics` recorder, each
/// registered the first time its figure appears and then only updated (the
/// site metrics' way: see `crate::export::facade::Exporter`). Bounded: one
/// entry per (command, opcode) pair and per command the kernel view saw.
#[derive(Default)]
pub(crate) struct KernelHandles {
    /// One per [`KERNEL_COUNTERS`] entry, once registered.
    counters: Vec<metrics::Counter>,
    /// One per [`IO_COUNTERS`] entry, by (command, module, opcode).
    io: HashMap<(Command, u32), Vec<metrics::Counter>>,
    /// Blocked, then preempted time, by (command, module).
    off_cpu: HashMap<Command, [metrics::Gauge; 2]>,
}

impl KernelHandles {
    /// Publishes `kernel`: counters as their totals, off-CPU time as gauges
    /// of seconds (the facade's counters are integers). Latency histograms
    /// are in `/metrics`.
    pub(crate) fn export(&mut self, kernel: &KernelSnapshot) {
        if self.counters.is_empty() {
            self.counters = KERNEL_COUNTERS
                .iter()
                .map(|(name, _, _)| metrics::counter!(facade_name(name)))
                .collect();
        }
        for ((_, _, value), counter) in KERNEL_COUNTERS.iter().zip(&self.counters) {
            counter.absolute(value(&kernel.counters));
        }
        for io in &kernel.io {
            let key = ((io.command, io.module), io.opcode);
            let counters = self.io.entry(key).or_insert_with(|| {
                let labels = vec![
                    Label::from_static_parts("command", io.command.unwrap_or("")),
                    Label::from_static_parts("module", io.module.unwrap_or("")),
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
            let gauges = self
                .off_cpu
                .entry((off.command, off.module))
                .or_insert_with(|| {
                    let command = off.command.unwrap_or("");
                    let module = off.module.unwrap_or("");
                    ["blocked", "preempted"].map(|state| {
                        metrics::gauge!(
                            "ferrite_kernel_off_cpu_seconds",
                            vec![
                                Label::from_static_parts("command", command),
                                Label::from_static_parts("module", module),
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
