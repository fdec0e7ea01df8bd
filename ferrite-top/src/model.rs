//! What ferrite-top shows, read from a ferrite-obs endpoint (`/snapshot`,
//! `/status`, `/slowlog`) over plain HTTP.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use ferrite_obs::schema::{KernelStatus, SCHEMA_VERSION, SlowLog, Snapshot, Status};
use serde::de::DeserializeOwned;
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

/// The document at `path`, once its schema version is the one this
/// ferrite-top reads.
fn document<T: DeserializeOwned>(endpoint: SocketAddr, path: &str) -> Result<T, FetchError> {
    let value = get(endpoint, path)?;
    match value.get("schema_version").and_then(Value::as_u64) {
        Some(version) if version == u64::from(SCHEMA_VERSION) => {}
        Some(version) => {
            return Err(FetchError::Version(format!(
                "{path} is schema version {version}, this ferrite-top reads version \
                 {SCHEMA_VERSION}: use the ferrite-top of the server's ferrite-obs"
            )));
        }
        None => {
            return Err(FetchError::Version(format!(
                "{path} has no `schema_version`: the server's ferrite-obs predates \
                 schema version {SCHEMA_VERSION}"
            )));
        }
    }
    serde_json::from_value(value).map_err(|e| FetchError::Version(format!("{path}: {e}")))
}

/// What the endpoint serves, as one JSON object (`--json`).
pub(crate) fn fetch_json(endpoint: SocketAddr) -> Result<Value, FetchError> {
    Ok(serde_json::json!({
        "status": document::<Status>(endpoint, "/status")?,
        "snapshot": document::<Snapshot>(endpoint, "/snapshot")?,
        "slowlog": document::<SlowLog>(endpoint, "/slowlog")?,
    }))
}

/// Reads the endpoint and makes the view.
pub(crate) fn fetch(endpoint: SocketAddr) -> Result<View, FetchError> {
    let snapshot: Snapshot = document(endpoint, "/snapshot")?;
    let status: Status = document(endpoint, "/status")?;
    let slowlog: SlowLog = document(endpoint, "/slowlog")?;
    let kernel = snapshot.kernel.as_ref();
    let ms = |ns: u64| ns as f64 / 1e6;
    let us = |ns: Option<u64>| ns.map_or(0.0, |ns| ns as f64 / 1000.0);

    let commands = snapshot
        .sites
        .iter()
        .filter(|site| site.command)
        .map(|site| {
            let mine = |command: &Option<String>| command.as_deref() == Some(site.name.as_str());
            CommandRow {
                name: site.name.clone(),
                qps: site.interval.calls_per_second,
                calls: site.total.calls,
                errors: site.total.errors,
                p50_us: us(site.interval.p50_ns),
                p99_us: us(site.interval.p99_ns),
                max_us: us(site.interval.max_ns),
                busy_ms: ms(site.total.busy_ns),
                off_cpu_ms: kernel.map(|k| {
                    k.off_cpu
                        .iter()
                        .filter(|o| mine(&o.command))
                        .map(|o| ms(o.blocked_ns) + ms(o.preempted_ns))
                        .sum()
                }),
                io_wait_ms: kernel.map(|k| {
                    k.io.iter()
                        .filter(|io| mine(&io.command))
                        .map(|io| ms(io.latency_sum_ns))
                        .sum()
                }),
                buckets: site
                    .total
                    .latency_buckets
                    .iter()
                    .map(|&[low, high, count]| (low, high, count))
                    .collect(),
            }
        })
        .collect();

    let mut opcodes: Vec<OpcodeRow> = Vec::new();
    for io in kernel.into_iter().flat_map(|k| &k.io) {
        let index = match opcodes.iter().position(|r| r.opcode == io.opcode_name) {
            Some(index) => index,
            None => {
                opcodes.push(OpcodeRow {
                    opcode: io.opcode_name.clone(),
                    ..OpcodeRow::default()
                });
                opcodes.len() - 1
            }
        };
        let row = &mut opcodes[index];
        row.ops += io.ops;
        row.errors += io.errors;
        row.bytes += io.bytes;
        row.p50_upper_us = row.p50_upper_us.max(us(io.p50_upper_ns));
        row.p99_upper_us = row.p99_upper_us.max(us(io.p99_upper_ns));
    }
    opcodes.sort_by_key(|r| std::cmp::Reverse(r.ops));

    let slow = slowlog
        .entries
        .iter()
        .map(|e| SlowRow {
            id: e.id,
            command: e.command.clone(),
            duration_us: e.duration_ns as f64 / 1000.0,
            kernel: e.kernel.as_ref().map(|k| {
                format!(
                    "io {:.0} us, off-CPU {:.0} us, on-CPU {:.0} us",
                    k.io_wait_ns as f64 / 1000.0,
                    k.off_cpu_ns as f64 / 1000.0,
                    k.on_cpu_ns as f64 / 1000.0
                )
            }),
        })
        .collect();

    let kernel_status = match &status.kernel {
        KernelStatus::Degraded { step, fix, .. } => format!("degraded at {step}: {fix}"),
        KernelStatus::Off => "off".to_owned(),
        KernelStatus::Unsupported { .. } => "unsupported".to_owned(),
        KernelStatus::Active { .. } => "active".to_owned(),
    };
    Ok(View {
        sequence: snapshot.sequence,
        commands,
        opcodes,
        slow,
        kernel_status,
        unattributed: kernel.map(|k| {
            k.counters
                .get("requests_unattributed")
                .copied()
                .unwrap_or(0)
        }),
        instrumentation_ms: snapshot.instrumentation.total_seconds * 1e3,
        rollup_ms: snapshot.collector.last_rollup_seconds * 1e3,
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

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};
    use std::net::TcpListener;

    use super::*;

    /// Serves `body` once, as a ferrite-obs endpoint of some version would.
    fn serve_once(body: &'static str) -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind on loopback");
        let addr = listener.local_addr().expect("its address");
        std::thread::spawn(move || {
            let (mut stream, _) = listener.accept().expect("ferrite-top connects");
            let mut request = [0_u8; 1024];
            let _ = stream.read(&mut request);
            let _ = write!(
                stream,
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
        });
        addr
    }

    #[test]
    fn a_document_of_another_schema_version_is_refused_naming_both_versions() {
        let addr = serve_once("{\"schema_version\":99,\"sites\":[]}");
        let error = document::<Snapshot>(addr, "/snapshot").expect_err("version 99");
        let message = error.to_string();
        assert!(
            message.contains("version 99")
                && message.contains(&format!("version {SCHEMA_VERSION}")),
            "{message}"
        );
    }

    #[test]
    fn a_document_without_a_schema_version_is_refused_as_older() {
        let addr = serve_once("{\"sequence\":3,\"sites\":[]}");
        let error = document::<Status>(addr, "/status").expect_err("no version");
        assert!(error.to_string().contains("no `schema_version`"), "{error}");
    }
}
