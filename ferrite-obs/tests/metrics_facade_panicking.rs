//! A `metrics` recorder that panics at every call: the facade export catches
//! the first panic, calls the recorder no more and says so in the status,
//! the panic hook in force sees that one panic only, and the collector keeps
//! rolling up and serving every figure over its endpoint.

#![cfg(not(loom))]

#[path = "support/http.rs"]
mod http_client;
mod support;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use ferrite_obs::{CollectorState, Config, FacadeState, Stage, probe};
use http_client::{get, sample};
use metrics::{Counter, Gauge, Histogram, Key, KeyName, Metadata, Recorder, SharedString, Unit};

/// Calls the recorder received.
static CALLS: AtomicU64 = AtomicU64::new(0);
/// Panics of the facade's thread that reached the hook the test installed.
static HOOKED: AtomicU64 = AtomicU64::new(0);

const MESSAGE: &str = "the test recorder panics at every call";

struct Panicking;

impl Panicking {
    fn call(&self) -> ! {
        CALLS.fetch_add(1, Ordering::Relaxed);
        panic!("{MESSAGE}");
    }
}

impl Recorder for Panicking {
    fn describe_counter(&self, _: KeyName, _: Option<Unit>, _: SharedString) {
        self.call()
    }
    fn describe_gauge(&self, _: KeyName, _: Option<Unit>, _: SharedString) {
        self.call()
    }
    fn describe_histogram(&self, _: KeyName, _: Option<Unit>, _: SharedString) {
        self.call()
    }
    fn register_counter(&self, _: &Key, _: &Metadata<'_>) -> Counter {
        self.call()
    }
    fn register_gauge(&self, _: &Key, _: &Metadata<'_>) -> Gauge {
        self.call()
    }
    fn register_histogram(&self, _: &Key, _: &Metadata<'_>) -> Histogram {
        self.call()
    }
}

#[probe(skip_all)]
fn panicking_work(i: u64) -> u64 {
    i * 3
}

fn wait_until(what: &str, done: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !done() {
        assert!(Instant::now() < deadline, "not within 10 s: {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn a_recorder_that_panics_is_called_once_and_everything_else_keeps_running() {
    // The host's hook, which ferrite-obs wraps at start.
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        if std::thread::current().name() == Some("ferrite-metrics") {
            HOOKED.fetch_add(1, Ordering::Relaxed);
        }
        default(info);
    }));
    metrics::set_global_recorder(Panicking).expect("the only recorder of this test binary");
    let handle = ferrite_obs::start(Config {
        enabled: true,
        rollup_interval: Duration::from_millis(20),
        endpoint: Some(SocketAddr::from(([127, 0, 0, 1], 0))),
        ..Config::default()
    })
    .expect("start");
    let addr = handle.endpoint().expect("the endpoint is on");
    for i in 0..300 {
        std::hint::black_box(panicking_work(i));
    }

    wait_until("the facade export has failed", || {
        handle.status().facade.state == FacadeState::Failed
    });
    let failed_at = handle.snapshot().sequence;
    wait_until("ten more rollups", || {
        handle.snapshot().sequence >= failed_at + 10
    });

    let status = handle.status();
    let facade = &status.facade;
    assert_eq!(facade.state, FacadeState::Failed);
    assert_eq!(facade.panics, 1, "one panic, then the recorder is let be");
    assert_eq!(facade.exports, 0, "no export completed");
    assert_eq!(facade.last_export, None);
    assert_eq!(
        CALLS.load(Ordering::Relaxed),
        1,
        "the recorder was called once"
    );
    assert_eq!(HOOKED.load(Ordering::Relaxed), 1, "the hook saw it once");
    let panic = facade.last_panic.as_ref().expect("the recorder's panic");
    assert_eq!(panic.stage, Stage::Facade);
    let location = format!("{MESSAGE} (at {}:", file!());
    assert!(panic.message.starts_with(&location), "{}", panic.message);

    // The collector itself never panicked, and runs on.
    let collector = &status.collector;
    assert_eq!(collector.state, CollectorState::Running);
    assert!(status.collector_running && status.recording && status.endpoint_listening);
    assert_eq!((collector.panics, &collector.last_panic), (0, &None));
    assert!(collector.rollups >= failed_at + 10, "{collector:?}");

    // Every figure is still served, with the calls made.
    let (code, metrics) = get(addr, "/metrics");
    assert_eq!(code, 200);
    assert_eq!(
        sample(
            &metrics,
            "ferrite_probe_calls_total{site=\"panicking_work\","
        ),
        300.0
    );
    support::promtool_check(&metrics);
    let (code, body) = get(addr, "/snapshot");
    assert_eq!(code, 200);
    let snapshot: ferrite_obs::schema::Snapshot =
        serde_json::from_str(&body).expect("/snapshot is the schema's Snapshot");
    assert!(snapshot.sequence >= failed_at + 10);
    let site = snapshot.sites.iter().find(|s| s.name == "panicking_work");
    assert_eq!(site.map(|s| s.total.calls), Some(300));

    let (code, body) = get(addr, "/status");
    assert_eq!(code, 200);
    let served: ferrite_obs::schema::Status =
        serde_json::from_str(&body).expect("/status is the schema's Status");
    let facade = served.facade.expect("the facade's status");
    assert_eq!(facade.state, ferrite_obs::schema::FacadeState::Failed);
    assert_eq!((facade.panics, facade.exports), (1, 0));
    let served_panic = facade.last_panic.expect("the panic");
    assert_eq!(served_panic.stage, "facade");
    assert_eq!(served_panic.message, panic.message);
    let collector = served.collector.expect("the collector's status");
    assert_eq!(
        collector.state,
        ferrite_obs::schema::CollectorState::Running
    );
    assert_eq!(collector.panics, 0);

    assert_eq!(CALLS.load(Ordering::Relaxed), 1, "still once");
    support::shutdown(handle);
}
