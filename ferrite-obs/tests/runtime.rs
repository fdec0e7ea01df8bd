//! The runtime: a disabled config starts nothing; an enabled one records and
//! publishes snapshots whose counts equal the calls made, on its own thread or
//! on the caller's tokio runtime, and its status says each part runs;
//! shutdown leaves no thread behind; a second start is refused.
//!
//! One runtime per process: the tests take turns.

#![cfg(not(loom))]

#[path = "support/http.rs"]
mod http_client;
mod support;

use std::net::{SocketAddr, TcpListener};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use ferrite_obs::{CollectorState, Config, FacadeState, Handle, probe};
use http_client::{get, http, sample};

static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

fn enabled() -> Config {
    Config {
        enabled: true,
        rollup_interval: Duration::from_millis(20),
        // A port of the system's choosing: nothing else on the machine clashes.
        endpoint: Some(SocketAddr::from(([127, 0, 0, 1], 0))),
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

/// The runtime's threads: the collector, the facade's export and the endpoint.
const THREADS: [&str; 3] = ["ferrite-obs", "ferrite-metrics", "ferrite-http"];

fn runtime_threads() -> Vec<String> {
    threads()
        .into_iter()
        .filter(|t| THREADS.contains(&t.as_str()))
        .collect()
}

/// The status, and the sequence of the snapshot published when it was
/// read (no rollup in between).
fn status_at_one_rollup(handle: &Handle) -> (ferrite_obs::Status, u64) {
    loop {
        let before = handle.snapshot().sequence;
        let status = handle.status();
        if handle.snapshot().sequence == before {
            return (status, before);
        }
    }
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
    assert_eq!(runtime_threads(), Vec::<String>::new(), "no runtime thread");
    assert!(!ferrite_obs::is_recording());
    let status = handle.status();
    assert!(!status.enabled && !status.collector_running && !status.endpoint_listening);
    assert_eq!(status.collector.state, CollectorState::Off);
    assert_eq!(status.facade.state, FacadeState::Off);
    assert!(handle.snapshot().sites.is_empty());
    // A disabled handle does not hold the process's one runtime.
    let second = ferrite_obs::start(Config::default()).expect("disabled twice is fine");
    support::shutdown(second);
    support::shutdown(handle);
}

#[test]
fn enabled_runtime_publishes_exact_counts_and_shuts_down_cleanly() {
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let handle = ferrite_obs::start(enabled()).expect("start");
    // `start` returns once the collector's thread runs and listens.
    let status = handle.status();
    assert!(status.enabled && status.recording && status.collector_running);
    assert!(status.endpoint_listening);
    assert_eq!(status.collector.state, CollectorState::Running);
    // A new thread carries its parent's name until it has set its own.
    let deadline = Instant::now() + Duration::from_secs(5);
    while runtime_threads().len() < THREADS.len() {
        assert!(
            Instant::now() < deadline,
            "the runtime's threads: {:?}",
            threads()
        );
        std::thread::sleep(Duration::from_millis(1));
    }
    assert!(ferrite_obs::is_recording());

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

    // Every part runs, and nothing has panicked.
    let (status, sequence) = status_at_one_rollup(&handle);
    let collector = &status.collector;
    assert_eq!(collector.state, CollectorState::Running);
    assert_eq!(collector.rollups, sequence);
    let age = collector.last_rollup_age.expect("a rollup was published");
    assert!(age < Duration::from_secs(1), "last rollup {age:?} ago");
    assert!(collector.last_rollup.is_some());
    assert_eq!((collector.panics, &collector.last_panic), (0, &None));
    let facade = &status.facade;
    assert_eq!(facade.state, FacadeState::Running);
    assert!(facade.exports >= 1, "exported to the no-op recorder");
    assert_eq!((facade.panics, &facade.last_panic), (0, &None));

    support::shutdown(handle);
    assert!(!ferrite_obs::is_recording(), "shutdown turns recording off");
    assert_eq!(
        runtime_threads(),
        Vec::<String>::new(),
        "no runtime thread after shutdown"
    );
    let again = ferrite_obs::start(enabled()).expect("start again after shutdown");
    support::shutdown(again);
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
    support::shutdown(handle);
}

#[test]
fn starts_and_stops_from_inside_a_tokio_runtime_without_its_drivers() {
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    // No time or IO driver: the collector must not depend on the host's.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    runtime.block_on(async {
        let handle = ferrite_obs::start(enabled()).expect("start");
        for i in 0..1_000 {
            std::hint::black_box(runtime_work(i));
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        while handle.snapshot().sequence < 2 {
            assert!(Instant::now() < deadline, "no rollup");
            std::thread::sleep(Duration::from_millis(5));
        }
        assert_eq!(get(handle.endpoint().unwrap(), "/status").0, 200);
        handle.shutdown().await;
    });
    assert_eq!(runtime_threads(), Vec::<String>::new());
}

#[test]
fn endpoint_serves_metrics_promtool_accepts_with_exact_counts() {
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    #[probe(skip_all)]
    fn sleepy(ms: u64) {
        std::thread::sleep(Duration::from_millis(ms));
    }
    #[probe(command, name = "GET", skip_all)]
    fn get_command() {}

    let handle = ferrite_obs::start(enabled()).expect("start");
    let addr = handle.endpoint().expect("the endpoint is on");
    for _ in 0..20 {
        sleepy(1);
    }
    for _ in 0..5 {
        sleepy(20);
    }
    for _ in 0..7 {
        get_command();
    }
    wait_for(&handle, "all calls", |s| {
        s.site("sleepy").is_some_and(|x| x.total.calls == 25)
            && s.site("GET").is_some_and(|x| x.total.calls == 7)
    });

    let (status, metrics) = get(addr, "/metrics");
    assert_eq!(status, 200);
    support::promtool_check(&metrics);
    assert_eq!(
        sample(&metrics, "ferrite_probe_calls_total{site=\"sleepy\","),
        25.0
    );
    assert_eq!(
        sample(
            &metrics,
            "ferrite_probe_duration_seconds_count{site=\"sleepy\","
        ),
        25.0
    );
    assert_eq!(
        sample(
            &metrics,
            "ferrite_command_calls_total{command=\"GET\",module=\"runtime\"}"
        ),
        7.0
    );
    let sum = sample(
        &metrics,
        "ferrite_probe_duration_seconds_sum{site=\"sleepy\",",
    );
    assert!(
        (0.120..1.0).contains(&sum),
        "20 x 1 ms + 5 x 20 ms, got {sum} s"
    );

    let (status, body) = get(addr, "/snapshot");
    assert_eq!(status, 200);
    let json: serde_json::Value = serde_json::from_str(&body).expect("/snapshot is JSON");
    let site = json["sites"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "sleepy")
        .expect("sleepy in /snapshot");
    assert_eq!(site["total"]["calls"], 25);
    let cost = &json["instrumentation"];
    let per_call = cost["per_call_ns"].as_f64().unwrap();
    assert!(
        (1.0..10_000.0).contains(&per_call),
        "measured per-call cost: {per_call} ns"
    );
    assert!(
        sample(&metrics, "ferrite_obs_instrumentation_seconds_total ") > 0.0,
        "the estimate counts the calls made"
    );
    assert!(
        !json["sites"]
            .as_array()
            .unwrap()
            .iter()
            .any(|s| s["name"] == "ferrite_obs_calibration"),
        "the measurement's site is not listed"
    );
    let (status, body) = get(addr, "/status");
    assert_eq!(status, 200);
    let status_json: serde_json::Value = serde_json::from_str(&body).expect("/status is JSON");
    assert_eq!(status_json["enabled"], true);
    assert_eq!(status_json["endpoint_listening"], true);
    assert_eq!(status_json["collector"]["state"], "running");
    assert_eq!(status_json["collector"]["panics"], 0);
    assert_eq!(status_json["facade"]["state"], "running");
    let typed: ferrite_obs::schema::Status =
        serde_json::from_value(status_json).expect("/status is the schema's Status");
    let collector = typed.collector.expect("the collector's status");
    assert_eq!(
        collector.state,
        ferrite_obs::schema::CollectorState::Running
    );
    assert!(collector.rollups >= 1 && collector.last_rollup_age_seconds.is_some());

    // Quantiles agree with the known latencies.
    let snapshot = handle.snapshot();
    let latency = &snapshot.site("sleepy").unwrap().total.latency;
    let p50 = latency.quantile(0.5).unwrap();
    let max = latency.quantile(1.0).unwrap();
    assert!(
        (1_000_000..10_000_000).contains(&p50),
        "p50 of 1 ms sleeps: {p50} ns"
    );
    assert!(
        (20_000_000..200_000_000).contains(&max),
        "max of 20 ms sleeps: {max} ns"
    );

    assert_eq!(get(addr, "/nope").0, 404);
    assert_eq!(http(addr, "POST /metrics HTTP/1.1\r\n\r\n").0, 405);
    assert_eq!(http(addr, "HELLO\r\n\r\n").0, 400);
    let huge = format!("GET /metrics HTTP/1.1\r\nX: {}\r\n\r\n", "a".repeat(10_000));
    assert_eq!(http(addr, &huge).0, 431);

    support::shutdown(handle);
    TcpListener::bind(addr).expect("the endpoint's port is free after shutdown");
}

#[test]
fn a_taken_endpoint_address_fails_start_and_says_which() {
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap();
    let error = ferrite_obs::start(Config {
        endpoint: Some(addr),
        ..enabled()
    })
    .expect_err("the address is taken");
    let message = error.to_string();
    assert!(
        message.starts_with(&format!(
            "cannot listen on {addr} for the ferrite-obs endpoint: "
        )),
        "{message}"
    );
    assert!(
        message.ends_with("choose another `observability.endpoint`, or \"off\""),
        "{message}"
    );
    assert!(
        !ferrite_obs::is_recording(),
        "a failed start leaves recording off"
    );
    let handle = ferrite_obs::start(enabled()).expect("a failed start does not hold the runtime");
    support::shutdown(handle);
}

#[test]
fn slow_commands_are_logged_newest_first_in_a_bounded_ring() {
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    #[probe(command, name = "SLOW", skip_all)]
    fn slow_command(ms: u64) -> u64 {
        std::thread::sleep(Duration::from_millis(ms));
        ferrite_obs::current_command().map_or(0, |c| c.get())
    }
    #[probe(command, name = "SLOW_ASYNC", skip_all)]
    async fn slow_async_command() {
        tokio::time::sleep(Duration::from_millis(30)).await;
    }

    let handle = ferrite_obs::start(Config {
        slow_threshold: Duration::from_millis(15),
        slowlog_len: 3,
        ..enabled()
    })
    .expect("start");
    let fast = slow_command(1);
    let ids: Vec<u64> = (0..4).map(|_| slow_command(25)).collect();
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap()
        .block_on(slow_async_command());
    wait_for(&handle, "five slow commands logged", |s| {
        s.slowlog.logged == 5
    });

    let log = handle.snapshot().slowlog.clone();
    assert_eq!(log.entries.len(), 3, "the ring keeps slowlog_len entries");
    assert_eq!(log.dropped, 0);
    let newest = &log.entries[0];
    assert_eq!(newest.command, "SLOW_ASYNC", "newest first");
    assert!(newest.duration >= Duration::from_millis(30));
    assert!(
        newest.busy < newest.duration,
        "an async command's busy time is its polls only"
    );
    assert_eq!(
        log.entries[1..].iter().map(|e| e.id).collect::<Vec<_>>(),
        vec![ids[3], ids[2]],
        "the latest synchronous ones, by command id"
    );
    assert!(
        log.entries.iter().all(|e| e.id != fast),
        "a fast command is not logged"
    );
    let sync = &log.entries[1];
    assert!(sync.duration >= Duration::from_millis(25) && sync.busy == sync.duration);

    let (status, body) = get(handle.endpoint().unwrap(), "/slowlog");
    assert_eq!(status, 200);
    let json: serde_json::Value = serde_json::from_str(&body).expect("/slowlog is JSON");
    assert_eq!(json["logged"], 5);
    assert_eq!(json["entries"][0]["command"], "SLOW_ASYNC");
    assert_eq!(json["entries"][1]["id"], ids[3]);
    assert!(json["entries"][1]["duration_ns"].as_u64().unwrap() >= 25_000_000);
    // With the kernel view, a sleeping command's time is off-CPU; without
    // it there is no breakdown, rather than a made-up one.
    let kernel = &json["entries"][1]["kernel"];
    let active = handle.status().kernel.is_active();
    if std::env::var_os("FERRITE_REQUIRE_KERNEL").is_some_and(|v| v == "1") {
        assert!(active, "the kernel view: {}", handle.status().kernel);
    }
    if active {
        let off_cpu = kernel["off_cpu_ns"].as_u64().expect("a breakdown");
        let on_cpu = kernel["on_cpu_ns"].as_u64().unwrap();
        assert!(off_cpu >= 25_000_000, "the sleep is off-CPU: {kernel}");
        assert!(
            on_cpu < off_cpu,
            "most of a sleep is not on the CPU: {kernel}"
        );
    } else {
        assert!(kernel.is_null(), "{kernel}");
    }
    support::shutdown(handle);
}

#[test]
fn every_site_counter_is_in_the_metrics_and_the_snapshot_document_and_nothing_else_is() {
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    #[probe(err, skip_all)]
    fn figures_site(fail: bool) -> Result<(), ()> {
        if fail { Err(()) } else { Ok(()) }
    }
    use ferrite_obs::schema::SITE_COUNTERS;

    let handle = ferrite_obs::start(enabled()).expect("start");
    let addr = handle.endpoint().expect("the endpoint is on");
    for fail in [false, true, false] {
        let _ = figures_site(fail);
    }
    wait_for(&handle, "the three calls", |s| {
        s.site("figures_site").is_some_and(|x| x.total.calls == 3)
    });
    let (status, metrics) = get(addr, "/metrics");
    assert_eq!(status, 200);
    let (status, body) = get(addr, "/snapshot");
    assert_eq!(status, 200);
    support::shutdown(handle);

    let document: serde_json::Value = serde_json::from_str(&body).expect("/snapshot is JSON");
    let typed: ferrite_obs::schema::Snapshot =
        serde_json::from_value(document.clone()).expect("/snapshot is the schema's Snapshot");
    assert_eq!(typed.schema_version, ferrite_obs::schema::SCHEMA_VERSION);
    let site = document["sites"]
        .as_array()
        .expect("sites")
        .iter()
        .find(|s| s["name"] == "figures_site")
        .expect("the site in /snapshot");
    assert_eq!(site["total"]["calls"], 3);
    assert_eq!(site["total"]["errors"], 1);

    // Each declared counter: in the totals and the interval of the document,
    // and a family of /metrics with the same value.
    for (field, family, scale) in SITE_COUNTERS {
        let total = site["total"][field]
            .as_u64()
            .unwrap_or_else(|| panic!("/snapshot total has no `{field}`"));
        assert!(
            site["interval"][field].is_u64(),
            "/snapshot interval has no `{field}`"
        );
        let exported = sample(
            &metrics,
            &format!("ferrite_probe_{family}{{site=\"figures_site\","),
        );
        assert_eq!(exported, total as f64 * scale, "{family} against {field}");
    }

    // And nothing is exported or serialised that the list does not declare.
    let declared_families: Vec<&str> = SITE_COUNTERS.iter().map(|(_, f, _)| *f).collect();
    for line in metrics.lines() {
        if let Some(family) = line
            .strip_prefix("# TYPE ferrite_probe_")
            .and_then(|rest| rest.split(' ').next())
        {
            assert!(
                declared_families.contains(&family)
                    || ["in_flight", "duration_seconds"].contains(&family),
                "/metrics family ferrite_probe_{family} is not declared"
            );
        }
    }
    let declared_fields: Vec<&str> = SITE_COUNTERS.iter().map(|(f, _, _)| *f).collect();
    for (part, extras) in [
        (
            "total",
            &["in_flight", "latency_sum_ns", "latency_buckets"][..],
        ),
        (
            "interval",
            &[
                "calls_per_second",
                "p50_ns",
                "p90_ns",
                "p99_ns",
                "p999_ns",
                "max_ns",
            ][..],
        ),
    ] {
        for key in site[part].as_object().expect(part).keys() {
            assert!(
                declared_fields.contains(&key.as_str()) || extras.contains(&key.as_str()),
                "/snapshot {part}.{key} is not declared"
            );
        }
    }
}

mod store {
    #[ferrite_obs::probe(command, skip_all)]
    pub fn apply() {}
}
mod replica {
    #[ferrite_obs::probe(command, skip_all)]
    pub fn apply() {}
}
mod journal {
    #[ferrite_obs::probe(command, skip_all)]
    pub fn apply() {}
}

/// Three command roots in different modules that share the name `apply`:
/// three series apart (by `module`), each with its own count, as the site
/// metrics are; promtool accepts the exposition.
#[test]
fn commands_that_share_a_name_are_series_apart_by_module() {
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let handle = ferrite_obs::start(enabled()).expect("start");
    let addr = handle.endpoint().expect("the endpoint is on");
    for _ in 0..3 {
        store::apply();
    }
    for _ in 0..5 {
        replica::apply();
    }
    journal::apply();
    wait_for(&handle, "every apply", |s| {
        s.sites
            .iter()
            .filter(|x| x.total.name == "apply")
            .map(|x| x.total.calls)
            .sum::<u64>()
            == 9
    });
    let (status, metrics) = get(addr, "/metrics");
    assert_eq!(status, 200);
    support::promtool_check(&metrics);
    for (module, calls) in [("store", 3.0), ("replica", 5.0), ("journal", 1.0)] {
        let series = format!(
            "ferrite_command_calls_total{{command=\"apply\",module=\"runtime::{module}\"}}"
        );
        assert_eq!(sample(&metrics, &series), calls, "{series}");
    }
    let series = metrics
        .lines()
        .filter(|l| l.starts_with("ferrite_command_calls_total{command=\"apply\""))
        .count();
    assert_eq!(series, 3, "{metrics}");
    support::shutdown(handle);
}

/// 200 hostile connections held open against the endpoint (idle ones, ones
/// that trickle a request a byte at a time, ones that send garbage without
/// an end): a scraper still gets `200` for each of ten scrapes, each within
/// 100 ms, because each connection beyond the 64 closes the oldest one
/// still sending its request; the status counts exactly those.
#[test]
fn a_scraper_is_served_at_once_beside_200_hostile_connections() {
    use std::io::Write;
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let handle = ferrite_obs::start(enabled()).expect("start");
    let addr = handle.endpoint().expect("the endpoint is on");
    const HOSTILE: usize = 200;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut held = Vec::new();
    let mut tricklers = Vec::new();
    for i in 0..HOSTILE {
        let mut stream = std::net::TcpStream::connect(addr).expect("connect");
        match i % 3 {
            0 => {}
            1 => {
                let stop = stop.clone();
                let mut stream = stream.try_clone().unwrap();
                tricklers.push(std::thread::spawn(move || {
                    for byte in b"GET /metrics HTTP/1.1\r\nHost: x".iter().cycle() {
                        if stop.load(std::sync::atomic::Ordering::Relaxed)
                            || stream.write_all(&[*byte]).is_err()
                        {
                            break;
                        }
                        std::thread::sleep(Duration::from_millis(50));
                    }
                }));
            }
            _ => {
                let _ = stream.write_all(&[0xff, 0x00, b'G', b'E', 0x7f, b'x', b'y']);
            }
        }
        held.push(stream);
    }
    // Every hostile connection accepted: the first 64 took the slots, each
    // later one closed the oldest still reading.
    let deadline = Instant::now() + Duration::from_secs(3);
    while handle.status().endpoint_evicted < (HOSTILE - 64) as u64 {
        assert!(Instant::now() < deadline, "{:?}", handle.status());
        std::thread::sleep(Duration::from_millis(5));
    }
    for scrape in 0..10 {
        let started = Instant::now();
        let (status, metrics) = get(addr, "/metrics");
        let took = started.elapsed();
        assert_eq!(status, 200, "scrape {scrape}");
        assert!(metrics.contains("ferrite_obs_rollups_total"));
        assert!(
            took < Duration::from_millis(100),
            "scrape {scrape} took {took:?}"
        );
    }
    // One more for the first scrape's slot; the later ones found the slot
    // it left.
    assert_eq!(handle.status().endpoint_evicted, (HOSTILE - 64 + 1) as u64);
    assert_eq!(
        handle.status().endpoint_refused,
        0,
        "none was being answered"
    );
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    drop(held);
    for trickler in tricklers {
        trickler.join().unwrap();
    }
    support::shutdown(handle);
}
