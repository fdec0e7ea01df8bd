//! What a call site costs: one small function called bare, under `#[probe]`
//! in each of its modes, and under the instrumentation a user would pick
//! instead (`tracing` spans, a `metrics` histogram, fastrace local spans, a
//! bare clock pair).
//!
//! A self-contained harness: every case runs [`ROUNDS`] rounds of about
//! 40 ms (0.2 to 5 million calls), the cases interleaved round-robin (each round starting one
//! case later) so that noise from the machine hits them all alike; a case's
//! figure is the median of its rounds, in ns per call. The compile-time off
//! switch needs a second build: `benches/run-callsite.sh` runs both, the
//! second with `--features ferrite-obs/off`, and this binary finds out which
//! one it is by whether its `#[probe]` site registers.
//!
//! Targets are printed next to the figures as PASS or MISS; the bench reports
//! and never fails on them.

use std::hint::black_box;
use std::ops::Range;
use std::sync::Barrier;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use fastrace::collector::{Config, Reporter, SpanContext, SpanRecord};
use fastrace::local::LocalSpan;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use tracing::Dispatch;
use tracing_subscriber::filter::LevelFilter;
use tracing_subscriber::layer::SubscriberExt;

use benches::{fnv, work, work_probed};

/// Rounds per case; the figure is their median.
const ROUNDS: usize = 15;
/// Wall time aimed at per case and round; sets each case's calls per round.
const ROUND_TARGET: Duration = Duration::from_millis(40);
const MIN_CALLS: u64 = 200_000;
const MAX_CALLS: u64 = 5_000_000;
/// Calls made, untimed, before each timed round.
const WARMUP: u64 = 10_000;
/// Calls per fastrace root span (a request); the root's cost is included.
/// fastrace keeps at most 10,240 local spans under one parent and silently
/// drops the rest, so one root for a whole round would measure the dropping
/// path.
const CALLS_PER_ROOT: u64 = 200;
/// How often fastrace's collector thread drains the threads' queues. A
/// queue holds 10,240 commands (three per root) and drops what does not fit;
/// at the default of one second it overflows between drains. Draining often also
/// keeps the span buffers in reused memory: collected once per round instead,
/// they are handed back to the kernel and every round pays ~0.06 page faults
/// per call, which more than doubles the figure on this VM.
const FASTRACE_REPORT_INTERVAL: Duration = Duration::from_millis(10);

#[tracing::instrument(level = "debug", skip_all)]
#[inline(never)]
fn work_instrumented(x: u64) -> u64 {
    fnv(x)
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Case {
    Bare,
    Disabled,
    Enabled,
    EnabledRegistry,
    TracingSpan,
    TracingInstrument,
    MetricsHistogram,
    FastraceLocalSpan,
    ClockInstant,
    ClockQuanta,
    TwoThreads,
    TwoThreadsBare,
}

impl Case {
    const ALL: [Case; 12] = [
        Case::Bare,
        Case::Disabled,
        Case::Enabled,
        Case::EnabledRegistry,
        Case::TracingSpan,
        Case::TracingInstrument,
        Case::MetricsHistogram,
        Case::FastraceLocalSpan,
        Case::ClockInstant,
        Case::ClockQuanta,
        Case::TwoThreads,
        Case::TwoThreadsBare,
    ];

    /// With `ferrite-obs/off`, `#[probe]` is the plain function in every
    /// mode; the comparisons do not depend on ferrite-obs.
    const OFF_BUILD: [Case; 4] = [
        Case::Bare,
        Case::Disabled,
        Case::Enabled,
        Case::EnabledRegistry,
    ];

    fn label(self) -> &'static str {
        match self {
            Case::Bare => "bare",
            Case::Disabled => "#[probe], disabled (recording off, no tracer)",
            Case::Enabled => "#[probe], enabled (counters + histogram)",
            Case::EnabledRegistry => "#[probe], enabled + tracing registry",
            Case::TracingSpan => "tracing span + registry",
            Case::TracingInstrument => "#[tracing::instrument] + registry",
            Case::MetricsHistogram => "metrics histogram (prometheus recorder)",
            Case::FastraceLocalSpan => "fastrace local span",
            Case::ClockInstant => "clock pair (Instant)",
            Case::ClockQuanta => "clock pair (quanta/TSC)",
            Case::TwoThreads => "#[probe], enabled, two threads, one site (per thread)",
            Case::TwoThreadsBare => "bare, two threads (per thread; control)",
        }
    }
}

/// What the cases share.
struct Bench {
    tsc: quanta::Clock,
    prometheus: PrometheusHandle,
    /// Calls made at `work_probed` while recording, to check its figures.
    recorded: u64,
    /// Samples recorded into the prometheus histogram.
    histogram_samples: u64,
    /// Spans created with fastrace, roots included.
    fastrace_spans: u64,
}

impl Bench {
    /// Runs `calls` timed calls of `case` (after an untimed warm-up) and
    /// returns the time per call in ns, per thread for the two-thread case.
    fn run(&mut self, case: Case, calls: u64) -> f64 {
        let elapsed = match case {
            Case::Bare => timed(
                calls,
                each(|i| {
                    black_box(work(black_box(i)));
                }),
            ),
            Case::Disabled => {
                ferrite_obs::set_recording(false);
                timed(calls, probed())
            }
            Case::Enabled => {
                self.recorded += WARMUP + calls;
                recording(|| timed(calls, probed()))
            }
            Case::EnabledRegistry => {
                self.recorded += WARMUP + calls;
                recording(|| under_registry(|| timed(calls, probed())))
            }
            Case::TracingSpan => under_registry(|| {
                timed(
                    calls,
                    each(|i| {
                        let _span = tracing::debug_span!("x").entered();
                        black_box(work(black_box(i)));
                    }),
                )
            }),
            Case::TracingInstrument => under_registry(|| {
                timed(
                    calls,
                    each(|i| {
                        black_box(work_instrumented(black_box(i)));
                    }),
                )
            }),
            Case::MetricsHistogram => {
                self.histogram_samples += WARMUP + calls;
                let elapsed = timed(
                    calls,
                    each(|i| {
                        let start = Instant::now();
                        let value = work(black_box(i));
                        metrics::histogram!("bench_latency_seconds").record(start.elapsed());
                        black_box(value);
                    }),
                );
                // Drains the recorded samples into the summary, as a server's
                // upkeep task would; untimed.
                self.prometheus.run_upkeep();
                elapsed
            }
            Case::FastraceLocalSpan => {
                self.fastrace_spans += [WARMUP, calls]
                    .iter()
                    .map(|n| n + n.div_ceil(CALLS_PER_ROOT))
                    .sum::<u64>();
                timed(calls, fastrace_requests)
            }
            Case::ClockInstant => timed(
                calls,
                each(|i| {
                    let start = Instant::now();
                    let value = work(black_box(i));
                    black_box((value, start.elapsed()));
                }),
            ),
            Case::ClockQuanta => {
                let tsc = &self.tsc;
                timed(
                    calls,
                    each(|i| {
                        let start = tsc.raw();
                        let value = work(black_box(i));
                        let end = tsc.raw();
                        black_box((value, tsc.delta_as_nanos(start, end)));
                    }),
                )
            }
            Case::TwoThreads => {
                self.recorded += 2 * (WARMUP + calls);
                recording(|| two_threads(calls, work_probed))
            }
            Case::TwoThreadsBare => two_threads(calls, work),
        };
        ns(elapsed) / calls as f64
    }
}

/// Calls `batch` on a warm-up range, then times it on `calls` more calls.
fn timed(calls: u64, mut batch: impl FnMut(Range<u64>)) -> Duration {
    batch(0..WARMUP);
    let start = Instant::now();
    batch(WARMUP..WARMUP + calls);
    start.elapsed()
}

/// A batch that makes one call per input.
fn each(mut call: impl FnMut(u64)) -> impl FnMut(Range<u64>) {
    move |inputs| {
        for i in inputs {
            call(i);
        }
    }
}

fn probed() -> impl FnMut(Range<u64>) {
    each(|i| {
        black_box(work_probed(black_box(i)));
    })
}

/// Runs `f` with ferrite-obs recording on.
fn recording<T>(f: impl FnOnce() -> T) -> T {
    ferrite_obs::set_recording(true);
    let out = f();
    ferrite_obs::set_recording(false);
    out
}

/// One local span per call, under a root span per [`CALLS_PER_ROOT`] calls
/// (a request); the roots' cost is included.
fn fastrace_requests(inputs: Range<u64>) {
    let mut i = inputs.start;
    while i < inputs.end {
        let root = fastrace::Span::root("request", SpanContext::random());
        let _parent = root.set_local_parent();
        let end = (i + CALLS_PER_ROOT).min(inputs.end);
        for j in i..end {
            let _span = LocalSpan::enter_with_local_parent("x");
            black_box(work(black_box(j)));
        }
        i = end;
    }
}

/// Two threads calling `function` at once; returns each thread's time,
/// averaged.
fn two_threads(calls: u64, function: impl Fn(u64) -> u64 + Sync) -> Duration {
    let start_line = Barrier::new(2);
    let total: Duration = std::thread::scope(|scope| {
        let threads: Vec<_> = (0..2)
            .map(|_| {
                scope.spawn(|| {
                    let mut batch = each(|i| {
                        black_box(function(black_box(i)));
                    });
                    batch(0..WARMUP);
                    start_line.wait();
                    let start = Instant::now();
                    batch(WARMUP..WARMUP + calls);
                    start.elapsed()
                })
            })
            .collect();
        threads
            .into_iter()
            .map(|thread| thread.join().expect("a benchmark thread panicked"))
            .sum()
    });
    total / 2
}

/// A layer that does nothing with the spans it is given: the registry alone
/// never frees closed spans, and this is the cheapest layer a real
/// subscriber could have.
#[derive(Debug)]
struct Quiet;

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for Quiet {}

/// Runs `f` under a fresh `tracing_subscriber::registry()` with a DEBUG
/// filter and [`Quiet`], then puts `tracing` back in its no-subscriber state.
fn under_registry<T>(f: impl FnOnce() -> T) -> T {
    let dispatch = Dispatch::new(
        tracing_subscriber::registry()
            .with(LevelFilter::DEBUG)
            .with(Quiet),
    );
    let out = tracing::dispatcher::with_default(&dispatch, f);
    drop(dispatch);
    // Callsites keep the interest and the global maximum level computed while
    // the subscriber existed: without a reset, a `#[probe]` site measured
    // later as "no subscriber" would still pass tracing's level check. A new
    // dispatcher recomputes both from the live dispatchers; one that wants
    // nothing puts them back to where they were before any subscriber.
    drop(Dispatch::new(
        tracing_subscriber::registry().with(LevelFilter::OFF),
    ));
    assert_eq!(
        LevelFilter::current(),
        LevelFilter::OFF,
        "tracing must be back to no subscriber after a registry round"
    );
    out
}

/// Counts what fastrace reports, to check that its spans were recorded.
#[derive(Debug)]
struct CountingReporter;

static FASTRACE_SPANS: AtomicU64 = AtomicU64::new(0);

impl Reporter for CountingReporter {
    fn report(&mut self, spans: Vec<SpanRecord>) {
        FASTRACE_SPANS.fetch_add(spans.len() as u64, Ordering::Relaxed);
    }
}

#[derive(Debug)]
struct Figures {
    case: Case,
    calls: u64,
    /// ns per call, one per round.
    rounds: Vec<f64>,
}

impl Figures {
    fn median(&self) -> f64 {
        let mut sorted = self.rounds.clone();
        sorted.sort_by(f64::total_cmp);
        let mid = sorted.len() / 2;
        if sorted.len() % 2 == 1 {
            sorted[mid]
        } else {
            f64::midpoint(sorted[mid - 1], sorted[mid])
        }
    }

    fn min(&self) -> f64 {
        self.rounds.iter().copied().fold(f64::INFINITY, f64::min)
    }

    fn max(&self) -> f64 {
        self.rounds.iter().copied().fold(0.0, f64::max)
    }
}

fn ns(d: Duration) -> f64 {
    d.as_secs_f64() * 1e9
}

fn main() {
    let prometheus_recorder = PrometheusBuilder::new().build_recorder();
    let prometheus = prometheus_recorder.handle();
    if metrics::set_global_recorder(prometheus_recorder).is_err() {
        panic!("a metrics recorder was already installed");
    }
    fastrace::set_reporter(
        CountingReporter,
        Config::default().report_interval(FASTRACE_REPORT_INTERVAL),
    );
    let mut bench = Bench {
        tsc: quanta::Clock::new(),
        prometheus,
        recorded: 0,
        histogram_samples: 0,
        fastrace_spans: 0,
    };

    // With `ferrite-obs/off`, `#[probe]` leaves no site to register.
    bench.recorded += 1;
    recording(|| black_box(work_probed(black_box(0))));
    let probes_compiled_in = ferrite_obs::sites()
        .iter()
        .any(|site| site.name == "work_probed");
    if !probes_compiled_in {
        bench.recorded = 0;
    }
    let cases: &[Case] = if probes_compiled_in {
        &Case::ALL
    } else {
        &Case::OFF_BUILD
    };

    // Calls per round: enough for about ROUND_TARGET of each case.
    let mut figures: Vec<Figures> = cases
        .iter()
        .map(|&case| {
            let estimate = bench.run(case, 50_000).max(0.1);
            let calls = (ns(ROUND_TARGET) / estimate) as u64;
            Figures {
                case,
                calls: calls.clamp(MIN_CALLS, MAX_CALLS),
                rounds: Vec::with_capacity(ROUNDS),
            }
        })
        .collect();

    let started = Instant::now();
    for round in 0..ROUNDS {
        for k in 0..figures.len() {
            let index = (round + k) % figures.len();
            let per_call = bench.run(figures[index].case, figures[index].calls);
            figures[index].rounds.push(per_call);
        }
    }
    let took = started.elapsed();

    print_table(probes_compiled_in, &figures, took);
    if probes_compiled_in {
        print_targets(&figures);
        print_checks(&bench);
    } else {
        print_off_targets(&figures);
    }
}

fn figure(figures: &[Figures], case: Case) -> f64 {
    figures
        .iter()
        .find(|f| f.case == case)
        .map(Figures::median)
        .expect("every case of the build is measured")
}

fn print_table(probes_compiled_in: bool, figures: &[Figures], took: Duration) {
    let build = if probes_compiled_in {
        "default build (probes compiled in)"
    } else {
        "built with ferrite-obs/off (#[probe] compiled away)"
    };
    let bare = figure(figures, Case::Bare);
    println!();
    println!("## Call sites: {build}");
    println!();
    println!(
        "{ROUNDS} rounds per case, interleaved; median of the rounds; {:.0} s in all.",
        took.as_secs_f64()
    );
    println!();
    println!(
        "| case | ns/call | x bare | over bare (ns) | rounds min-max (ns/call) | calls/round |"
    );
    println!("|---|---:|---:|---:|---:|---:|");
    for f in figures {
        let median = f.median();
        println!(
            "| {} | {:.1} | {:.2} | {:+.1} | {:.1}-{:.1} | {} |",
            f.case.label(),
            median,
            median / bare,
            median - bare,
            f.min(),
            f.max(),
            f.calls
        );
    }
    println!();
}

fn verdict(pass: bool) -> &'static str {
    if pass { "PASS" } else { "MISS" }
}

fn print_targets(figures: &[Figures]) {
    let bare = figure(figures, Case::Bare);
    let over = |case| figure(figures, case) - bare;
    let disabled = over(Case::Disabled);
    let enabled = figure(figures, Case::Enabled);
    let quanta_pair = figure(figures, Case::ClockQuanta);
    let enabled_over = over(Case::Enabled);
    let span_over = over(Case::TracingSpan);
    let metrics_over = over(Case::MetricsHistogram);
    let threads_ratio = figure(figures, Case::TwoThreads) / enabled;
    let bare_threads_ratio = figure(figures, Case::TwoThreadsBare) / bare;

    println!("| target | figure | result |");
    println!("|---|---|---|");
    println!(
        "| disabled <= 1 ns over bare | {disabled:+.1} ns | {} |",
        verdict(disabled <= 1.0)
    );
    println!(
        "| enabled <= clock pair (quanta/TSC) + 10 ns | {enabled:.1} ns vs {:.1} ns | {} |",
        quanta_pair + 10.0,
        verdict(enabled <= quanta_pair + 10.0)
    );
    println!(
        "| enabled >= 3x cheaper than tracing span + registry (ns over bare) | {enabled_over:.1} vs {span_over:.1} ns: {:.1}x | {} |",
        span_over / enabled_over,
        verdict(span_over >= 3.0 * enabled_over)
    );
    println!(
        "| enabled cheaper than metrics histogram (ns over bare) | {enabled_over:.1} vs {metrics_over:.1} ns | {} |",
        verdict(enabled_over < metrics_over)
    );
    println!(
        "| two threads, one site <= 1.2x one thread | {threads_ratio:.2}x (bare on two threads: {bare_threads_ratio:.2}x) | {} |",
        verdict(threads_ratio <= 1.2)
    );
    println!();
}

fn print_off_targets(figures: &[Figures]) {
    let bare = figure(figures, Case::Bare);
    println!("| target | figure | result |");
    println!("|---|---|---|");
    for case in [Case::Disabled, Case::Enabled, Case::EnabledRegistry] {
        let median = figure(figures, case);
        let over = median - bare;
        println!(
            "| off switch: {} <= 1 ns over bare | {over:+.1} ns ({:.2}x bare) | {} |",
            case.label(),
            median / bare,
            verdict(over <= 1.0)
        );
    }
    println!();
}

/// Checks that the instrumented cases really recorded what they claim to.
fn print_checks(bench: &Bench) {
    let calls = ferrite_obs::sites()
        .into_iter()
        .find(|site| site.name == "work_probed")
        .map_or(0, |site| site.calls);
    println!(
        "check: ferrite-obs counted {calls} calls at work_probed, {} made while recording: {}",
        bench.recorded,
        if calls == bench.recorded {
            "ok"
        } else {
            "WRONG"
        }
    );

    let rendered = bench.prometheus.render();
    let samples = rendered
        .lines()
        .find_map(|line| line.strip_prefix("bench_latency_seconds_count "))
        .unwrap_or("none");
    println!(
        "check: prometheus bench_latency_seconds_count {samples}, {} recorded",
        bench.histogram_samples
    );

    fastrace::flush();
    println!(
        "check: fastrace reported {} spans, {} created (one root per {CALLS_PER_ROOT} local spans)",
        FASTRACE_SPANS.load(Ordering::Relaxed),
        bench.fastrace_spans
    );

    if let Ok(status) = std::fs::read_to_string("/proc/self/status")
        && let Some(peak) = status.lines().find(|line| line.starts_with("VmHWM"))
    {
        println!(
            "check: peak resident memory {}",
            peak.trim_start_matches("VmHWM:").trim()
        );
    }
}
