//! The runtime: a disabled config starts nothing; an enabled one records and
//! publishes snapshots whose counts equal the calls made, on its own thread or
//! on the caller's tokio runtime; shutdown leaves no thread behind; a second
//! start is refused.
//!
//! One runtime per process: the tests take turns.

#![cfg(not(loom))]

use std::sync::Mutex;
use std::time::{Duration, Instant};

use ferrite_obs::{Config, Handle, probe};

static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

fn enabled() -> Config {
    Config {
        enabled: true,
        rollup_interval: Duration::from_millis(20),
        ..Config::default()
    }
}

/// Names of this process's threads.
fn threads() -> Vec<String> {
    std::fs::read_dir("/proc/self/task")
        .expect("/proc/self/task")
        .filter_map(|task| std::fs::read_to_string(task.ok()?.path().join("comm")).ok())
        .map(|name| name.trim().to_owned())
        .collect()
}

fn shutdown(handle: Handle) {
    tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap()
        .block_on(handle.shutdown());
}

/// Waits (bounded) for a snapshot that satisfies `done`.
fn wait_for(handle: &Handle, what: &str, done: impl Fn(&ferrite_obs::Snapshot) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !done(&handle.snapshot()) {
        assert!(
            Instant::now() < deadline,
            "no snapshot with {what} within 10 s"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[probe(skip_all)]
fn runtime_work(i: u64) -> u64 {
    i.wrapping_mul(31)
}

#[test]
fn disabled_config_starts_nothing_and_records_nothing() {
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let handle = ferrite_obs::start(Config::default()).expect("a disabled start cannot fail");
    std::thread::sleep(Duration::from_millis(50));
    assert!(
        !threads().iter().any(|t| t == "ferrite-obs"),
        "no collector thread: {:?}",
        threads()
    );
    assert!(!ferrite_obs::is_recording());
    let status = handle.status();
    assert!(!status.enabled && !status.collector_running);
    assert!(handle.snapshot().sites.is_empty());
    // A disabled handle does not hold the process's one runtime.
    let second = ferrite_obs::start(Config::default()).expect("disabled twice is fine");
    shutdown(second);
    shutdown(handle);
}

#[test]
fn enabled_runtime_publishes_exact_counts_and_shuts_down_cleanly() {
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let handle = ferrite_obs::start(enabled()).expect("start");
    // A new thread carries its parent's name until it has set its own.
    let deadline = Instant::now() + Duration::from_secs(5);
    while !threads().iter().any(|t| t == "ferrite-obs") {
        assert!(
            Instant::now() < deadline,
            "no collector thread: {:?}",
            threads()
        );
        std::thread::sleep(Duration::from_millis(1));
    }
    assert!(ferrite_obs::is_recording());
    let status = handle.status();
    assert!(status.enabled && status.recording && status.collector_running);

    let error = ferrite_obs::start(enabled()).expect_err("one runtime per process");
    assert_eq!(
        error.to_string(),
        "ferrite-obs is already running in this process: keep the first Handle, or shut it down before starting again"
    );

    let before = handle
        .snapshot()
        .site("runtime_work")
        .map_or(0, |s| s.total.calls);
    for i in 0..5_000 {
        std::hint::black_box(runtime_work(i));
    }
    wait_for(&handle, "5000 more calls at runtime_work", |snapshot| {
        snapshot
            .site("runtime_work")
            .is_some_and(|s| s.total.calls == before + 5_000)
    });
    let snapshot = handle.snapshot();
    let site = snapshot.site("runtime_work").unwrap();
    assert_eq!(site.total.latency.count(), before + 5_000);
    assert!(snapshot.collector.total_rollup > Duration::ZERO);
    assert!(
        snapshot.collector.thread_cpu > Duration::ZERO,
        "the collector's own thread CPU time"
    );

    shutdown(handle);
    assert!(!ferrite_obs::is_recording(), "shutdown turns recording off");
    assert!(
        !threads().iter().any(|t| t == "ferrite-obs"),
        "no collector thread after shutdown: {:?}",
        threads()
    );
    let again = ferrite_obs::start(enabled()).expect("start again after shutdown");
    shutdown(again);
}

#[test]
fn interval_figures_are_the_difference_of_consecutive_totals() {
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    #[probe(skip_all)]
    fn interval_work(i: u64) -> u64 {
        i ^ 7
    }
    let handle = ferrite_obs::start(enabled()).expect("start");
    let calls = |s: &ferrite_obs::Snapshot| s.site("interval_work").cloned();
    let mut previous = handle.snapshot();
    let mut pairs = 0;
    let deadline = Instant::now() + Duration::from_secs(20);
    // Calls spread over many rollups; every pair of consecutive snapshots the
    // reader happens to see is checked.
    while pairs < 5 {
        for i in 0..100 {
            std::hint::black_box(interval_work(i));
        }
        std::thread::sleep(Duration::from_millis(3));
        let now = handle.snapshot();
        assert!(now.sequence >= previous.sequence, "sequences only grow");
        if now.sequence == previous.sequence + 1
            && let (Some(before), Some(after)) = (calls(&previous), calls(&now))
        {
            assert_eq!(
                after.interval.calls,
                after.total.calls - before.total.calls,
                "interval {} = total now - total before",
                now.sequence
            );
            assert_eq!(
                after.interval.latency.count(),
                after.total.latency.count() - before.total.latency.count()
            );
            pairs += 1;
        }
        previous = now;
        assert!(
            Instant::now() < deadline,
            "saw only {pairs} consecutive snapshots in 20 s"
        );
    }
    shutdown(handle);
}

#[test]
fn inside_a_tokio_runtime_the_collector_is_a_task() {
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_time()
        .build()
        .unwrap();
    runtime.block_on(async {
        let handle = ferrite_obs::start(enabled()).expect("start");
        assert!(
            !threads().iter().any(|t| t == "ferrite-obs"),
            "no thread of its own"
        );
        for i in 0..1_000 {
            std::hint::black_box(runtime_work(i));
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        while handle.snapshot().sequence < 2 {
            assert!(Instant::now() < deadline, "no rollup on the tokio runtime");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        handle.shutdown().await;
    });
}
