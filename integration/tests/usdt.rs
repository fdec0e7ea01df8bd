//! USDT probes, checked with the real tools: `readelf -n` sees a stapsdt note
//! for every probe, `bpftrace -l` lists them, and bpftrace attached with
//! `-p PID` to a running host prints the arguments the host's calls should
//! produce. The off-switch build carries no notes at all.
//!
//! Attaching needs root (or CAP_BPF + CAP_PERFMON) and bpftrace; without them
//! these tests say so and skip, unless `FERRITE_REQUIRE_KERNEL=1` (set by
//! the test command) turns the skip into a failure.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use ferrite_obs::probes::{PROVIDER, Probe};

const TARGET: &str = env!("CARGO_BIN_EXE_probe-target");

/// Returns why kernel tracing is unavailable here, if it is.
fn tracing_unavailable() -> Option<String> {
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { geteuid() };
    if euid != 0 {
        return Some(format!(
            "attaching uprobes needs root or CAP_BPF+CAP_PERFMON (running as uid {euid})"
        ));
    }
    if Command::new("bpftrace").arg("--version").output().is_err() {
        return Some("bpftrace is not installed (apt-get install bpftrace)".into());
    }
    None
}

unsafe extern "C" {
    fn geteuid() -> u32;
}

/// Skips (loudly) or fails, as `FERRITE_REQUIRE_KERNEL` says.
fn require_tracing(test: &str) -> bool {
    let Some(reason) = tracing_unavailable() else {
        return true;
    };
    if std::env::var_os("FERRITE_REQUIRE_KERNEL").is_some_and(|v| v == "1") {
        panic!("{test}: {reason}, and FERRITE_REQUIRE_KERNEL=1 requires it");
    }
    eprintln!("SKIPPED {test}: {reason}");
    false
}

fn stapsdt_notes(binary: &Path) -> Vec<(String, String)> {
    let out = Command::new("readelf")
        .args(["-n", "--wide"])
        .arg(binary)
        .output()
        .expect("readelf runs (apt-get install binutils)");
    assert!(out.status.success(), "readelf failed: {out:?}");
    let text = String::from_utf8_lossy(&out.stdout);
    let mut notes = Vec::new();
    let mut provider = None;
    for line in text.lines() {
        // readelf prints `Provider:` at the end of the note's header line.
        if let Some((_, p)) = line.split_once("Provider: ") {
            provider = Some(p.trim().to_string());
        } else if let Some(name) = line.trim().strip_prefix("Name: ")
            && let Some(p) = provider.take()
        {
            notes.push((p, name.to_string()));
        }
    }
    notes
}

#[test]
fn readelf_lists_a_note_for_every_probe() {
    let notes = stapsdt_notes(Path::new(TARGET));
    for probe in Probe::ALL {
        assert!(
            notes
                .iter()
                .any(|(p, n)| p == PROVIDER && n == probe.name()),
            "no stapsdt note for {PROVIDER}:{} in {TARGET}; notes: {notes:?}",
            probe.name()
        );
    }
}

#[test]
fn bpftrace_lists_every_probe() {
    if !require_tracing("bpftrace_lists_every_probe") {
        return;
    }
    let out = Command::new("bpftrace")
        .arg("-l")
        .arg(format!("usdt:{TARGET}:{PROVIDER}:*"))
        .output()
        .expect("bpftrace runs");
    let listed = String::from_utf8_lossy(&out.stdout);
    for probe in Probe::ALL {
        let want = format!("usdt:{TARGET}:{PROVIDER}:{}", probe.name());
        assert!(
            listed.lines().any(|l| l.trim() == want),
            "bpftrace -l does not list {want}:\n{listed}"
        );
    }
}

#[test]
fn off_switch_build_has_no_notes() {
    // A separate target directory: the off feature must not replace the
    // instrumented binary the other tests use.
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    let target_dir = manifest.join("../target/off-switch");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let status = Command::new(cargo)
        .args([
            "build",
            "--quiet",
            "-p",
            "integration",
            "--bin",
            "probe-target",
        ])
        .args(["--features", "off", "--target-dir"])
        .arg(&target_dir)
        .current_dir(manifest)
        .status()
        .expect("cargo runs");
    assert!(status.success(), "building with the off feature failed");
    let bare = target_dir.join("debug/probe-target");
    let notes = stapsdt_notes(&bare);
    assert!(
        notes.is_empty(),
        "off-switch build still has stapsdt notes: {notes:?}"
    );
    // And the bare build still runs the same calls.
    let mut host = Host::start(&bare, &[]);
    host.go();
    let lines = host.read_until_done();
    assert!(lines.iter().any(|l| l == "recorded GET 0"), "{lines:?}");
}

/// The probe-target process.
struct Host {
    child: Child,
    stdin: ChildStdin,
    lines: mpsc::Receiver<String>,
    pid: u32,
}

impl Host {
    fn start(binary: &Path, args: &[&str]) -> Host {
        let mut child = Command::new(binary)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("start probe-target");
        let stdin = child.stdin.take().unwrap();
        let lines = line_reader(child.stdout.take().unwrap());
        let ready = lines
            .recv_timeout(Duration::from_secs(30))
            .expect("host says ready");
        let pid = ready
            .strip_prefix("ready ")
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("unexpected first line {ready:?}"));
        Host {
            child,
            stdin,
            lines,
            pid,
        }
    }

    fn go(&mut self) {
        writeln!(self.stdin).unwrap();
    }

    fn read_until_done(&mut self) -> Vec<String> {
        let mut lines = Vec::new();
        loop {
            let line = self
                .lines
                .recv_timeout(Duration::from_secs(60))
                .expect("host finishes its calls");
            if line == "done" {
                return lines;
            }
            lines.push(line);
        }
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        // Killed, not awaited: after a failed assertion the host may still be
        // waiting for input or for a tracer.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A bpftrace process, stopped with SIGINT (which makes it flush its output).
struct Tracer {
    child: Child,
    lines: mpsc::Receiver<String>,
}

impl Tracer {
    fn attach(pid: u32, script: &str) -> Tracer {
        let mut child = Command::new("bpftrace")
            .arg("-p")
            .arg(pid.to_string())
            .arg("-e")
            .arg(script)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start bpftrace");
        let lines = line_reader(child.stdout.take().unwrap());
        Tracer { child, lines }
    }

    /// Waits (up to 60 s) for bpftrace's BEGIN line, `tracing`: BEGIN runs
    /// once every probe location is attached. A probe's semaphore is raised
    /// by its first location, so a host that waits for the semaphores alone
    /// can fire sites bpftrace has not attached yet.
    fn wait_until_tracing(&mut self) -> Vec<String> {
        let mut early = Vec::new();
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) if line == "tracing" => return early,
                Ok(line) => early.push(line),
                Err(_) => panic!("bpftrace never reached BEGIN: {early:?}"),
            }
        }
    }

    /// Waits (up to 20 s) until bpftrace has printed `last` `times` times,
    /// then stops it and returns every line it printed. Events fired just
    /// before a SIGINT may never be printed: bpftrace reads its perf buffer
    /// on its own schedule.
    fn finish_after(mut self, last: &str, times: usize) -> Vec<String> {
        let mut out = Vec::new();
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while out.iter().filter(|l: &&String| *l == last).count() < times {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => out.push(line),
                Err(_) => break,
            }
        }
        self.interrupt();
        while let Ok(line) = self.lines.recv_timeout(Duration::from_secs(20)) {
            out.push(line);
        }
        out
    }

    fn interrupt(&mut self) {
        let _ = Command::new("kill")
            .arg("-INT")
            .arg(self.child.id().to_string())
            .status();
        let _ = self.child.wait();
    }
}

impl Drop for Tracer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn line_reader(stdout: ChildStdout) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

fn bpftrace_script(binary: &Path) -> String {
    let b = binary.display();
    format!(
        r#"
BEGIN {{ printf("tracing\n"); }}
usdt:{b}:ferrite:probe_enter {{ printf("enter %s %d\n", str(arg0), arg1); }}
usdt:{b}:ferrite:probe_exit {{ printf("exit %s %d %d %d\n", str(arg0), arg1, arg2, arg3); }}
usdt:{b}:ferrite:command_start {{ printf("command_start %d %s\n", arg0, str(arg1)); }}
usdt:{b}:ferrite:command_end {{ printf("command_end %d %s %d %d\n", arg0, str(arg1), arg2, arg3); }}
usdt:{b}:ferrite:storage_read {{ printf("storage_read %d %s %d %d\n", arg0, str(arg1, arg2), arg3, arg4); }}
usdt:{b}:ferrite:storage_write {{ printf("storage_write %d %s %d %d\n", arg0, str(arg1, arg2), arg3, arg4); }}
usdt:{b}:ferrite:replication_sync {{ printf("replication_sync %d %d %d %d\n", arg0, arg1, arg2, arg3); }}
usdt:{b}:ferrite:connection_accept {{ printf("connection_accept %d %d\n", arg0, arg1); }}
usdt:{b}:ferrite:connection_close {{ printf("connection_close %d %d %d\n", arg0, arg1, arg2); }}
"#
    )
}

/// One `did` line of the host: what a call was and how long it must have taken.
#[derive(Debug)]
struct Did {
    site: String,
    command: u64,
    min_ns: u64,
    max_ns: u64,
    error: u64,
}

fn parse_did(line: &str) -> Option<Did> {
    let mut f = line.strip_prefix("did ")?.split(' ');
    Some(Did {
        site: f.next()?.to_string(),
        command: f.next()?.parse().ok()?,
        min_ns: f.next()?.parse().ok()?,
        max_ns: f.next()?.parse().ok()?,
        error: f.next()?.parse().ok()?,
    })
}

#[test]
fn bpftrace_sees_the_calls_the_host_made() {
    if !require_tracing("bpftrace_sees_the_calls_the_host_made") {
        return;
    }
    let binary = PathBuf::from(TARGET);
    let mut host = Host::start(&binary, &["--wait-for-tracer"]);
    let mut tracer = Tracer::attach(host.pid, &bpftrace_script(&binary));
    tracer.wait_until_tracing();
    // bpftrace announces "Attaching" before it has attached (and buffers its
    // output in a pipe): the host itself waits until every probe's semaphore
    // is raised before it makes its calls.
    host.go();
    let did = host.read_until_done();
    assert!(
        !did.iter().any(|l| l.starts_with("tracer did not attach")),
        "bpftrace never attached: {did:?}"
    );
    // The host's last event of each of its two phases.
    let events = tracer.finish_after("connection_close 7 3 4000", 2);
    let events: Vec<&str> = events
        .iter()
        .map(String::as_str)
        .filter(|l| !l.is_empty() && !l.starts_with("Attaching"))
        .collect();

    check_phases(&did, &events);
    assert!(
        did.iter().any(|l| l == "recorded GET 1"),
        "recording phase counted one GET: {did:?}"
    );
}

fn check_phases(did: &[String], events: &[&str]) {
    let calls: Vec<Did> = did.iter().filter_map(|l| parse_did(l)).collect();
    assert_eq!(calls.len(), 6, "two phases of three calls: {did:?}");

    let exits: Vec<Vec<&str>> = events
        .iter()
        .filter(|l| l.starts_with("exit "))
        .map(|l| l.split(' ').collect())
        .collect();
    let enters: Vec<Vec<&str>> = events
        .iter()
        .filter(|l| l.starts_with("enter "))
        .map(|l| l.split(' ').collect())
        .collect();
    assert_eq!(
        exits.len(),
        6,
        "an exit per call, both with recording off and on: {events:#?}"
    );
    assert_eq!(enters.len(), 6, "an enter per call: {events:#?}");

    // Exits come in call-completion order: storage_lookup, GET, parse; twice.
    let mut by_order = calls.iter().zip(&exits);
    for (want, exit) in &mut by_order {
        let (site, command, elapsed, error) = (exit[1], exit[2], exit[3], exit[4]);
        assert_eq!(site, want.site, "exit order/site: {exit:?} vs {want:?}");
        assert_eq!(
            command.parse::<u64>().unwrap(),
            want.command,
            "command id of {site}"
        );
        let elapsed: u64 = elapsed.parse().unwrap();
        assert!(
            elapsed >= want.min_ns && elapsed <= want.max_ns,
            "{site}: probe says {elapsed} ns, host knows it took between {} and {} ns",
            want.min_ns,
            want.max_ns
        );
        assert_eq!(
            error.parse::<u64>().unwrap(),
            want.error,
            "error flag of {site}"
        );
    }

    // Enter probes: GET enters under its own new id, storage_lookup under it.
    let gets: Vec<&Did> = calls.iter().filter(|c| c.site == "GET").collect();
    for get in &gets {
        assert!(get.command > 0);
        let id = get.command.to_string();
        assert!(
            enters.iter().any(|e| e[1] == "GET" && e[2] == id),
            "enter GET {id}"
        );
        assert!(
            enters
                .iter()
                .any(|e| e[1] == "storage_lookup" && e[2] == id)
        );
        assert!(
            events.contains(&format!("command_start {id} GET").as_str()),
            "{events:#?}"
        );
        let end = events
            .iter()
            .find(|l| l.starts_with(&format!("command_end {id} GET ")))
            .unwrap_or_else(|| panic!("no command_end for {id}: {events:#?}"));
        let elapsed: u64 = end.split(' ').nth(3).unwrap().parse().unwrap();
        assert!(
            elapsed >= get.min_ns && elapsed <= get.max_ns,
            "command_end elapsed {elapsed}"
        );
    }
    assert_ne!(
        gets[0].command, gets[1].command,
        "each command gets a new id"
    );
    assert!(
        enters.iter().any(|e| e[1] == "parse" && e[2] == "0"),
        "no command outside commands"
    );

    // Host-fired probes, twice each with the arguments the host passed.
    let mut counts: HashMap<&str, usize> = HashMap::new();
    for want in [
        "storage_read 0 user:42 512 1000",
        "storage_write 0 user:42 64 2000",
        "replication_sync 1 4096 128 3000",
        "connection_accept 7 12",
        "connection_close 7 3 4000",
    ] {
        *counts.entry(want).or_default() = events.iter().filter(|l| **l == want).count();
    }
    for (want, n) in counts {
        assert_eq!(
            n, 2,
            "expected `{want}` once per phase; events: {events:#?}"
        );
    }
}
