//! Call-site figures are exact for known call sequences: sync and async,
//! errors, cancellation, panics, commands, several threads at once.
//!
//! Every test owns its instrumented functions, so tests running in parallel
//! never share a site; recording is switched on and never off.

#![cfg(not(loom))]

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll, Wake, Waker};
use std::time::Duration;

use ferrite_obs::{SiteStats, probe};

fn site(name: &str) -> SiteStats {
    ferrite_obs::sites()
        .into_iter()
        .find(|s| s.name == name)
        .unwrap_or_else(|| panic!("site {name} never recorded"))
}

/// Polls a future to completion on this thread, counting polls.
fn block_on<F: Future>(future: F) -> F::Output {
    struct Noop;
    impl Wake for Noop {
        fn wake(self: Arc<Self>) {}
    }
    let waker = Waker::from(Arc::new(Noop));
    let mut cx = Context::from_waker(&waker);
    let mut future = std::pin::pin!(future);
    loop {
        if let Poll::Ready(out) = future.as_mut().poll(&mut cx) {
            return out;
        }
    }
}

/// Pending `n` times, then ready.
struct YieldN(u32);
impl Future for YieldN {
    type Output = ();
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.0 == 0 {
            return Poll::Ready(());
        }
        self.0 -= 1;
        cx.waker().wake_by_ref();
        Poll::Pending
    }
}

#[test]
fn bodies_that_mutate_their_arguments_compile() {
    #[probe(skip_all)]
    fn append(out: &mut Vec<u64>, value: u64) {
        out.push(value);
    }

    // Compiling is most of the test: both paths move the body closure.
    // (Recording stays on: other tests of this binary run meanwhile.)
    ferrite_obs::set_recording(true);
    let mut out = Vec::new();
    append(&mut out, 1);
    append(&mut out, 2);
    assert_eq!(out, [1, 2]);
    assert_eq!(site("append").calls, 2);
}

#[test]
fn sync_calls_and_errors_are_exact() {
    ferrite_obs::set_recording(true);

    #[probe(err)]
    fn parse_digit(c: char) -> Result<u32, String> {
        c.to_digit(10).ok_or_else(|| format!("{c} is not a digit"))
    }

    let input = "12a3b4";
    for c in input.chars() {
        let _ = parse_digit(c);
    }
    let s = site("parse_digit");
    assert_eq!(s.calls, 6);
    assert_eq!(s.started, 6);
    assert_eq!(s.errors, 2);
    assert_eq!(s.in_flight(), 0);
    assert_eq!(s.latency.count(), 6);
    assert!(!s.is_async && !s.is_command);
    assert_eq!(s.module, module_path!());
}

#[test]
fn histogram_holds_the_known_latencies() {
    ferrite_obs::set_recording(true);

    #[probe(skip_all)]
    fn sleep_ms(ms: u64) {
        std::thread::sleep(Duration::from_millis(ms));
    }

    for ms in [2, 2, 2, 20] {
        sleep_ms(ms);
    }
    let s = site("sleep_ms");
    assert_eq!(s.latency.count(), 4);
    let p50 = s.quantile(0.5).unwrap();
    let max = s.latency.max().unwrap();
    // Sleeps last at least what was asked; the scheduler may add a little.
    assert!((2_000_000..15_000_000).contains(&p50), "p50 {p50} ns");
    assert!((20_000_000..120_000_000).contains(&max), "max {max} ns");
    assert!(s.latency.sum() >= 26_000_000);
}

#[test]
fn async_calls_count_polls_busy_time_and_total_time() {
    ferrite_obs::set_recording(true);

    #[probe]
    async fn yields_then_works(yields: u32) -> u32 {
        YieldN(yields).await;
        let mut spin = 0u32;
        for i in 0..10_000 {
            spin = std::hint::black_box(spin.wrapping_add(i));
        }
        spin
    }

    for _ in 0..5 {
        block_on(yields_then_works(3));
    }
    let s = site("yields_then_works");
    assert!(s.is_async);
    assert_eq!(s.calls, 5);
    assert_eq!(
        s.polls,
        5 * 4,
        "three Pending polls and one Ready poll per call"
    );
    assert!(s.busy_ns > 0);
    assert!(
        s.busy_ns <= s.latency.sum(),
        "busy time is within total time"
    );
    assert_eq!(s.in_flight(), 0);
}

#[test]
fn dropped_futures_count_as_cancelled_and_panics_as_panicked() {
    ferrite_obs::set_recording(true);

    #[probe]
    async fn never_finishes() {
        std::future::pending::<()>().await;
    }

    #[probe]
    fn boom(fail: bool) -> u8 {
        assert!(!fail, "boom");
        1
    }

    {
        let waker = Waker::noop();
        let mut cx = Context::from_waker(waker);
        let mut fut = Box::pin(never_finishes());
        assert!(fut.as_mut().poll(&mut cx).is_pending());
        assert_eq!(site("never_finishes").in_flight(), 1);
    }
    let s = site("never_finishes");
    assert_eq!(
        (s.started, s.calls, s.cancelled, s.in_flight()),
        (1, 0, 1, 0)
    );

    assert_eq!(boom(false), 1);
    assert!(std::panic::catch_unwind(|| boom(true)).is_err());
    let s = site("boom");
    assert_eq!((s.started, s.calls, s.panicked), (2, 1, 1));
}

#[test]
fn many_threads_at_once_lose_nothing() {
    ferrite_obs::set_recording(true);

    #[probe(err)]
    fn maybe_fail(i: u64) -> Result<u64, u64> {
        if i.is_multiple_of(10) { Err(i) } else { Ok(i) }
    }

    #[probe]
    async fn async_add(a: u64, b: u64) -> u64 {
        YieldN(1).await;
        a + b
    }

    const THREADS: u64 = 8;
    const CALLS: u64 = 5_000;
    let threads: Vec<_> = (0..THREADS)
        .map(|_| {
            std::thread::spawn(|| {
                for i in 0..CALLS {
                    let _ = maybe_fail(i);
                    block_on(async_add(i, 1));
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let s = site("maybe_fail");
    assert_eq!(s.calls, THREADS * CALLS);
    assert_eq!(s.errors, THREADS * CALLS / 10);
    assert_eq!(s.latency.count(), THREADS * CALLS);
    let s = site("async_add");
    assert_eq!(s.calls, THREADS * CALLS);
    assert_eq!(s.polls, THREADS * CALLS * 2);
}

#[test]
fn futures_moving_between_runtime_threads_are_counted_once() {
    ferrite_obs::set_recording(true);

    #[probe]
    async fn hops(i: u64) -> u64 {
        // Two yields are two guaranteed pendings; the sleep may or may not
        // pend (its deadline can pass before its first poll) but bounds the
        // latency from below.
        tokio::task::yield_now().await;
        tokio::task::yield_now().await;
        tokio::time::sleep(Duration::from_micros(50)).await;
        i
    }

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .enable_time()
        .build()
        .unwrap();
    let total: u64 = runtime.block_on(async {
        let tasks: Vec<_> = (0..400).map(|i| tokio::spawn(hops(i))).collect();
        let mut total = 0;
        for t in tasks {
            total += t.await.unwrap();
        }
        total
    });
    assert_eq!(total, (0..400).sum::<u64>());
    let s = site("hops");
    assert_eq!((s.started, s.calls, s.in_flight()), (400, 400, 0));
    assert!(
        s.polls >= 3 * 400,
        "at least three polls per call, got {}",
        s.polls
    );
    assert!(
        s.latency.quantile(0.5).unwrap() >= 50_000,
        "each call sleeps 50 µs"
    );
}

#[test]
fn commands_get_unique_ids_visible_to_nested_probes() {
    ferrite_obs::set_recording(true);

    static SEEN_INNER: AtomicU64 = AtomicU64::new(0);

    #[probe]
    fn inner() -> u64 {
        ferrite_obs::current_command().map_or(0, |c| c.get())
    }

    #[probe(command, name = "SET")]
    fn set_cmd() -> u64 {
        let mine = ferrite_obs::current_command()
            .expect("a command is current")
            .get();
        assert_eq!(inner(), mine, "nested probes see the command");
        SEEN_INNER.store(mine, Ordering::Relaxed);
        mine
    }

    #[probe(command, name = "GET_ASYNC")]
    async fn get_cmd() -> u64 {
        let before = ferrite_obs::current_command().unwrap().get();
        YieldN(2).await;
        assert_eq!(
            ferrite_obs::current_command().unwrap().get(),
            before,
            "same id in every poll"
        );
        before
    }

    assert_eq!(ferrite_obs::current_command(), None);
    let a = set_cmd();
    let b = set_cmd();
    assert_ne!(a, b, "every call is a new command");
    assert_eq!(
        ferrite_obs::current_command(),
        None,
        "restored after the call"
    );

    let c = block_on(get_cmd());
    let d = block_on(get_cmd());
    assert_ne!(c, d);
    assert_eq!(
        ferrite_obs::current_command(),
        None,
        "restored after each poll"
    );

    let commands: Vec<_> = ferrite_obs::commands()
        .into_iter()
        .map(|s| (s.name, s.calls))
        .collect();
    assert!(commands.contains(&("SET", 2)), "{commands:?}");
    assert!(commands.contains(&("GET_ASYNC", 2)), "{commands:?}");
    assert!(!commands.iter().any(|(name, _)| *name == "inner"));
}

#[test]
fn methods_generics_and_impl_trait_are_instrumented() {
    ferrite_obs::set_recording(true);

    #[derive(Debug)]
    struct Store(Vec<u32>);

    impl Store {
        #[probe(name = "store_sum", skip(self))]
        fn sum(&self) -> u32 {
            self.0.iter().sum()
        }

        #[probe(skip_all)]
        fn push<T: Into<u32>>(&mut self, value: T) -> &mut Self {
            self.0.push(value.into());
            self
        }

        #[probe]
        async fn count(&self) -> usize {
            self.0.len()
        }
    }

    #[probe]
    fn evens(n: u32) -> impl Iterator<Item = u32> {
        (0..n).filter(|x| x % 2 == 0)
    }

    let mut store = Store(vec![]);
    store.push(1u8).push(2u16);
    assert_eq!(store.sum(), 3);
    assert_eq!(block_on(store.count()), 2);
    assert_eq!(evens(10).count(), 5);
    assert_eq!(site("push").calls, 2, "one site for every instantiation");
    assert_eq!(site("store_sum").calls, 1);
    assert_eq!(site("count").calls, 1);
    assert_eq!(site("evens").calls, 1);
}
