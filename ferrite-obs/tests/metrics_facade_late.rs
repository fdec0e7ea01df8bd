//! The `metrics` facade with a recorder installed only after the runtime has
//! started (and exported to no recorder): the collector registers its
//! metrics again with the recorder it now finds, descriptions included, and
//! the recorder gets every call, those made before it was installed too
//! (counters carry totals).

#![cfg(not(loom))]

mod support;

use std::time::{Duration, Instant};

use ferrite_obs::{Config, probe};
use metrics_exporter_prometheus::PrometheusBuilder;

#[probe(skip_all)]
fn late_work(i: u64) -> u64 {
    i + 1
}

#[test]
fn a_recorder_installed_after_start_gets_the_figures() {
    let handle = ferrite_obs::start(Config {
        enabled: true,
        rollup_interval: Duration::from_millis(20),
        endpoint: None,
        ..Config::default()
    })
    .expect("start");
    for i in 0..100 {
        late_work(i);
    }
    // Rollups that saw the calls have exported them to no recorder.
    let deadline = Instant::now() + Duration::from_secs(10);
    let seen = loop {
        let snapshot = handle.snapshot();
        if snapshot
            .site("late_work")
            .is_some_and(|s| s.total.calls == 100)
        {
            break snapshot.sequence;
        }
        assert!(Instant::now() < deadline, "no rollup saw the 100 calls");
        std::thread::sleep(Duration::from_millis(5));
    };
    while handle.snapshot().sequence < seen + 2 {
        assert!(Instant::now() < deadline, "rollups stopped");
        std::thread::sleep(Duration::from_millis(5));
    }

    let recorder = PrometheusBuilder::new().build_recorder();
    let exporter = recorder.handle();
    metrics::set_global_recorder(recorder).expect("the only recorder of this test binary");
    for i in 0..100 {
        late_work(i);
    }
    let wanted = "ferrite_probe_calls_total{site=\"late_work\",module=\"metrics_facade_late\"} 200";
    let deadline = Instant::now() + Duration::from_secs(10);
    let text = loop {
        let text = exporter.render();
        if text.lines().any(|l| l == wanted) {
            break text;
        }
        assert!(
            Instant::now() < deadline,
            "no `{wanted}` from the recorder installed late:\n{text}"
        );
        std::thread::sleep(Duration::from_millis(10));
    };
    assert!(
        text.lines()
            .any(|l| l == "# HELP ferrite_probe_calls_total Calls completed."),
        "the metrics are described to the new recorder:\n{text}"
    );
    support::promtool_check(&text);

    support::shutdown(handle);
}
