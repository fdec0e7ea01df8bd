//! An instrumented key-value workload: command roots under
//! `#[probe(command)]`, storage functions under `#[probe]`, the named
//! storage probes fired by hand. It records, prints every call site's figures
//! at an interval, and says how to attach bpftrace to it.
//!
//! ```text
//! probe-demo [--seconds N] [--threads N] [--interval-ms N]
//! ```
//! `--seconds 0` (the default) runs until interrupted.

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::sync::RwLock;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use ferrite_obs::probe;

const SHARDS: usize = 16;

/// A sharded in-memory store.
struct Store {
    shards: Vec<RwLock<HashMap<Vec<u8>, Vec<u8>>>>,
    hasher: RandomState,
}

impl Store {
    fn new() -> Self {
        Store {
            shards: (0..SHARDS).map(|_| RwLock::new(HashMap::new())).collect(),
            hasher: RandomState::new(),
        }
    }

    fn shard(&self, key: &[u8]) -> &RwLock<HashMap<Vec<u8>, Vec<u8>>> {
        let index = self.hasher.hash_one(key) as usize % SHARDS;
        &self.shards[index]
    }

    #[probe(name = "storage_read", skip_all)]
    fn read(&self, key: &[u8]) -> Option<Vec<u8>> {
        let start = Instant::now();
        let value = self
            .shard(key)
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(key)
            .cloned();
        let bytes = value.as_ref().map_or(0, Vec::len) as u64;
        ferrite_obs::probes::storage_read(key, bytes, start.elapsed().as_nanos() as u64);
        value
    }

    #[probe(name = "storage_write", skip_all)]
    fn write(&self, key: &[u8], value: &[u8]) {
        let start = Instant::now();
        self.shard(key)
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(key.to_vec(), value.to_vec());
        ferrite_obs::probes::storage_write(
            key,
            value.len() as u64,
            start.elapsed().as_nanos() as u64,
        );
    }
}

#[probe(command, name = "GET", skip_all)]
fn get(store: &Store, key: &[u8]) -> Option<Vec<u8>> {
    store.read(key)
}

#[probe(command, name = "SET", skip_all)]
fn set(store: &Store, key: &[u8], value: &[u8]) {
    store.write(key, value);
}

#[probe(command, name = "INCR", skip_all, err)]
fn incr(store: &Store, key: &[u8]) -> Result<i64, &'static str> {
    let current = match store.read(key) {
        Some(bytes) => std::str::from_utf8(&bytes)
            .ok()
            .and_then(|s| s.parse::<i64>().ok())
            .ok_or("value is not an integer or out of range")?,
        None => 0,
    };
    let next = current.checked_add(1).ok_or("increment would overflow")?;
    store.write(key, next.to_string().as_bytes());
    Ok(next)
}

struct Options {
    seconds: u64,
    threads: usize,
    interval: Duration,
}

fn parse_options() -> Result<Options, String> {
    let mut options = Options {
        seconds: 0,
        threads: 2,
        interval: Duration::from_secs(2),
    };
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let mut value = |name: &str| -> Result<u64, String> {
            let raw = args.next().ok_or(format!("{name} needs a value"))?;
            raw.parse()
                .map_err(|_| format!("{name} takes a whole number, not {raw:?}"))
        };
        match flag.as_str() {
            "--seconds" => options.seconds = value("--seconds")?,
            "--threads" => options.threads = value("--threads")?.clamp(1, 64) as usize,
            "--interval-ms" => {
                options.interval = Duration::from_millis(value("--interval-ms")?.max(100))
            }
            other => {
                return Err(format!(
                    "unknown option {other:?}; expected --seconds N, --threads N, --interval-ms N"
                ));
            }
        }
    }
    Ok(options)
}

fn workload(store: &Store, thread: usize, stop: &AtomicBool) {
    let mut i: u64 = 0;
    while !stop.load(Ordering::Relaxed) {
        let key = format!("key:{}", (i * 7 + thread as u64) % 1000);
        match i % 10 {
            0..=5 => {
                let _ = get(store, key.as_bytes());
            }
            6..=8 => set(store, key.as_bytes(), b"some value of a few bytes"),
            _ => {
                let _ = incr(store, format!("counter:{}", i % 8).as_bytes());
            }
        }
        i += 1;
    }
}

fn print_figures(elapsed: Duration) {
    println!("\nafter {:.1} s", elapsed.as_secs_f64());
    println!(
        "{:<14} {:>10} {:>8} {:>6} {:>10} {:>10} {:>10}",
        "site", "calls", "errors", "live", "p50 ns", "p99 ns", "max ns"
    );
    for site in ferrite_obs::sites() {
        let q = |q| site.quantile(q).map_or("-".to_string(), |v| v.to_string());
        println!(
            "{:<14} {:>10} {:>8} {:>6} {:>10} {:>10} {:>10}",
            site.name,
            site.calls,
            site.errors,
            site.in_flight(),
            q(0.5),
            q(0.99),
            q(1.0)
        );
    }
}

fn main() {
    let options = match parse_options() {
        Ok(options) => options,
        Err(message) => {
            eprintln!("probe-demo: {message}");
            std::process::exit(2);
        }
    };
    ferrite_obs::set_recording(true);
    let pid = std::process::id();
    let exe =
        std::env::current_exe().map_or_else(|_| "probe-demo".into(), |p| p.display().to_string());
    println!(
        "probe-demo: pid {pid}, {} threads, recording on",
        options.threads
    );
    println!("attach a tracer (as root):");
    println!(
        "  bpftrace -p {pid} -e 'usdt:{exe}:ferrite:command_end {{ @us[str(arg1)] = hist(arg2 / 1000); }}'"
    );

    let store = Store::new();
    let stop = AtomicBool::new(false);
    let start = Instant::now();
    std::thread::scope(|scope| {
        for thread in 0..options.threads {
            let (store, stop) = (&store, &stop);
            scope.spawn(move || workload(store, thread, stop));
        }
        loop {
            std::thread::sleep(options.interval);
            print_figures(start.elapsed());
            if options.seconds > 0 && start.elapsed() >= Duration::from_secs(options.seconds) {
                stop.store(true, Ordering::Relaxed);
                break;
            }
        }
    });
}
