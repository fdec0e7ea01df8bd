//! `ferrite-top` against a live `ferrite-server` under `redis-benchmark`
//! load: in a real terminal (tmux, driven with `send-keys` and read with
//! `capture-pane`), and in its `--once` and `--json` modes; and against an
//! endpoint that is not there.

mod common;

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{Client, Server, temp_dir};

/// Presses of `s` that take the sort from qps (the default) to the name
/// column: one per column after qps (command, qps, calls, p50, p99, max,
/// on-CPU, off-CPU, io wait).
const COLUMNS_AFTER_QPS: usize = 8;

/// The ferrite-top binary of this build (same target directory and
/// profile as the server's). It belongs to another package, so `cargo test`
/// does not build it: the test command builds it first (a test cannot run
/// cargo itself: the build directory is locked while tests run).
fn ferrite_top() -> PathBuf {
    let path = PathBuf::from(env!("CARGO_BIN_EXE_ferrite-server")).with_file_name("ferrite-top");
    assert!(
        path.exists(),
        "{} is missing: build it first (`cargo build -p ferrite-top`; scripts/test.sh does)",
        path.display()
    );
    path
}

/// redis-benchmark hammering `test` until killed.
fn load(port: u16, test: &str) -> Child {
    Command::new("redis-benchmark")
        .args([
            "-p",
            &port.to_string(),
            "-t",
            test,
            "-n",
            "100000000",
            "-c",
            "2",
            "-q",
        ])
        .args(["-d", "2000", "-r", "1000"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("redis-benchmark runs (apt-get install redis-tools)")
}

fn tmux(args: &[&str]) -> String {
    let out = Command::new("tmux")
        .args(args)
        .output()
        .expect("tmux runs (apt-get install tmux)");
    assert!(out.status.success(), "tmux {args:?}: {out:?}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// ferrite-top in a detached tmux session, 160 columns wide; the session
/// ends when dropped.
struct Pane {
    session: String,
}

impl Pane {
    fn start(name: &str, endpoint: &str, rows: u16) -> Pane {
        let session = format!("{name}-{}", std::process::id());
        let command = format!(
            "{} --endpoint {endpoint} --interval-ms 200",
            ferrite_top().display()
        );
        let rows = rows.to_string();
        tmux(&[
            "new-session",
            "-d",
            "-s",
            &session,
            "-x",
            "160",
            "-y",
            &rows,
            &command,
        ]);
        Pane { session }
    }

    fn keys(&self, keys: &str) {
        tmux(&["send-keys", "-t", &self.session, keys]);
    }

    /// The screen, once `shows` holds for it (keys are handled between
    /// refreshes: wait for the screen, never a fixed time).
    fn wait_for(&self, what: &str, shows: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let screen = tmux(&["capture-pane", "-p", "-t", &self.session]);
            if shows(&screen) {
                return screen;
            }
            assert!(Instant::now() < deadline, "no {what} on:\n{screen}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Pane {
    fn drop(&mut self) {
        let _ = Command::new("tmux")
            .args(["send-keys", "-t", &self.session, "q"])
            .status();
        std::thread::sleep(Duration::from_millis(300));
        let _ = Command::new("tmux")
            .args(["kill-session", "-t", &self.session])
            .status();
    }
}

/// The cells of the `command` row of a captured screen, and its line.
fn row<'a>(screen: &'a str, command: &str) -> Option<(usize, Vec<&'a str>)> {
    screen.lines().enumerate().find_map(|(i, l)| {
        let cells: Vec<&str> = l
            .trim_matches(|c: char| c == '│' || c.is_whitespace())
            .split_whitespace()
            .collect();
        (cells.first() == Some(&command)).then_some((i, cells))
    })
}

/// The rate shown in the `command` row of a captured screen.
fn rate(screen: &str, command: &str) -> Option<f64> {
    row(screen, command)?.1.get(1)?.parse().ok()
}

#[test]
fn the_live_view_shows_the_commands_under_load() {
    let dir = temp_dir("top");
    let server = Server::start(&dir, "everysec");
    let endpoint = server.endpoint.expect("the endpoint is on").to_string();
    let top = ferrite_top();
    let mut benchmarks = [load(server.port, "set"), load(server.port, "get")];

    let pane = Pane::start("ferrite-top", &endpoint, 40);
    let busy = |screen: &str, command| rate(screen, command).is_some_and(|r| r > 0.0);
    let screen = pane.wait_for("SET and GET with non-zero rates", |screen| {
        busy(screen, "SET") && busy(screen, "GET")
    });
    let state = server.kernel.split(':').next().unwrap_or_default();
    assert!(
        screen.contains(&format!("kernel view: {state}")),
        "{screen}"
    );
    assert!(screen.contains("io_uring by opcode"), "{screen}");

    // Sorting by name puts GET above SET; Enter shows a histogram.
    // From qps (the default) around to the name column.
    for _ in 0..COLUMNS_AFTER_QPS {
        pane.keys("s");
    }
    let sorted = pane.wait_for("a sort by command", |s| s.contains("sorted by command"));
    let get = row(&sorted, "GET").expect("a GET row").0;
    let set = row(&sorted, "SET").expect("a SET row").0;
    assert!(get < set, "sorted by name:\n{sorted}");
    pane.keys("Enter");
    pane.wait_for("a histogram", |s| {
        s.contains("latency histogram since start")
    });
    drop(pane);

    // The same figures for scripts.
    let once = Command::new(&top)
        .args(["--endpoint", &endpoint, "--once"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&once.stdout);
    assert!(
        once.status.success() && text.contains("SET") && text.contains("GET"),
        "{text}"
    );
    let json = Command::new(&top)
        .args(["--endpoint", &endpoint, "--json"])
        .output()
        .unwrap();
    let value: serde_json::Value =
        serde_json::from_slice(&json.stdout).expect("--json prints one JSON object");
    assert!(value["snapshot"]["sites"].is_array() && value["status"]["kernel"].is_object());

    for benchmark in &mut benchmarks {
        let _ = benchmark.kill();
        let _ = benchmark.wait();
    }
    let mut client = Client::connect(server.port);
    client.send(&[b"PING"]);
    assert_eq!(client.reply().unwrap(), "+PONG");
    assert_eq!(server.cli(&["PING"]), "PONG");
    server.kill();
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn an_unreachable_endpoint_is_said_plainly() {
    let top = ferrite_top();
    // A port nothing listens on: bound, then closed.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let out = Command::new(&top)
        .args(["--endpoint", &format!("127.0.0.1:{port}"), "--once"])
        .output()
        .unwrap();
    let message = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        message.contains("cannot reach ferrite-obs") && message.contains("Connection refused"),
        "{message}"
    );
    assert!(!message.contains("panicked"), "{message}");

    // Live, the screen says so and keeps retrying.
    let pane = Pane::start("ferrite-top-absent", &format!("127.0.0.1:{port}"), 20);
    let screen = pane.wait_for("a retry message", |s| s.contains("retrying every 200 ms"));
    assert!(screen.contains("cannot reach ferrite-obs"), "{screen}");
    drop(pane);

    // Something that is not a ferrite-obs endpoint: another version.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for stream in listener.incoming().take(3) {
            use std::io::{Read, Write};
            let mut stream = stream.unwrap();
            let mut request = [0u8; 1024];
            let _ = stream.read(&mut request);
            let _ = stream.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}");
        }
    });
    let out = Command::new(&top)
        .args(["--endpoint", &addr.to_string(), "--once"])
        .output()
        .unwrap();
    let message = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        message.contains("does not speak this ferrite-top's version")
            && message.contains("has no `schema_version`"),
        "{message}"
    );
}
