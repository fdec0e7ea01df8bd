//! The HTTP endpoint: `GET /metrics` (Prometheus text), `GET /snapshot`,
//! `GET /status` and `GET /slowlog` (JSON).
//!
//! Deliberately small: one request per connection, answered then closed.
//! A client gets 5 seconds and 8 KiB to send its request and 5 seconds to
//! take the answer; at most 64 connections are open at once. When all 64
//! are taken, a new connection closes the oldest one still sending its
//! request (idle, trickling or garbled: counted in the status as evicted),
//! so connections that hold their slot without asking cannot keep a
//! scraper out; only when all 64 are being answered does a new one get
//! `503` (counted as refused). Nothing a client does can stall the collector, which only
//! accepts connections and hands each to a task of its own. Rendering an
//! answer is a watched stage ([`Stage::Endpoint`]): a panic there is caught,
//! counted in the status, and answered with `500`.

use std::collections::VecDeque;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::task::{AbortHandle, JoinSet};

use crate::collect::snapshot::Snapshot;
use crate::status::{Stage, Status as Running};
use crate::supervise::Health;

const MAX_REQUEST: usize = 8 * 1024;
const IO_TIMEOUT: Duration = Duration::from_secs(5);
/// Connections served at once.
pub(crate) const MAX_CONNECTIONS: usize = 64;

/// What the endpoint serves, read afresh for every request.
pub(crate) trait Served: Send + Sync + 'static {
    /// The latest snapshot.
    fn snapshot(&self) -> Arc<Snapshot>;
    /// What is running now.
    fn status(&self) -> Running;
    /// Where the renderings are watched.
    fn health(&self) -> &Health;
}

/// The open connections, in the order they were accepted.
pub(crate) struct Connections {
    tasks: JoinSet<()>,
    /// Each connection's task and whether it is still reading its request,
    /// oldest first.
    open: VecDeque<(AbortHandle, Arc<AtomicBool>)>,
}

impl Connections {
    pub(crate) fn new() -> Self {
        Connections {
            tasks: JoinSet::new(),
            open: VecDeque::new(),
        }
    }

    /// Serves `stream`, making room for it if all connections are taken.
    pub(crate) fn admit(&mut self, stream: TcpStream, served: &Arc<impl Served>) {
        while self.tasks.try_join_next().is_some() {}
        self.open.retain(|(task, _)| !task.is_finished());
        if self.open.len() >= MAX_CONNECTIONS {
            let reading = self
                .open
                .iter()
                .position(|(_, reading)| reading.load(Ordering::Relaxed));
            match reading {
                Some(oldest) => {
                    if let Some((task, _)) = self.open.remove(oldest) {
                        task.abort();
                        served.health().evicted_one();
                    }
                }
                None => {
                    served.health().refused_one();
                    self.tasks.spawn(refuse(stream));
                    return;
                }
            }
        }
        let reading = Arc::new(AtomicBool::new(true));
        let task = self
            .tasks
            .spawn(serve(stream, Arc::clone(served), Arc::clone(&reading)));
        self.open.push_back((task, reading));
    }

    /// Closes every connection.
    pub(crate) async fn close(mut self) {
        self.tasks.abort_all();
        while self.tasks.join_next().await.is_some() {}
    }
}

/// Serves one connection; `reading` is cleared once its request is in.
async fn serve(mut stream: TcpStream, served: Arc<impl Served>, reading: Arc<AtomicBool>) {
    let request = tokio::time::timeout(IO_TIMEOUT, read_request(&mut stream)).await;
    reading.store(false, Ordering::Relaxed);
    let response = match request {
        Ok(Ok(request)) => answer(&request, &*served),
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
async fn refuse(mut stream: TcpStream) {
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
    Internal,
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
            Status::Internal => "500 Internal Server Error",
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
            Status::Internal => {
                "rendering the answer panicked: the panic is in /status (collector.last_panic)\n"
            }
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

/// The answer to `request`, rendered as a run of [`Stage::Endpoint`].
fn answer(request: &Request, served: &impl Served) -> Vec<u8> {
    served
        .health()
        // Unwind-safe: rendering makes a new answer from the shared state,
        // which it only reads.
        .run(
            Stage::Endpoint,
            AssertUnwindSafe(|| respond(request, served)),
        )
        .unwrap_or_else(|_| error(Status::Internal))
}

fn respond(request: &Request, served: &impl Served) -> Vec<u8> {
    if request.method != "GET" {
        return error(Status::MethodNotAllowed);
    }
    let path = request.path.split('?').next().unwrap_or("");
    let snapshot = served.snapshot();
    match path {
        "/metrics" => ok(
            "text/plain; version=0.0.4; charset=utf-8",
            crate::export::prometheus::render(&snapshot),
        ),
        "/snapshot" => ok("application/json", super::json::snapshot(&snapshot)),
        "/status" => ok("application/json", super::json::status(&served.status())),
        "/slowlog" => ok("application/json", super::json::slowlog(&snapshot)),
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Served state whose every reading panics.
    struct Broken(Health);

    impl Served for Broken {
        fn snapshot(&self) -> Arc<Snapshot> {
            panic!("no snapshot today")
        }

        fn status(&self) -> Running {
            panic!("no status today")
        }

        fn health(&self) -> &Health {
            &self.0
        }
    }

    #[test]
    fn a_panic_while_rendering_is_answered_with_500_and_counted() {
        let served = Broken(Health::new(false));
        let get = |path: &str| Request {
            method: "GET".to_owned(),
            path: path.to_owned(),
        };
        for (n, path) in ["/metrics", "/snapshot", "/metrics"]
            .into_iter()
            .enumerate()
        {
            let response = String::from_utf8(answer(&get(path), &served)).unwrap();
            assert!(
                response.starts_with("HTTP/1.1 500 Internal Server Error\r\n"),
                "{response}"
            );
            let status = served.0.collector(0, Duration::from_secs(1));
            assert_eq!(status.panics, n as u64 + 1);
            let panic = status.last_panic.expect("the panic");
            assert_eq!(panic.stage, crate::status::Stage::Endpoint);
            assert!(
                panic.message.starts_with("no snapshot today"),
                "{}",
                panic.message
            );
        }
    }
}
