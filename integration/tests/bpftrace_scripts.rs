//! Every bpftrace script of `ferrite-obs-bpf/scripts/` attached to a live
//! `ferrite-server` under load, its output checked against the load.
//!
//! Needs root and bpftrace; without them the test says so and skips, unless
//! `FERRITE_REQUIRE_KERNEL=1` (set by the test command) makes that a failure.

mod common;
#[path = "common/skip.rs"]
mod skip;

use std::io::{BufRead, BufReader, Read};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{Client, Server, temp_dir};

fn script(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../ferrite-obs-bpf/scripts")
        .join(name)
}

/// Stops bpftrace as Ctrl-C would (it prints its maps) and returns its output.
fn finish(mut child: Child) -> String {
    Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .expect("kill runs");
    let mut out = String::new();
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut out)
        .unwrap();
    let _ = child.wait();
    out
}

/// Known load: 20 connections, each 10 SETs of a value served from disk and
/// 10 GETs of it.
fn load(server: &Server) {
    let value = "d".repeat(2000);
    for connection in 0..20 {
        let mut client = Client::connect(server.port);
        for i in 0..10 {
            let key = format!("k{connection}:{i}");
            client.send(&[b"SET", key.as_bytes(), value.as_bytes()]);
            assert_eq!(client.reply().unwrap(), "+OK");
            client.send(&[b"GET", key.as_bytes()]);
            assert_eq!(client.reply().unwrap(), value);
        }
    }
}

/// The value after `prefix` on the line that starts with it.
fn value_of(out: &str, prefix: &str) -> u64 {
    out.lines()
        .find_map(|l| l.strip_prefix(prefix))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no `{prefix}` in:\n{out}"))
}

#[test]
fn every_script_reports_the_load_it_watched() {
    let root = skip::is_root();
    let bpftrace = Command::new("bpftrace").arg("--version").output().is_ok();
    if !(root && bpftrace) {
        let reason = if root {
            "bpftrace is missing"
        } else {
            "attaching needs root"
        };
        skip::skip("every_script_reports_the_load_it_watched", reason);
        return;
    }
    let dir = temp_dir("bpftrace");
    let server = Server::start(&dir, "always");
    assert!(!server.kernel.is_empty() && server.endpoint.is_some());
    let pid = server.child.id().to_string();
    // The USDT scripts attach per process (`-p PID`); the io_uring script
    // takes the pid as its argument.
    let p = ["-p", pid.as_str()];
    let scripts: [(&str, &[&str], &[&str]); 5] = [
        ("command_latency.bt", &p, &[]),
        ("slow_commands.bt", &p, &["0"]),
        ("storage_latency.bt", &p, &[]),
        ("connection_churn.bt", &p, &[]),
        ("uring_latency.bt", &[], &[pid.as_str()]),
    ];
    let attached: Vec<(&str, Child)> = scripts
        .iter()
        .map(|(name, options, args)| (*name, attach(name, options, args)))
        .collect();
    load(&server);
    let outputs: Vec<(&str, String)> = attached
        .into_iter()
        .map(|(name, child)| (name, finish(child)))
        .collect();
    let output = |name: &str| &outputs.iter().find(|(n, _)| *n == name).unwrap().1;

    let latency = output("command_latency.bt");
    assert!(
        latency.contains("@us[SET]:") && latency.contains("@us[GET]:"),
        "{latency}"
    );
    assert_eq!(value_of(latency, "@errors[GET]:"), 0, "{latency}");

    let slow = output("slow_commands.bt");
    let sets = slow.lines().filter(|l| l.starts_with("SET id=")).count();
    let gets = slow.lines().filter(|l| l.starts_with("GET id=")).count();
    assert_eq!(
        (sets, gets),
        (200, 200),
        "every command is over 0 us:\n{slow}"
    );

    let storage = output("storage_latency.bt");
    assert_eq!(value_of(storage, "@reads_in_a_command:"), 200, "{storage}");
    assert_eq!(
        value_of(storage, "@writes_in_a_command[1]:"),
        200,
        "{storage}"
    );
    assert!(
        storage.contains("@read_us:") && storage.contains("@write_bytes:"),
        "{storage}"
    );

    let churn = output("connection_churn.bt");
    assert!(value_of(churn, "@accepts:") >= 20, "{churn}");
    assert!(value_of(churn, "@closes:") >= 20, "{churn}");
    assert!(churn.contains("@lifetime_ms:"), "{churn}");

    let uring = output("uring_latency.bt");
    assert!(
        value_of(uring, "@ops[READ]:") >= 200,
        "socket and disk reads: {uring}"
    );
    assert_eq!(value_of(uring, "@ops[FSYNC]:"), 200, "one per SET: {uring}");
    assert!(uring.contains("@us[WRITE]:"), "{uring}");

    assert_eq!(
        server.cli(&["PING"]),
        "PONG",
        "detached, the server goes on"
    );
    server.kill();
    let _ = std::fs::remove_dir_all(&dir);
}

/// bpftrace running script `name` (`options` before it, `args` after, as
/// bpftrace wants them), once it has attached.
fn attach(name: &str, options: &[&str], args: &[&str]) -> Child {
    let mut child = Command::new("bpftrace")
        .args(options)
        .arg(script(name))
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("bpftrace runs (apt-get install bpftrace)");
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    // BEGIN runs once every probe is attached: its line means "ready".
    while !line.starts_with("Tracing") {
        line.clear();
        assert!(
            out.read_line(&mut line).unwrap() > 0 && Instant::now() < deadline,
            "{name} did not attach"
        );
    }
    child.stdout = Some(out.into_inner());
    child
}
