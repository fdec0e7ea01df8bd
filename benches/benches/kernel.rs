//! The kernel view's cost and its bounds, on the real kernel (needs root).
//!
//! ```text
//! cargo bench -p benches --bench kernel                 # cost, then a 300 s soak
//! FERRITE_SOAK_SECONDS=30 cargo bench -p benches --bench kernel
//! ```
//!
//! 1. **Cost per io_uring request**: the same workload (commands that push
//!    tagged requests, entered in batches outside any command, as a
//!    thread-per-core server does) with the kernel view off and on,
//!    alternating in one run; the difference of the medians is what the
//!    programs add per request.
//! 2. **Soak**: the workload with the kernel view on for
//!    `FERRITE_SOAK_SECONDS` (default 300), printing every 10 s the
//!    rate, the process's RSS and the entries of every BPF map, and at the
//!    end whether attribution was exact: every request counted for its
//!    command, none unattributed.

use std::os::fd::AsRawFd;
use std::process::Command;
use std::time::{Duration, Instant};

use ferrite_obs::kernel::tag_sqe;
use ferrite_obs::{Config, Handle, probe};
use io_uring::{IoUring, opcode, types};

/// Requests per command, and commands per ring entry.
const PER_COMMAND: u64 = 8;
const COMMANDS_PER_BATCH: u64 = 4;

struct Workload {
    ring: IoUring,
    file: std::fs::File,
    buffer: Vec<u8>,
    next_user_data: u64,
    pushed: usize,
}

impl Workload {
    fn new() -> Workload {
        Workload {
            ring: IoUring::new(64).expect("io_uring_setup"),
            file: std::fs::File::open("/proc/self/exe").expect("open"),
            buffer: vec![0u8; 512],
            next_user_data: 0,
            pushed: 0,
        }
    }

    /// One batch: `COMMANDS_PER_BATCH` commands, then one ring entry.
    fn batch(&mut self) -> u64 {
        for _ in 0..COMMANDS_PER_BATCH {
            bench_command(self);
        }
        let pushed = std::mem::take(&mut self.pushed);
        self.ring.submit_and_wait(pushed).expect("io_uring_enter");
        let mut reaped = self.ring.completion().count();
        while reaped < pushed {
            self.ring
                .submit_and_wait(pushed - reaped)
                .expect("io_uring_enter");
            reaped += self.ring.completion().count();
        }
        pushed as u64
    }
}

/// Half no-ops, half 512-byte reads from the page cache: requests that
/// complete at once, so the programs' cost is not hidden behind a device.
#[probe(command, name = "BENCH", skip_all)]
fn bench_command(w: &mut Workload) {
    for i in 0..PER_COMMAND {
        let user_data = w.next_user_data % 128;
        w.next_user_data += 1;
        let entry = if i % 2 == 0 {
            opcode::Nop::new().build()
        } else {
            opcode::Read::new(types::Fd(w.file.as_raw_fd()), w.buffer.as_mut_ptr(), 512)
                .offset(0)
                .build()
        };
        // SAFETY: the buffer and file outlive the request (each batch is
        // reaped before the next).
        unsafe { w.ring.submission().push(&entry.user_data(user_data)) }.expect("room");
        tag_sqe(user_data);
        w.pushed += 1;
    }
}

fn start(ebpf: bool) -> Handle {
    let mut config = Config {
        enabled: true,
        endpoint: None,
        ..Config::default()
    };
    config.ebpf.enabled = ebpf;
    let handle = ferrite_obs::start(config).expect("start");
    if ebpf && !handle.status().kernel.is_active() {
        eprintln!(
            "the kernel view is not active ({}): this benchmark needs root (or CAP_BPF, CAP_PERFMON, CAP_DAC_READ_SEARCH)",
            handle.status().kernel
        );
        std::process::exit(1);
    }
    handle
}

fn shutdown(handle: Handle) {
    tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime")
        .block_on(handle.shutdown());
}

/// Nanoseconds per request over `for_time` of the workload.
fn measure(workload: &mut Workload, for_time: Duration) -> f64 {
    let start = Instant::now();
    let mut requests = 0u64;
    while start.elapsed() < for_time {
        requests += workload.batch();
    }
    start.elapsed().as_nanos() as f64 / requests as f64
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

fn cost() {
    const ROUNDS: usize = 7;
    let mut workload = Workload::new();
    // Warm up the ring, the page cache and the call site.
    let warm = start(false);
    measure(&mut workload, Duration::from_millis(500));
    shutdown(warm);
    let (mut off, mut on) = (Vec::new(), Vec::new());
    println!("cost per io_uring request (ns), kernel view off and on, alternating:");
    for round in 0..ROUNDS {
        for ebpf in [false, true] {
            let handle = start(ebpf);
            let ns = measure(&mut workload, Duration::from_secs(1));
            shutdown(handle);
            if ebpf { on.push(ns) } else { off.push(ns) }
        }
        println!(
            "  round {round}: off {:7.1}  on {:7.1}",
            off[round], on[round]
        );
    }
    // Paired by round as well: the machine's drift between rounds cancels.
    let mut added: Vec<f64> = on.iter().zip(&off).map(|(on, off)| on - off).collect();
    let added = median(&mut added);
    let (off, on) = (median(&mut off), median(&mut on));
    println!(
        "median: off {off:.1} ns, on {on:.1} ns: {:.1} ns added per request (ratio {:.2}); \
         median of the rounds' differences {added:.1} ns (target <= 150 ns)",
        on - off,
        on / off
    );
}

/// Resident set size of this process, in KiB.
fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// Entries of each of our maps, counted by `bpftool map dump`.
fn map_entries() -> String {
    let Ok(out) = Command::new("bpftool").args(["-j", "map", "show"]).output() else {
        return "bpftool unavailable".to_owned();
    };
    let text = String::from_utf8_lossy(&out.stdout);
    let mut figures = Vec::new();
    for name in ["inflight", "commands", "io_stats", "offcpu", "threads"] {
        let Some(at) = text.find(&format!("\"name\":\"{name}\"")) else {
            continue;
        };
        // The map's id precedes its name in bpftool's JSON object.
        let id = text[..at]
            .rfind("\"id\":")
            .and_then(|i| text[i + 5..].split(',').next())
            .unwrap_or("0")
            .to_owned();
        // Counted by a pipeline outside this process: a dump of a full map
        // is megabytes of JSON that would otherwise show in its RSS.
        let count = Command::new("sh")
            .arg("-c")
            .arg(format!(
                "bpftool -j map dump id {id} | grep -o '\"formatted\"' | wc -l"
            ))
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
            .unwrap_or_default();
        figures.push(format!("{name}={count}"));
    }
    figures.join(" ")
}

fn soak() {
    let seconds: u64 = std::env::var("FERRITE_SOAK_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(300);
    let handle = start(true);
    let before = handle
        .snapshot()
        .kernel
        .clone()
        .unwrap_or_default()
        .counters;
    let mut workload = Workload::new();
    let start_time = Instant::now();
    let mut requests = 0u64;
    let mut next_report = Duration::from_secs(10);
    let mut last = (Duration::ZERO, 0u64);
    let mut rss = Vec::new();
    println!("soak: {seconds} s, kernel view on");
    println!(
        "  {:>5} {:>12} {:>10} {:>9}  map entries",
        "s", "requests", "req/s", "RSS KiB"
    );
    while start_time.elapsed() < Duration::from_secs(seconds) {
        requests += workload.batch();
        let now = start_time.elapsed();
        if now >= next_report {
            let rate = (requests - last.1) as f64 / (now - last.0).as_secs_f64();
            rss.push(rss_kib());
            println!(
                "  {:>5} {:>12} {:>10.0} {:>9}  {}",
                now.as_secs(),
                requests,
                rate,
                rss[rss.len() - 1],
                map_entries()
            );
            last = (now, requests);
            next_report += Duration::from_secs(10);
        }
    }
    let elapsed = start_time.elapsed();
    // Let the collector read the final totals.
    std::thread::sleep(Duration::from_millis(2500));
    let counters = handle
        .snapshot()
        .kernel
        .clone()
        .unwrap_or_default()
        .counters;
    let attributed = counters.attributed - before.attributed;
    let unattributed = counters.unattributed - before.unattributed;
    println!(
        "soak: {requests} requests in {:.0} s ({:.0}/s); attributed {attributed}, unattributed {unattributed}: {}",
        elapsed.as_secs_f64(),
        requests as f64 / elapsed.as_secs_f64(),
        if attributed == requests && unattributed == 0 {
            "exact"
        } else {
            "NOT EXACT"
        }
    );
    if let (Some(first), Some(max)) = (rss.first(), rss.iter().max()) {
        println!(
            "soak: RSS first sample {first} KiB, highest {max} KiB, growth {} KiB",
            max - first
        );
    }
    shutdown(handle);
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    cost();
    soak();
}
