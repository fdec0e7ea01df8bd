//! Rollup cost and memory per site: 1,000 call sites written by 8 threads
//! while the real collector rolls up every 50 ms.
//!
//! ```text
//! cargo bench -p benches --bench rollup
//! ```
//!
//! Prints the mean and last rollup time (target: at most 1 ms), the
//! collector's CPU time while the threads write and once they are gone (the
//! same shards, idle), and the resident memory per site and per
//! (site, thread) pair, measured as the growth of the process's RSS.

use std::net::SocketAddr;
use std::sync::Barrier;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use ferrite_obs::__private::{NeverErr, Site, leaked_site, run};
use ferrite_obs::Config;

const SITES: usize = 1_000;
const THREADS: usize = 8;

/// Resident set size of this process, in bytes.
fn rss() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

fn main() {
    let rss_start = rss();
    let sites: Vec<&'static Site> = (0..SITES)
        .map(|i| leaked_site(format!("site_{i:04}"), false))
        .collect();
    let rss_sites = rss();

    let handle = ferrite_obs::start(Config {
        enabled: true,
        rollup_interval: Duration::from_millis(50),
        endpoint: Some(SocketAddr::from(([127, 0, 0, 1], 0))),
        ..Config::default()
    })
    .expect("start");

    // Every thread touches every site once (its shards), then keeps writing.
    let stop = AtomicBool::new(false);
    let touched = Barrier::new(THREADS + 1);
    let (rss_shards, rollups) = std::thread::scope(|scope| {
        for t in 0..THREADS {
            let (sites, stop, touched) = (&sites, &stop, &touched);
            scope.spawn(move || {
                for site in sites {
                    run::<_, NeverErr, false>(site, || std::hint::black_box(t));
                }
                touched.wait();
                let mut i = t;
                while !stop.load(Ordering::Relaxed) {
                    let site = sites[i % SITES];
                    run::<_, NeverErr, false>(site, || std::hint::black_box(i));
                    i += 7;
                }
            });
        }
        touched.wait();
        let rss_shards = rss();
        let first = handle.snapshot();
        let started = Instant::now();
        std::thread::sleep(Duration::from_secs(3));
        let last = handle.snapshot();
        stop.store(true, Ordering::Relaxed);
        (rss_shards, (first, last, started.elapsed()))
    });
    let (first, last, wall) = rollups;
    // The writers have exited: every shard is idle from here on.
    std::thread::sleep(Duration::from_millis(100));
    let idle_first = handle.snapshot();
    std::thread::sleep(Duration::from_secs(1));
    let idle_last = handle.snapshot();
    let n = last.sequence - first.sequence;
    let total = last.collector.total_rollup - first.collector.total_rollup;
    let cpu = last.collector.thread_cpu - first.collector.thread_cpu;
    let calls: u64 = last.sites.iter().map(|s| s.total.calls).sum();

    println!("## Rollup: {SITES} sites, {THREADS} writer threads, rollup every 50 ms\n");
    println!("| figure | value |\n|---|---:|");
    println!(
        "| rollups measured | {n} (over {:.1} s) |",
        wall.as_secs_f64()
    );
    println!(
        "| mean rollup time | {:.3} ms |",
        total.as_secs_f64() * 1e3 / n.max(1) as f64
    );
    println!(
        "| last rollup time | {:.3} ms |",
        last.collector.last_rollup.as_secs_f64() * 1e3
    );
    println!(
        "| collector CPU per rollup | {:.3} ms |",
        cpu.as_secs_f64() * 1e3 / n.max(1) as f64
    );
    let idle_n = idle_last.sequence - idle_first.sequence;
    println!(
        "| collector CPU per rollup, writers gone (idle shards) | {:.3} ms |",
        (idle_last.collector.thread_cpu - idle_first.collector.thread_cpu).as_secs_f64() * 1e3
            / idle_n.max(1) as f64
    );
    println!("| sites in the snapshot | {} |", last.sites.len());
    println!("| calls recorded | {calls} |");
    println!(
        "| memory per site, before any call (static part) | {} bytes |",
        (rss_sites - rss_start) / SITES as u64
    );
    println!(
        "| memory per (site, thread) shard | {} bytes |",
        (rss_shards - rss_sites) / (SITES * THREADS) as u64
    );
    let mean_ms = total.as_secs_f64() * 1e3 / n.max(1) as f64;
    println!(
        "\ntarget: rollup <= 1 ms for {SITES} sites x {THREADS} threads: {}",
        if mean_ms <= 1.0 { "PASS" } else { "MISS" }
    );
    tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap()
        .block_on(handle.shutdown());
}
