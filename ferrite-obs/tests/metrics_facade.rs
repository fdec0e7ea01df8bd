//! The `metrics` facade: with metrics-exporter-prometheus installed as the
//! recorder (as a server exporting through it would), ferrite-obs's figures
//! come out of the exporter with the calls made, and promtool accepts them.

#![cfg(not(loom))]

mod support;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use ferrite_obs::{Config, probe};
use metrics_exporter_prometheus::PrometheusBuilder;

#[probe(skip_all, err)]
fn facade_work(i: u64) -> Result<u64, u64> {
    if i.is_multiple_of(4) { Err(i) } else { Ok(i) }
}

#[test]
fn figures_reach_an_installed_prometheus_recorder() {
    let recorder = PrometheusBuilder::new().build_recorder();
    let exporter = recorder.handle();
    metrics::set_global_recorder(recorder).expect("the only recorder of this test binary");

    let handle = ferrite_obs::start(Config {
        enabled: true,
        rollup_interval: Duration::from_millis(20),
        endpoint: Some(SocketAddr::from(([127, 0, 0, 1], 0))),
        ..Config::default()
    })
    .expect("start");
    for i in 0..400 {
        let _ = facade_work(i);
    }
    // A rollup's export sets the counters, then records the histogram: a
    // render may fall in between, so wait for both.
    let wanted = "ferrite_probe_calls_total{site=\"facade_work\",module=\"metrics_facade\"} 400";
    let histogram_count = |text: &str| {
        text.lines()
            .find(|l| l.starts_with("ferrite_probe_duration_seconds_count{site=\"facade_work\""))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse::<u64>().ok())
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    let text = loop {
        let text = exporter.render();
        if text.lines().any(|l| l == wanted) && histogram_count(&text) >= Some(400) {
            break text;
        }
        assert!(
            Instant::now() < deadline,
            "no `{wanted}` and 400 histogram samples in:\n{text}"
        );
        std::thread::sleep(Duration::from_millis(10));
    };
    assert!(
        text.lines().any(|l| l
            == "ferrite_probe_errors_total{site=\"facade_work\",module=\"metrics_facade\"} 100"),
        "{text}"
    );
    assert_eq!(
        histogram_count(&text),
        Some(400),
        "every call reached the recorder's histogram, once:\n{text}"
    );

    support::promtool_check(&text);

    tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap()
        .block_on(handle.shutdown());
}
