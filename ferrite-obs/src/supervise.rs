//! Supervision of the runtime's stages. Each run of a rollup, of an
//! endpoint answer and of a facade export is timed, and a panic in it is
//! caught, counted and kept with its message: it never reaches the host,
//! and the stage runs again at its next turn (the facade export excepted,
//! see [`FacadeState::Failed`]). What [`Status`](crate::Status) says of
//! the collector and the facade is computed here, from these records, when
//! it is asked for.
//!
//! Protocol. A [`StageRecord`] is written by the one thread that runs its
//! stage (runs of one stage never overlap: rollups and endpoint answers run
//! on the collector's thread, facade exports on theirs) and read by any
//! thread that asks for the status. Its figures are independent atomics,
//! each meaningful on its own: nothing is published through them, so every
//! access is `Relaxed`, and a status may see a run counted before its end
//! time is (or the reverse), never a torn value. The last panic's message is
//! behind a mutex taken only by the stage's thread after a panic and by
//! status readers, never by a call site.
//!
//! Panics and the panic hook. The hook in force runs for every panic,
//! caught or not (std's prints the message to stderr). So that a stage that
//! panics at every rollup does not print a backtrace every second,
//! [`install_panic_hook`] wraps that hook, once per process: a panic on a
//! thread while it runs a watched stage is noted (message and location) for
//! the stage, and goes on to the wrapped hook only if it is the stage's
//! first; any other panic goes on to it unchanged. A hook the host sets
//! later replaces this one: every caught panic is then printed by it, and
//! still counted. Built with `panic = "abort"`, nothing can be caught: a
//! panic anywhere ends the process, as it would without ferrite-obs.

use std::any::Any;
use std::cell::Cell;
use std::panic::{AssertUnwindSafe, PanicHookInfo, UnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering::Relaxed};
use std::sync::{Mutex, Once};
use std::time::{Duration, Instant, SystemTime};

use crate::status::{
    CaughtPanic, CollectorState, CollectorStatus, FacadeState, FacadeStatus, Stage,
};

/// How long a rollup may be overdue, or an export take, before the status
/// calls it stalled: twice the rollup interval, and at least one second.
pub(crate) fn stall_threshold(rollup_interval: Duration) -> Duration {
    rollup_interval
        .saturating_mul(2)
        .max(Duration::from_secs(1))
}

/// Instants as nanoseconds since the runtime started, on the monotonic
/// clock (never 0, which the records use for "none"), and their wall-clock
/// times.
#[derive(Debug)]
struct Clock {
    started: Instant,
    wall: SystemTime,
}

impl Clock {
    fn new() -> Clock {
        Clock {
            started: Instant::now(),
            wall: SystemTime::now(),
        }
    }

    fn now(&self) -> u64 {
        u64::try_from(self.started.elapsed().as_nanos())
            .unwrap_or(u64::MAX)
            .max(1)
    }

    fn wall(&self, at: u64) -> SystemTime {
        self.wall + Duration::from_nanos(at)
    }
}

/// One stage's runs (see the protocol above).
#[derive(Debug, Default)]
struct StageRecord {
    /// Runs that returned.
    runs: AtomicU64,
    /// Runs that panicked.
    panics: AtomicU64,
    /// When the last run returned; 0 before the first.
    last_done: AtomicU64,
    /// When the run in progress began; 0 between runs.
    busy_since: AtomicU64,
    /// When the last panic was caught; 0 before the first.
    last_panicked: AtomicU64,
    last_panic: Mutex<Option<CaughtPanic>>,
}

impl StageRecord {
    fn last_panic(&self) -> Option<CaughtPanic> {
        self.last_panic
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

/// A run that panicked; the panic is in the stage's record.
#[derive(Debug)]
pub(crate) struct Panicked;

/// The collector's thread has not run yet.
const STARTING: u8 = 0;
/// It runs.
const RUNNING: u8 = 1;
/// It ended on the handle's request.
const STOPPED: u8 = 2;
/// It ended by a panic no stage caught.
const EXITED: u8 = 3;

/// Everything the status says of the collector's and the facade's threads,
/// the endpoint's listener and the kernel view's programs, as those threads
/// keep it.
#[derive(Debug)]
pub(crate) struct Health {
    clock: Clock,
    rollup: StageRecord,
    endpoint: StageRecord,
    facade: StageRecord,
    thread: StageRecord,
    /// The collector thread's life: `STARTING` to `RUNNING`, then `STOPPED`
    /// or `EXITED`.
    collector: AtomicU8,
    /// When the collector's thread began running.
    collector_since: AtomicU64,
    /// Set after the facade's recorder panicked: it is not called again.
    facade_failed: AtomicBool,
    /// Whether the endpoint's listener is open.
    listening: AtomicBool,
    /// Connections the endpoint closed to make room, and those it refused
    /// (see `endpoint`).
    evicted: AtomicU64,
    refused: AtomicU64,
    /// Whether the kernel view's programs are attached.
    kernel_attached: AtomicBool,
}

impl Health {
    pub(crate) fn new(kernel_attached: bool) -> Health {
        Health {
            clock: Clock::new(),
            rollup: StageRecord::default(),
            endpoint: StageRecord::default(),
            facade: StageRecord::default(),
            thread: StageRecord::default(),
            collector: AtomicU8::new(STARTING),
            collector_since: AtomicU64::new(0),
            facade_failed: AtomicBool::new(false),
            listening: AtomicBool::new(false),
            evicted: AtomicU64::new(0),
            refused: AtomicU64::new(0),
            kernel_attached: AtomicBool::new(kernel_attached),
        }
    }

    fn record(&self, stage: Stage) -> &StageRecord {
        match stage {
            Stage::Rollup => &self.rollup,
            Stage::Endpoint => &self.endpoint,
            Stage::Facade => &self.facade,
            Stage::Thread => &self.thread,
        }
    }

    /// Runs `f` as a run of `stage`: timed, and a panic in it caught and
    /// recorded. `f` must leave nothing half-made that a later run relies on,
    /// or its caller must repair that state after a `Panicked`: hence
    /// `UnwindSafe`, which each caller asserts with its reason.
    pub(crate) fn run<R>(
        &self,
        stage: Stage,
        f: impl FnOnce() -> R + UnwindSafe,
    ) -> Result<R, Panicked> {
        let record = self.record(stage);
        let print = record.panics.load(Relaxed) == 0;
        let outer = WATCHED.replace(Some(print));
        NOTED.set(None);
        record.busy_since.store(self.clock.now(), Relaxed);
        let result = std::panic::catch_unwind(f);
        record.busy_since.store(0, Relaxed);
        WATCHED.set(outer);
        let now = self.clock.now();
        match result {
            Ok(value) => {
                record.runs.fetch_add(1, Relaxed);
                record.last_done.store(now, Relaxed);
                Ok(value)
            }
            Err(payload) => {
                let message = message(&*payload, NOTED.take());
                *record.last_panic.lock().unwrap_or_else(|e| e.into_inner()) = Some(CaughtPanic {
                    stage,
                    message,
                    at: self.clock.wall(now),
                });
                record.panics.fetch_add(1, Relaxed);
                record.last_panicked.store(now, Relaxed);
                drop_payload(payload);
                Err(Panicked)
            }
        }
    }

    /// Called by the collector's thread when it starts running.
    pub(crate) fn collector_started(&self) {
        self.collector_since.store(self.clock.now(), Relaxed);
        self.collector.store(RUNNING, Relaxed);
    }

    /// Called by the collector's thread as it ends: `requested` when the
    /// handle stopped it. The kernel view (which it owned) is gone by then;
    /// the endpoint, on its own thread, is not.
    pub(crate) fn collector_ended(&self, requested: bool) {
        self.kernel_attached.store(false, Relaxed);
        self.collector
            .store(if requested { STOPPED } else { EXITED }, Relaxed);
    }

    pub(crate) fn evicted_one(&self) {
        self.evicted.fetch_add(1, Relaxed);
    }

    pub(crate) fn evicted(&self) -> u64 {
        self.evicted.load(Relaxed)
    }

    pub(crate) fn refused_one(&self) {
        self.refused.fetch_add(1, Relaxed);
    }

    pub(crate) fn refused(&self) -> u64 {
        self.refused.load(Relaxed)
    }

    pub(crate) fn set_listening(&self, listening: bool) {
        self.listening.store(listening, Relaxed);
    }

    pub(crate) fn listening(&self) -> bool {
        self.listening.load(Relaxed)
    }

    pub(crate) fn kernel_attached(&self) -> bool {
        self.kernel_attached.load(Relaxed)
    }

    /// Called by the facade's thread when it stops calling the recorder.
    pub(crate) fn facade_failed(&self) {
        self.facade_failed.store(true, Relaxed);
    }

    /// The collector's status, `rollups` being the latest snapshot's
    /// sequence.
    pub(crate) fn collector(&self, rollups: u64, stall_after: Duration) -> CollectorStatus {
        let now = self.clock.now();
        let last_done = self.rollup.last_done.load(Relaxed);
        let state = match self.collector.load(Relaxed) {
            STOPPED => CollectorState::Exited {
                reason: "stopped by its handle".to_owned(),
            },
            EXITED => CollectorState::Exited {
                reason: self.thread.last_panic().map_or_else(
                    || "its thread ended".to_owned(),
                    |p| format!("panicked: {}", p.message),
                ),
            },
            _ => {
                let reference = if last_done != 0 {
                    last_done
                } else {
                    self.collector_since.load(Relaxed)
                };
                let overdue = Duration::from_nanos(now.saturating_sub(reference));
                if overdue <= stall_after {
                    CollectorState::Running
                } else if let Some((stage, since)) = [Stage::Rollup, Stage::Endpoint]
                    .into_iter()
                    .map(|stage| (stage, self.record(stage).busy_since.load(Relaxed)))
                    .find(|&(_, since)| since != 0)
                {
                    CollectorState::Stalled {
                        stage: Some(stage),
                        since: self.clock.wall(since),
                        duration: Duration::from_nanos(now.saturating_sub(since)),
                    }
                } else if self.rollup.last_panicked.load(Relaxed) > last_done {
                    CollectorState::Failing
                } else {
                    CollectorState::Stalled {
                        stage: None,
                        since: self.clock.wall(reference),
                        duration: overdue,
                    }
                }
            }
        };
        let last_panic = [&self.rollup, &self.endpoint, &self.thread]
            .into_iter()
            .filter_map(StageRecord::last_panic)
            .max_by_key(|p| p.at);
        CollectorStatus {
            state,
            rollups,
            last_rollup: (last_done != 0).then(|| self.clock.wall(last_done)),
            last_rollup_age: (last_done != 0)
                .then(|| Duration::from_nanos(now.saturating_sub(last_done))),
            panics: [&self.rollup, &self.endpoint, &self.thread]
                .iter()
                .map(|r| r.panics.load(Relaxed))
                .sum(),
            last_panic,
        }
    }

    /// The facade export's status.
    pub(crate) fn facade(&self, stall_after: Duration) -> FacadeStatus {
        let now = self.clock.now();
        let record = &self.facade;
        let last_done = record.last_done.load(Relaxed);
        let busy_since = record.busy_since.load(Relaxed);
        let busy = Duration::from_nanos(now.saturating_sub(busy_since));
        let state = if self.facade_failed.load(Relaxed) {
            FacadeState::Failed
        } else if busy_since != 0 && busy > stall_after {
            FacadeState::Stalled {
                since: self.clock.wall(busy_since),
                duration: busy,
            }
        } else {
            FacadeState::Running
        };
        FacadeStatus {
            state,
            exports: record.runs.load(Relaxed),
            last_export: (last_done != 0).then(|| self.clock.wall(last_done)),
            last_export_age: (last_done != 0)
                .then(|| Duration::from_nanos(now.saturating_sub(last_done))),
            panics: record.panics.load(Relaxed),
            last_panic: record.last_panic(),
        }
    }
}

thread_local! {
    /// Set while this thread runs a watched stage: whether a panic in it is
    /// passed on to the wrapped hook.
    static WATCHED: Cell<Option<bool>> = const { Cell::new(None) };
    /// What the hook noted of the latest panic in a watched stage: its
    /// message (when a string) and its location.
    static NOTED: Cell<Option<(Option<String>, String)>> = const { Cell::new(None) };
}

/// Wraps the panic hook in force (see the module's documentation); once per
/// process, whatever the number of starts.
pub(crate) fn install_panic_hook() {
    static INSTALLED: Once = Once::new();
    INSTALLED.call_once(|| {
        let wrapped = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info: &PanicHookInfo<'_>| {
            // `try_with`: a panic while this thread's locals are being
            // destroyed is not a stage's.
            if let Ok(Some(print)) = WATCHED.try_with(Cell::get) {
                let noted = (
                    info.payload_as_str().map(str::to_owned),
                    info.location()
                        .map_or_else(String::new, ToString::to_string),
                );
                let _ = NOTED.try_with(|n| n.set(Some(noted)));
                if !print {
                    return;
                }
            }
            wrapped(info);
        }));
    });
}

/// A caught panic's message: its payload when a string, with the location
/// the hook noted for it.
fn message(payload: &(dyn Any + Send), noted: Option<(Option<String>, String)>) -> String {
    let text = payload
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| payload.downcast_ref::<String>().map(String::as_str));
    match (text, noted) {
        (Some(text), Some((Some(noted), location))) if noted == text && !location.is_empty() => {
            format!("{text} (at {location})")
        }
        (Some(text), _) => text.to_owned(),
        (None, Some((_, location))) if !location.is_empty() => {
            format!("a panic with a payload that is not a string (at {location})")
        }
        (None, _) => "a panic with a payload that is not a string".to_owned(),
    }
}

/// Drops a caught panic's payload, whose own `drop` may panic in turn: such
/// a second payload is leaked rather than let through.
fn drop_payload(payload: Box<dyn Any + Send>) {
    if let Err(again) = std::panic::catch_unwind(AssertUnwindSafe(|| drop(payload))) {
        std::mem::forget(again);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    thread_local! {
        /// Panics the hook wrapped by this module's received on this thread.
        static PASSED_ON: Cell<u32> = const { Cell::new(0) };
    }

    /// This module's hook, wrapping one that counts what reaches it: the
    /// only hook these tests install.
    fn hooked() {
        static ONCE: Once = Once::new();
        ONCE.call_once(|| {
            let default = std::panic::take_hook();
            std::panic::set_hook(Box::new(move |info| {
                let _ = PASSED_ON.try_with(|n| n.set(n.get() + 1));
                default(info);
            }));
            install_panic_hook();
        });
    }

    #[test]
    fn a_panicking_run_is_caught_counted_and_kept_with_its_message_and_location() {
        hooked();
        let health = Health::new(false);
        assert_eq!(health.run(Stage::Rollup, || 7).ok(), Some(7));
        for _ in 0..3 {
            let caught = health.run(Stage::Rollup, || -> u32 { panic!("fold {}", 42) });
            assert!(caught.is_err());
        }
        let record = &health.rollup;
        assert_eq!(record.runs.load(Relaxed), 1);
        assert_eq!(record.panics.load(Relaxed), 3);
        assert_eq!(record.busy_since.load(Relaxed), 0, "no run in progress");
        let panic = record.last_panic().expect("the last panic");
        assert_eq!(panic.stage, Stage::Rollup);
        assert!(
            panic
                .message
                .starts_with("fold 42 (at ferrite-obs/src/supervise.rs:"),
            "{}",
            panic.message
        );
        let status = health.collector(1, Duration::from_secs(1));
        assert_eq!(status.panics, 3);
        assert_eq!(status.last_panic, Some(panic));
        assert_eq!(health.endpoint.panics.load(Relaxed), 0, "stages apart");
    }

    #[test]
    fn only_a_stages_first_panic_goes_on_to_the_wrapped_hook() {
        hooked();
        let health = Health::new(false);
        let before = PASSED_ON.get();
        for _ in 0..3 {
            let _ = health.run(Stage::Endpoint, || panic!("render"));
        }
        assert_eq!(PASSED_ON.get() - before, 1, "the first of three");
        let _ = health.run(Stage::Rollup, || panic!("fold"));
        assert_eq!(PASSED_ON.get() - before, 2, "another stage's first");
        assert_eq!(WATCHED.get(), None, "the thread is watched no more");
        let _ = std::panic::catch_unwind(|| panic!("the host's"));
        assert_eq!(PASSED_ON.get() - before, 3, "a panic outside every stage");
        assert!(NOTED.take().is_none(), "and not noted for a stage");
    }

    #[test]
    fn a_payload_that_is_not_a_string_is_named_as_such() {
        let health = Health::new(false);
        let _ = health.run(Stage::Facade, || std::panic::panic_any(17_u8));
        let message = health.facade.last_panic().expect("a panic").message;
        assert!(
            message.starts_with("a panic with a payload that is not a string"),
            "{message}"
        );
    }

    #[test]
    fn a_run_that_does_not_return_is_reported_stalled_after_the_threshold() {
        let mut health = Health::new(false);
        // A runtime started 10 s ago...
        health.clock.started -= Duration::from_secs(10);
        health.collector_started();
        let _ = health.run(Stage::Rollup, || ());
        // ... whose rollup began 3 s ago and has not returned.
        let began = health.clock.now() - 3_000_000_000;
        health.rollup.busy_since.store(began, Relaxed);
        health.rollup.last_done.store(began, Relaxed);
        match health.collector(1, Duration::from_secs(1)).state {
            CollectorState::Stalled {
                stage: Some(Stage::Rollup),
                duration,
                ..
            } => assert!(duration >= Duration::from_secs(3), "{duration:?}"),
            other => panic!("not stalled in the rollup: {other:?}"),
        }
        health.rollup.busy_since.store(0, Relaxed);
        health
            .rollup
            .last_panicked
            .store(health.clock.now(), Relaxed);
        assert_eq!(
            health.collector(1, Duration::from_secs(1)).state,
            CollectorState::Failing,
            "overdue, idle, and the last rollup panicked"
        );
    }

    #[test]
    fn the_stall_threshold_is_two_intervals_and_at_least_a_second() {
        assert_eq!(
            stall_threshold(Duration::from_millis(20)),
            Duration::from_secs(1)
        );
        assert_eq!(
            stall_threshold(Duration::from_secs(5)),
            Duration::from_secs(10)
        );
    }
}
