//! The `metrics` facade: with metrics-exporter-prometheus installed as the
//! recorder (as a server exporting through it would), ferrite-obs's figures
//! come out of the exporter with the calls made, the interval's latency as a
//! gauge per quantile, and promtool accepts them.

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
    let wanted = "ferrite_probe_calls_total{site=\"facade_work\",module=\"metrics_facade\"} 400";
    let deadline = Instant::now() + Duration::from_secs(10);
    let text = loop {
        let text = exporter.render();
        if text.lines().any(|l| l == wanted) {
            break text;
        }
        assert!(Instant::now() < deadline, "no `{wanted}` in:\n{text}");
        std::thread::sleep(Duration::from_millis(10));
    };
    assert!(
        text.lines().any(|l| l
            == "ferrite_probe_errors_total{site=\"facade_work\",module=\"metrics_facade\"} 100"),
        "{text}"
    );

    // The latency of each interval's calls, one gauge per quantile: calls
    // keep coming until an interval with calls has been exported.
    let quantile = |text: &str, q: &str| -> Option<f64> {
        let prefix = format!(
            "ferrite_probe_interval_duration_seconds{{site=\"facade_work\",module=\"metrics_facade\",stat=\"{q}\"}} "
        );
        text.lines()
            .find_map(|l| l.strip_prefix(prefix.as_str()))
            .and_then(|v| v.parse::<f64>().ok())
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    let text = loop {
        for i in 0..100 {
            let _ = facade_work(i);
        }
        let text = exporter.render();
        if quantile(&text, "max").is_some_and(f64::is_finite) {
            break text;
        }
        assert!(
            Instant::now() < deadline,
            "no finite latency gauge in:\n{text}"
        );
        std::thread::sleep(Duration::from_millis(5));
    };
    let values: Vec<f64> = ["p50", "p90", "p99", "p999", "max"]
        .iter()
        .map(|q| quantile(&text, q).unwrap_or_else(|| panic!("quantile {q} in:\n{text}")))
        .collect();
    assert!(
        values.windows(2).all(|w| w[0] <= w[1]),
        "quantiles grow with q: {values:?}"
    );
    // A call that returns its argument takes nanoseconds; anything near a
    // second would be a unit error.
    assert!(
        values[0] > 0.0 && values[4] < 0.1,
        "latency gauges in seconds: {values:?}"
    );
    assert!(
        !text.contains("ferrite_probe_duration_seconds_count"),
        "no replayed facade histogram:\n{text}"
    );

    support::promtool_check(&text);

    support::shutdown(handle);
}
