//! What ferrite-top shows, read from a ferrite-obs endpoint (`/snapshot`,
//! `/status`, `/slowlog`) over plain HTTP.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use serde_json::Value;

/// Why the endpoint could not be read.
#[derive(Debug)]
pub(crate) enum FetchError {
    /// No connection, or no complete answer.
    Unreachable(String),
    /// It answered, but not as a ferrite-obs endpoint of this version.
    Version(String),
}

impl std::fmt::Display for FetchError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FetchError::Unreachable(why) => write!(f, "cannot reach ferrite-obs: {why}"),
            FetchError::Version(why) => write!(
                f,
                "the endpoint does not speak this ferrite-top's version: {why}"
            ),
        }
    }
}

/// One command's row.
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct CommandRow {
    pub(crate) name: String,
    pub(crate) qps: f64,
    pub(crate) calls: u64,
    pub(crate) errors: u64,
    pub(crate) p50_us: f64,
    pub(crate) p99_us: f64,
    pub(crate) max_us: f64,
    /// Total time in its polls (async) or calls (sync), ms.
    pub(crate) busy_ms: f64,
    /// Total time switched out inside its polls, ms (kernel view).
    pub(crate) off_cpu_ms: Option<f64>,
    /// Total io_uring wait of its requests, ms (kernel view).
    pub(crate) io_wait_ms: Option<f64>,
    /// Its latency histogram since start: `(low_ns, high_ns, count)`.
    pub(crate) buckets: Vec<(u64, u64, u64)>,
}

impl CommandRow {
    /// Time on the CPU: time in its polls (calls) less time switched out
    /// in them, when the kernel view measures the latter.
    pub(crate) fn on_cpu_ms(&self) -> Option<f64> {
        self.off_cpu_ms.map(|off| (self.busy_ms - off).max(0.0))
    }
}

/// One opcode's io_uring figures, all commands together.
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct OpcodeRow {
    pub(crate) opcode: String,
    pub(crate) ops: u64,
    pub(crate) errors: u64,
    pub(crate) bytes: u64,
    pub(crate) p50_upper_us: f64,
    pub(crate) p99_upper_us: f64,
}

/// One slow command.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct SlowRow {
    pub(crate) id: u64,
    pub(crate) command: String,
    pub(crate) duration_us: f64,
    pub(crate) kernel: Option<String>,
}

/// Everything on one screen.
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct View {
    pub(crate) sequence: u64,
    pub(crate) commands: Vec<CommandRow>,
    pub(crate) opcodes: Vec<OpcodeRow>,
    pub(crate) slow: Vec<SlowRow>,
    pub(crate) kernel_status: String,
    pub(crate) unattributed: Option<u64>,
    pub(crate) instrumentation_ms: f64,
    pub(crate) rollup_ms: f64,
}

fn get(endpoint: SocketAddr, path: &str) -> Result<Value, FetchError> {
    let unreachable = |e: std::io::Error| FetchError::Unreachable(format!("{endpoint}{path}: {e}"));
    let mut stream =
        TcpStream::connect_timeout(&endpoint, Duration::from_secs(2)).map_err(unreachable)?;
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .map_err(unreachable)?;
    stream
        .write_all(
            format!("GET {path} HTTP/1.1\r\nHost: ferrite-top\r\nConnection: close\r\n\r\n")
                .as_bytes(),
        )
        .map_err(unreachable)?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response).map_err(unreachable)?;
    let response = String::from_utf8_lossy(&response);
    let (head, body) = response
        .split_once("\r\n\r\n")
        .ok_or_else(|| FetchError::Version(format!("{path}: not an HTTP response")))?;
    if !head.starts_with("HTTP/1.1 200") {
        let status = head.lines().next().unwrap_or("");
        return Err(FetchError::Version(format!("{path} answered `{status}`")));
    }
    serde_json::from_str(body).map_err(|e| FetchError::Version(format!("{path} is not JSON: {e}")))
}

/// The field `key` of `value`, or a version error naming it.
fn field<'a>(value: &'a Value, path: &str, key: &str) -> Result<&'a Value, FetchError> {
    value
        .get(key)
        .ok_or_else(|| FetchError::Version(format!("{path} has no `{key}`")))
}

fn f64_of(value: &Value) -> f64 {
    value.as_f64().unwrap_or(0.0)
}

fn u64_of(value: &Value) -> u64 {
    value.as_u64().unwrap_or(0)
}

/// What the endpoint serves, as one JSON object (`--json`).
pub(crate) fn fetch_json(endpoint: SocketAddr) -> Result<Value, FetchError> {
    let snapshot = get(endpoint, "/snapshot")?;
    field(&snapshot, "/snapshot", "sites")?;
    Ok(serde_json::json!({
        "status": get(endpoint, "/status")?,
        "snapshot": snapshot,
        "slowlog": get(endpoint, "/slowlog")?,
    }))
}

/// Reads the endpoint and makes the view.
pub(crate) fn fetch(endpoint: SocketAddr) -> Result<View, FetchError> {
    let snapshot = get(endpoint, "/snapshot")?;
    let status = get(endpoint, "/status")?;
    let slowlog = get(endpoint, "/slowlog")?;
    let sites = field(&snapshot, "/snapshot", "sites")?
        .as_array()
        .ok_or_else(|| FetchError::Version("/snapshot `sites` is not a list".into()))?;
    let kernel = snapshot.get("kernel").filter(|k| !k.is_null());

    let mut commands = Vec::new();
    for site in sites.iter().filter(|s| s["command"] == true) {
        let name = site["name"].as_str().unwrap_or("?").to_owned();
        let total = field(site, "/snapshot sites", "total")?;
        let interval = field(site, "/snapshot sites", "interval")?;
        let us = |key: &str| f64_of(&interval[key]) / 1000.0;
        let off_cpu_ms = kernel.map(|k| {
            k["off_cpu"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|o| o["command"] == name.as_str())
                .map(|o| (f64_of(&o["blocked_ns"]) + f64_of(&o["preempted_ns"])) / 1e6)
                .fold(0.0, |total, ms| total + ms)
        });
        let io_wait_ms = kernel.map(|k| {
            k["io"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|io| io["command"] == name.as_str())
                .map(|io| f64_of(&io["latency_sum_ns"]) / 1e6)
                .fold(0.0, |total, ms| total + ms)
        });
        let buckets = total["latency_buckets"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|b| {
                Some((
                    b.get(0)?.as_u64()?,
                    b.get(1)?.as_u64()?,
                    b.get(2)?.as_u64()?,
                ))
            })
            .collect();
        commands.push(CommandRow {
            name,
            qps: f64_of(&interval["calls_per_second"]),
            calls: u64_of(&total["calls"]),
            errors: u64_of(&total["errors"]),
            p50_us: us("p50_ns"),
            p99_us: us("p99_ns"),
            max_us: us("max_ns"),
            busy_ms: f64_of(&total["busy_ns"]) / 1e6,
            off_cpu_ms,
            io_wait_ms,
            buckets,
        });
    }

    let mut opcodes: Vec<OpcodeRow> = Vec::new();
    for io in kernel
        .and_then(|k| k["io"].as_array())
        .into_iter()
        .flatten()
    {
        let opcode = io["opcode_name"].as_str().unwrap_or("?").to_owned();
        let row = match opcodes.iter_mut().find(|r| r.opcode == opcode) {
            Some(row) => row,
            None => {
                opcodes.push(OpcodeRow {
                    opcode,
                    ..OpcodeRow::default()
                });
                opcodes.last_mut().unwrap()
            }
        };
        row.ops += u64_of(&io["ops"]);
        row.errors += u64_of(&io["errors"]);
        row.bytes += u64_of(&io["bytes"]);
        row.p50_upper_us = row.p50_upper_us.max(f64_of(&io["p50_upper_ns"]) / 1000.0);
        row.p99_upper_us = row.p99_upper_us.max(f64_of(&io["p99_upper_ns"]) / 1000.0);
    }
    opcodes.sort_by_key(|r| std::cmp::Reverse(r.ops));

    let slow = field(&slowlog, "/slowlog", "entries")?
        .as_array()
        .into_iter()
        .flatten()
        .map(|e| SlowRow {
            id: u64_of(&e["id"]),
            command: e["command"].as_str().unwrap_or("?").to_owned(),
            duration_us: f64_of(&e["duration_ns"]) / 1000.0,
            kernel: e["kernel"].as_object().map(|k| {
                format!(
                    "io {:.0} us, off-CPU {:.0} us, on-CPU {:.0} us",
                    f64_of(&k["io_wait_ns"]) / 1000.0,
                    f64_of(&k["off_cpu_ns"]) / 1000.0,
                    f64_of(&k["on_cpu_ns"]) / 1000.0
                )
            }),
        })
        .collect();

    let kernel_state = field(&status, "/status", "kernel")?;
    let kernel_status = match kernel_state["state"].as_str() {
        Some("degraded") => format!(
            "degraded at {}: {}",
            kernel_state["step"].as_str().unwrap_or("?"),
            kernel_state["fix"].as_str().unwrap_or("")
        ),
        Some(state) => state.to_owned(),
        None => {
            return Err(FetchError::Version(
                "/status `kernel` has no `state`".into(),
            ));
        }
    };
    Ok(View {
        sequence: u64_of(field(&snapshot, "/snapshot", "sequence")?),
        commands,
        opcodes,
        slow,
        kernel_status,
        unattributed: kernel.map(|k| u64_of(&k["counters"]["requests_unattributed"])),
        instrumentation_ms: f64_of(&snapshot["instrumentation"]["total_seconds"]) * 1e3,
        rollup_ms: f64_of(&snapshot["collector"]["last_rollup_seconds"]) * 1e3,
    })
}

/// The columns commands can be sorted by.
pub(crate) const COLUMNS: [&str; 9] = [
    "command",
    "qps",
    "calls",
    "p50 us",
    "p99 us",
    "max us",
    "on-CPU ms",
    "off-CPU ms",
    "io wait ms",
];

/// Sorts `rows` by column `column` (an index into [`COLUMNS`]), largest
/// first (names: alphabetical), or the other way with `reverse`.
pub(crate) fn sort(rows: &mut [CommandRow], column: usize, reverse: bool) {
    let key = |r: &CommandRow| -> f64 {
        match column {
            1 => r.qps,
            2 => r.calls as f64,
            3 => r.p50_us,
            4 => r.p99_us,
            5 => r.max_us,
            6 => r.on_cpu_ms().unwrap_or(0.0),
            7 => r.off_cpu_ms.unwrap_or(0.0),
            _ => r.io_wait_ms.unwrap_or(0.0),
        }
    };
    if column == 0 {
        rows.sort_by(|a, b| a.name.cmp(&b.name));
    } else {
        rows.sort_by(|a, b| key(b).total_cmp(&key(a)));
    }
    if reverse {
        rows.reverse();
    }
}
