//! The HTTP endpoint: `GET /metrics` (Prometheus text), `GET /snapshot`,
//! `GET /status` and `GET /slowlog` (JSON).
//!
//! Deliberately small: one request per connection, answered then closed.
//! A client gets 5 seconds and 8 KiB to send its request and 5 seconds to
//! take the answer; at most 64 connections are served at once and further
//! ones get `503`. Nothing a client does can stall the collector, which only
//! accepts connections and hands each to a task of its own.

use std::fmt::Write as _;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::runtime::Shared;
use crate::snapshot::Snapshot;

const MAX_REQUEST: usize = 8 * 1024;
const IO_TIMEOUT: Duration = Duration::from_secs(5);
/// Connections served at once.
pub(crate) const MAX_CONNECTIONS: usize = 64;

/// Serves one connection.
pub(crate) async fn serve(mut stream: TcpStream, shared: Arc<Shared>) {
    let response = match tokio::time::timeout(IO_TIMEOUT, read_request(&mut stream)).await {
        Ok(Ok(request)) => respond(&request, &shared),
        Ok(Err(status)) => error(status),
        Err(_) => error(Status::Timeout),
    };
    let _ = tokio::time::timeout(IO_TIMEOUT, async {
        stream.write_all(&response).await?;
        stream.shutdown().await
    })
    .await;
}

/// Answers a connection that is over the limit.
pub(crate) async fn refuse(mut stream: TcpStream) {
    let response = error(Status::Busy);
    let _ = tokio::time::timeout(Duration::from_secs(1), stream.write_all(&response)).await;
}

#[derive(Clone, Copy, Debug)]
enum Status {
    BadRequest,
    NotFound,
    MethodNotAllowed,
    Timeout,
    TooLarge,
    Busy,
}

impl Status {
    fn line(self) -> &'static str {
        match self {
            Status::BadRequest => "400 Bad Request",
            Status::NotFound => "404 Not Found",
            Status::MethodNotAllowed => "405 Method Not Allowed",
            Status::Timeout => "408 Request Timeout",
            Status::TooLarge => "431 Request Header Fields Too Large",
            Status::Busy => "503 Service Unavailable",
        }
    }

    fn explain(self) -> &'static str {
        match self {
            Status::BadRequest => "malformed HTTP request\n",
            Status::NotFound => "unknown path: try /metrics, /snapshot, /status or /slowlog\n",
            Status::MethodNotAllowed => "only GET is served\n",
            Status::Timeout => "the request took longer than 5 seconds to arrive\n",
            Status::TooLarge => "the request is over 8 KiB\n",
            Status::Busy => "too many connections; retry shortly\n",
        }
    }
}

struct Request {
    method: String,
    path: String,
}

/// Reads up to the end of the headers, at most `MAX_REQUEST` bytes.
async fn read_request(stream: &mut TcpStream) -> Result<Request, Status> {
    let mut buf = vec![0u8; MAX_REQUEST];
    let mut len = 0;
    loop {
        if buf[..len].windows(4).any(|w| w == b"\r\n\r\n") {
            break;
        }
        if len == buf.len() {
            return Err(Status::TooLarge);
        }
        let n = stream
            .read(&mut buf[len..])
            .await
            .map_err(|_| Status::BadRequest)?;
        if n == 0 {
            return Err(Status::BadRequest);
        }
        len += n;
    }
    let head = std::str::from_utf8(&buf[..len]).map_err(|_| Status::BadRequest)?;
    let line = head.lines().next().ok_or(Status::BadRequest)?;
    let mut parts = line.split(' ');
    match (parts.next(), parts.next(), parts.next(), parts.next()) {
        (Some(method), Some(path), Some(version), None)
            if version.starts_with("HTTP/1.") && path.starts_with('/') =>
        {
            Ok(Request {
                method: method.to_owned(),
                path: path.to_owned(),
            })
        }
        _ => Err(Status::BadRequest),
    }
}

fn respond(request: &Request, shared: &Shared) -> Vec<u8> {
    if request.method != "GET" {
        return error(Status::MethodNotAllowed);
    }
    let path = request.path.split('?').next().unwrap_or("");
    let snapshot = shared.snapshot.load();
    match path {
        "/metrics" => ok(
            "text/plain; version=0.0.4; charset=utf-8",
            crate::prometheus::render(&snapshot),
        ),
        "/snapshot" => ok("application/json", snapshot_json(&snapshot)),
        "/status" => ok("application/json", status_json(shared)),
        "/slowlog" => ok("application/json", slowlog_json(&snapshot)),
        _ => error(Status::NotFound),
    }
}

fn ok(content_type: &str, body: String) -> Vec<u8> {
    let mut response = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    response.extend_from_slice(body.as_bytes());
    response
}

fn error(status: Status) -> Vec<u8> {
    let body = status.explain();
    let allow = if matches!(status, Status::MethodNotAllowed) {
        "Allow: GET\r\n"
    } else {
        ""
    };
    format!(
        "HTTP/1.1 {}\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: {}\r\n{allow}Connection: close\r\n\r\n{body}",
        status.line(),
        body.len()
    )
    .into_bytes()
}

fn status_json(shared: &Shared) -> String {
    let config = &shared.config;
    format!(
        "{{\"enabled\":{},\"recording\":{},\"rollup_interval_seconds\":{},\"endpoint\":{},\"kernel\":{}}}\n",
        config.enabled,
        crate::is_recording(),
        config.rollup_interval.as_secs_f64(),
        json_string(&shared.endpoint.map_or_else(String::new, |a| a.to_string())),
        crate::kernel::export::status_json(&shared.kernel),
    )
}

fn snapshot_json(snapshot: &Snapshot) -> String {
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
    crate::kernel::export::json(&mut out, snapshot.kernel.as_ref());
    out.push_str("}\n");
    out
}

fn slowlog_json(snapshot: &Snapshot) -> String {
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

/// A JSON string literal.
pub(crate) fn json_string(value: &str) -> String {
    let mut out = String::with_capacity(value.len() + 2);
    out.push('"');
    for c in value.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}
