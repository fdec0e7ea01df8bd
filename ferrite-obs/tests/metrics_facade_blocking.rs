//! A `metrics` recorder that blocks (on a gate the test closes): the export
//! into it is reported stalled, for at least as long as it has been
//! blocked, while rollups go on and the endpoint answers with fresh figures;
//! once the gate opens, exports resume and the recorder gets the latest
//! totals, the calls made while it was blocked included.

#![cfg(not(loom))]

#[path = "support/http.rs"]
mod http_client;
mod support;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::time::{Duration, Instant};

use ferrite_obs::{CollectorState, Config, FacadeState, probe};
use http_client::{get, sample};
use metrics::{
    Counter, CounterFn, Gauge, GaugeFn, Histogram, Key, KeyName, Metadata, Recorder, SharedString,
    Unit,
};

/// Whether the recorder lets calls through.
static OPEN: Mutex<bool> = Mutex::new(true);
static OPENED: Condvar = Condvar::new();
/// When a call first waited at the closed gate.
static BLOCKED_AT: OnceLock<Instant> = OnceLock::new();

/// Every call into the recorder or its handles waits here while the gate is
/// closed.
fn pass() {
    let mut open = OPEN.lock().unwrap();
    while !*open {
        BLOCKED_AT.get_or_init(Instant::now);
        open = OPENED.wait(open).unwrap();
    }
}

fn set_gate(open: bool) {
    *OPEN.lock().unwrap() = open;
    OPENED.notify_all();
}

/// A counter's value, behind the gate.
#[derive(Default)]
struct Value(AtomicU64);

impl CounterFn for Value {
    fn increment(&self, value: u64) {
        pass();
        self.0.fetch_add(value, Ordering::Relaxed);
    }
    fn absolute(&self, value: u64) {
        pass();
        self.0.fetch_max(value, Ordering::Relaxed);
    }
}

impl GaugeFn for Value {
    fn increment(&self, _: f64) {
        pass();
    }
    fn decrement(&self, _: f64) {
        pass();
    }
    fn set(&self, _: f64) {
        pass();
    }
}

/// Counters by name and `site` label.
type Counters = HashMap<(String, Option<String>), Arc<Value>>;

/// A recorder whose every call passes the gate; it keeps its counters, and
/// no gauge.
#[derive(Clone, Default)]
struct Gated {
    counters: Arc<Mutex<Counters>>,
}

impl Gated {
    fn counter(&self, name: &str, site: &str) -> Option<u64> {
        let counters = self.counters.lock().unwrap();
        let value = counters.get(&(name.to_owned(), Some(site.to_owned())))?;
        Some(value.0.load(Ordering::Relaxed))
    }
}

impl Recorder for Gated {
    fn describe_counter(&self, _: KeyName, _: Option<Unit>, _: SharedString) {
        pass();
    }
    fn describe_gauge(&self, _: KeyName, _: Option<Unit>, _: SharedString) {
        pass();
    }
    fn describe_histogram(&self, _: KeyName, _: Option<Unit>, _: SharedString) {
        pass();
    }
    fn register_counter(&self, key: &Key, _: &Metadata<'_>) -> Counter {
        pass();
        let site = key
            .labels()
            .find(|l| l.key() == "site")
            .map(|l| l.value().to_owned());
        let mut counters = self.counters.lock().unwrap();
        let value = counters.entry((key.name().to_owned(), site)).or_default();
        Counter::from_arc(Arc::clone(value))
    }
    fn register_gauge(&self, _: &Key, _: &Metadata<'_>) -> Gauge {
        pass();
        Gauge::from_arc(Arc::new(Value::default()))
    }
    fn register_histogram(&self, _: &Key, _: &Metadata<'_>) -> Histogram {
        pass();
        Histogram::noop()
    }
}

#[probe(skip_all)]
fn blocking_work(i: u64) -> u64 {
    i + 5
}

fn wait_until(what: &str, done: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !done() {
        assert!(Instant::now() < deadline, "not within 10 s: {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn a_recorder_that_blocks_stalls_its_export_alone_and_exports_resume_when_it_returns() {
    let recorder = Gated::default();
    metrics::set_global_recorder(recorder.clone()).expect("the only recorder of this test binary");
    let handle = ferrite_obs::start(Config {
        enabled: true,
        rollup_interval: Duration::from_millis(20),
        endpoint: Some(SocketAddr::from(([127, 0, 0, 1], 0))),
        ..Config::default()
    })
    .expect("start");
    let addr = handle.endpoint().expect("the endpoint is on");
    let calls = || recorder.counter("ferrite_probe_calls_total", "blocking_work");
    for i in 0..100 {
        std::hint::black_box(blocking_work(i));
    }
    wait_until("the recorder has the 100 calls", || calls() == Some(100));

    set_gate(false);
    wait_until("an export waits at the gate", || BLOCKED_AT.get().is_some());
    let blocked_at = *BLOCKED_AT.get().unwrap();
    // No export can complete from here until the gate opens.
    let exports = handle.status().facade.exports;
    let sequence = handle.snapshot().sequence;
    for i in 0..50 {
        std::hint::black_box(blocking_work(i));
    }

    // Stalled once the export has taken longer than the threshold (1 s at
    // this interval), and for at least as long as it has been blocked.
    let (blocked_for, status) = loop {
        let blocked_for = blocked_at.elapsed();
        let status = handle.status();
        if matches!(status.facade.state, FacadeState::Stalled { .. }) {
            break (blocked_for, status);
        }
        assert!(
            blocked_for < Duration::from_secs(10),
            "not stalled after {blocked_for:?}: {:?}",
            status.facade
        );
        std::thread::sleep(Duration::from_millis(10));
    };
    let FacadeState::Stalled { duration, since } = status.facade.state else {
        unreachable!()
    };
    assert!(
        duration >= blocked_for,
        "stalled {duration:?}, blocked {blocked_for:?}"
    );
    assert!(duration >= Duration::from_secs(1), "{duration:?}");
    assert!(since <= std::time::SystemTime::now());
    assert_eq!(status.facade.exports, exports, "none completed meanwhile");
    assert_eq!(status.facade.panics, 0);

    // Rollups went on, and the endpoint answers with their figures.
    assert_eq!(status.collector.state, CollectorState::Running);
    assert!(status.collector_running);
    assert!(
        status.collector.rollups > sequence,
        "rollups {} after {sequence}",
        status.collector.rollups
    );
    let (code, metrics) = get(addr, "/metrics");
    assert_eq!(code, 200);
    assert_eq!(
        sample(
            &metrics,
            "ferrite_probe_calls_total{site=\"blocking_work\","
        ),
        150.0,
        "the calls made while the recorder was blocked"
    );
    support::promtool_check(&metrics);
    let blocked_for = blocked_at.elapsed();
    let (code, body) = get(addr, "/status");
    assert_eq!(code, 200);
    let served: ferrite_obs::schema::Status =
        serde_json::from_str(&body).expect("/status is the schema's Status");
    match served.facade.expect("the facade's status").state {
        ferrite_obs::schema::FacadeState::Stalled {
            stalled_seconds, ..
        } => assert!(
            stalled_seconds >= blocked_for.as_secs_f64(),
            "{stalled_seconds} s, blocked {blocked_for:?}"
        ),
        other => panic!("/status says the facade is {other:?}"),
    }
    assert_eq!(
        served.collector.expect("the collector's status").state,
        ferrite_obs::schema::CollectorState::Running
    );
    assert_eq!(calls(), Some(100), "nothing reached the recorder meanwhile");

    // Open: the blocked export returns, and the next one brings the latest
    // totals.
    set_gate(true);
    wait_until("the recorder has the 150 calls", || calls() == Some(150));
    wait_until("exports run again", || {
        let facade = handle.status().facade;
        facade.state == FacadeState::Running && facade.exports >= exports + 2
    });
    let status = handle.status();
    assert_eq!(status.facade.panics, 0);
    assert_eq!(status.collector.panics, 0);
    support::shutdown(handle);
}
