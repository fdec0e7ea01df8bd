//! A host with known call sequences under `#[probe]`, for the USDT tests.
//!
//! Protocol on stdin/stdout, so a test can attach a tracer before the calls:
//! it prints `ready PID`, waits for a line (and, with `--wait-for-tracer`, for
//! a tracer on every probe), runs the calls of one phase with
//! recording off and one with recording on, printing what it did
//! (`did SITE COMMAND MIN_NS MAX_NS ERROR`: the call's probe name, the command
//! id it ran under, its known least duration and the duration measured around
//! it), then prints `done` and waits for a line before exiting.

use std::io::{BufRead, Write};
use std::time::{Duration, Instant};

use ferrite_obs::probe;

#[probe(skip_all)]
fn storage_lookup(sleep: Duration) -> u64 {
    std::thread::sleep(sleep);
    ferrite_obs::current_command().map_or(0, |c| c.get())
}

#[probe(command, name = "GET", skip_all)]
fn get(sleep: Duration) -> (u64, u64, Duration) {
    let command = ferrite_obs::current_command().map_or(0, |c| c.get());
    let start = Instant::now();
    let seen = storage_lookup(sleep);
    (command, seen, start.elapsed())
}

#[probe(err, skip_all)]
fn parse(input: &str) -> Result<u32, std::num::ParseIntError> {
    input.parse()
}

fn say(line: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

fn wait_for_line() {
    let mut line = String::new();
    let _ = std::io::stdin().lock().read_line(&mut line);
}

fn phase() {
    let sleep = Duration::from_millis(3);
    let start = Instant::now();
    let (command, seen, inner) = get(sleep);
    let outer = start.elapsed();
    assert_eq!(command, seen, "nested probe must see the command");
    say(&format!(
        "did storage_lookup {command} {} {} 0",
        sleep.as_nanos(),
        inner.as_nanos()
    ));
    say(&format!(
        "did GET {command} {} {} 0",
        sleep.as_nanos(),
        outer.as_nanos()
    ));

    let start = Instant::now();
    let failed = parse("not a number").is_err();
    let outer = start.elapsed();
    say(&format!(
        "did parse 0 0 {} {}",
        outer.as_nanos(),
        u8::from(failed)
    ));

    // The host-fired probes, with known arguments.
    ferrite_obs::probes::storage_read(b"user:42", 512, 1_000);
    ferrite_obs::probes::storage_write(b"user:42", 64, 2_000);
    ferrite_obs::probes::replication_sync(1, 4096, 128, 3_000);
    ferrite_obs::probes::connection_accept(7, 12);
    ferrite_obs::probes::connection_close(7, 3, 4_000);
}

/// With `--wait-for-tracer`, waits until a tracer is attached to every probe
/// (bpftrace announces "Attaching" before it has attached), at most 60 s.
fn wait_for_tracer() {
    if !std::env::args().any(|a| a == "--wait-for-tracer") {
        return;
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    while !ferrite_obs::probes::Probe::ALL
        .iter()
        .all(|p| p.is_attached())
    {
        if Instant::now() > deadline {
            say("tracer did not attach to every probe within 60 s");
            std::process::exit(2);
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn main() {
    say(&format!("ready {}", std::process::id()));
    wait_for_line();
    wait_for_tracer();
    say("phase recording-off");
    phase();
    ferrite_obs::set_recording(true);
    say("phase recording-on");
    phase();
    let calls = ferrite_obs::sites()
        .iter()
        .find(|s| s.name == "GET")
        .map_or(0, |s| s.calls);
    say(&format!("recorded GET {calls}"));
    say("done");
    wait_for_line();
}
