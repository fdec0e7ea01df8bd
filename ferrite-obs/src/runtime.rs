//! Starting and stopping the runtime: recording on, and a collector that
//! publishes a [`Snapshot`] every `rollup_interval`.
//!
//! Three threads, whether or not the caller runs a tokio runtime:
//!
//! - `ferrite-obs`, the collector: a single-threaded tokio runtime that rolls
//!   up every interval. Not a task on the server's runtime: it never takes
//!   time from the server's workers, and it does not depend on how that
//!   runtime was built (on one without the time or IO driver, tokio panics
//!   where a timer or socket is made). Everything it runs is ferrite-obs's
//!   own code, none of which waits: a rollup reads the shards, the kernel
//!   view's maps and the slow log's stage without locks.
//! - `ferrite-http`, the endpoint, on a single-threaded runtime of its
//!   own: each answer is rendered from the latest snapshot, so no request,
//!   however large its answer or slow its client, holds up a rollup, and the
//!   endpoint still answers (`/status` saying so) if the collector's thread
//!   has ended.
//! - `ferrite-metrics`, the export into the `metrics` facade, woken after
//!   each rollup to export the latest snapshot. The recorder is the host's
//!   (or a library's) code, which may block: on this thread of its own, a
//!   recorder that blocks holds up this export alone, while rollups go on,
//!   the endpoint answers, and `/status` says the export is stalled and
//!   since when. Exports that a blocked one holds up are not queued: the
//!   next reads the latest snapshot, whose counters are totals.
//!
//! Each rollup, each answer and each export is a watched stage
//! ([`crate::supervise`]): a panic in it is caught and counted, and the
//! stage runs again at its next turn; a recorder that panicked is called no
//! more ([`FacadeState::Failed`](crate::status::FacadeState::Failed)). A
//! panic that escapes every stage ends the collector's thread, and the
//! status says so. Snapshots are published with `arc-swap`:
//! [`Handle::snapshot`] is a lock-free load that never waits for a rollup in
//! progress.

use std::net::SocketAddr;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender};
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::{Notify, oneshot};

use crate::call::recording::{is_recording, set_recording};
use crate::call::slowlog;
use crate::collect::cost;
use crate::collect::snapshot::{Rollup, Snapshot};
use crate::config::Config;
use crate::core::latest::Latest;
use crate::export::endpoint::{self, Served};
use crate::export::facade;
use crate::kernel::{Kernel, KernelStatus};
use crate::status::{CollectorState, CollectorStatus, FacadeStatus, Stage, Status};
use crate::supervise::{self, Health};

/// Set while a runtime is running: there is one per process.
static STARTED: AtomicBool = AtomicBool::new(false);

/// Why [`start`] failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StartError {
    /// A runtime is already running in this process.
    #[error(
        "ferrite-obs is already running in this process: keep the first Handle, or shut it down before starting again"
    )]
    AlreadyStarted,
    /// This process is a child forked while the parent's runtime ran.
    #[error(
        "this process was forked from one whose ferrite-obs runtime is running: a forked child cannot start its own (its locks and tables were copied in whatever state the parent's threads held them); start ferrite-obs in the parent, or before it forks"
    )]
    ForkedChild,
    /// The endpoint's address could not be bound.
    #[error(
        "cannot listen on {addr} for the ferrite-obs endpoint: {source}; choose another `observability.endpoint`, or \"off\""
    )]
    Bind {
        /// The configured address.
        addr: SocketAddr,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },
    /// The collector's thread could not be created.
    #[error("cannot start the ferrite-obs collector thread: {source}")]
    Thread {
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },
}

/// Starts ferrite-obs as `config` says.
///
/// With `enabled = false` nothing starts (no thread, no task, no socket, no
/// recording) and the handle's snapshots stay empty. Otherwise the endpoint
/// is bound (a bad address fails here), recording is turned on at every
/// `#[probe]` site, and the collector starts on its thread; `start` returns
/// once that thread runs and the endpoint listens. Callable from inside or
/// outside a tokio runtime.
///
/// The panic hook in force is wrapped, once per process, so that a stage
/// that panics again and again is not printed each time (see
/// `docs/operations.md`); other panics reach it unchanged.
pub fn start(config: Config) -> Result<Handle, StartError> {
    if !config.enabled {
        return Ok(Handle {
            shared: None,
            collector: None,
        });
    }
    if crate::fork::forked() {
        return Err(StartError::ForkedChild);
    }
    if STARTED.swap(true, Ordering::AcqRel) {
        return Err(StartError::AlreadyStarted);
    }
    let listener = match config.endpoint.map(bind).transpose() {
        Ok(listener) => listener,
        Err(error) => {
            STARTED.store(false, Ordering::Release);
            return Err(error);
        }
    };
    supervise::install_panic_hook();
    // Loaded before recording starts, so the first commands are attributed.
    let kernel = Kernel::load(&config);
    slowlog::configure(config.slow_threshold, config.slowlog_len);
    set_recording(true);
    let kernel_status = kernel.status();
    let shared = Arc::new(Shared {
        snapshot: Latest::new(Snapshot::empty()),
        stop: Notify::new(),
        stop_endpoint: Notify::new(),
        endpoint: listener.as_ref().and_then(|l| l.local_addr().ok()),
        health: Health::new(kernel_status.is_active()),
        kernel: kernel_status,
        stall_after: supervise::stall_threshold(config.rollup_interval),
        config,
    });
    match spawn(&shared, listener, kernel) {
        Ok(collector) => {
            crate::fork::running();
            Ok(Handle {
                shared: Some(shared),
                collector: Some(collector),
            })
        }
        Err(error) => {
            set_recording(false);
            slowlog::disable();
            STARTED.store(false, Ordering::Release);
            Err(error)
        }
    }
}

/// Binds the endpoint now, so that a bad address fails `start` itself.
fn bind(addr: SocketAddr) -> Result<std::net::TcpListener, StartError> {
    let listener =
        std::net::TcpListener::bind(addr).map_err(|source| StartError::Bind { addr, source })?;
    listener
        .set_nonblocking(true)
        .map_err(|source| StartError::Bind { addr, source })?;
    Ok(listener)
}

/// Starts the endpoint's thread (once its listener is registered), then
/// the facade's and the collector's, and waits until the collector runs.
fn spawn(
    shared: &Arc<Shared>,
    listener: Option<std::net::TcpListener>,
    kernel: Kernel,
) -> Result<Collector, StartError> {
    let endpoint = match listener {
        Some(listener) => Some(spawn_endpoint(shared, listener)?),
        None => None,
    };
    let stop_endpoint = |endpoint: Option<std::thread::JoinHandle<()>>| {
        shared.stop_endpoint.notify_one();
        if let Some(endpoint) = endpoint {
            let _ = endpoint.join();
        }
    };
    let collector = spawn_collector(shared, kernel);
    match collector {
        Ok((done, thread)) => Ok(Collector {
            done,
            thread,
            endpoint,
        }),
        Err(error) => {
            stop_endpoint(endpoint);
            Err(error)
        }
    }
}

/// The endpoint's thread (`ferrite-http`): its accept loop, each
/// connection served by a task of its own, on a runtime of its own, so that
/// no request, however slow to render or to take, holds up a rollup.
/// Returns once the listener is registered with that runtime.
fn spawn_endpoint(
    shared: &Arc<Shared>,
    listener: std::net::TcpListener,
) -> Result<std::thread::JoinHandle<()>, StartError> {
    let addr = listener.local_addr().ok();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|source| StartError::Thread { source })?;
    let (ready, is_ready) = mpsc::sync_channel(1);
    let thread = std::thread::Builder::new()
        .name("ferrite-http".into())
        .spawn({
            let shared = Arc::clone(shared);
            move || {
                // Unwind-safe: the loop owns only the listener and its
                // connections, dropped as a panic unwinds.
                let _ = std::panic::catch_unwind(AssertUnwindSafe(|| {
                    runtime.block_on(serve_endpoint(&shared, listener, ready));
                }));
                shared.health.set_listening(false);
            }
        })
        .map_err(|source| StartError::Thread { source })?;
    match is_ready.recv() {
        Ok(Ok(())) => Ok(thread),
        Ok(Err(source)) => {
            let _ = thread.join();
            Err(match addr {
                Some(addr) => StartError::Bind { addr, source },
                None => StartError::Thread { source },
            })
        }
        Err(_) => {
            let _ = thread.join();
            Err(StartError::Thread {
                source: std::io::Error::other("the endpoint's thread ended before it ran"),
            })
        }
    }
}

/// The endpoint's accept loop, until the runtime stops.
async fn serve_endpoint(
    shared: &Arc<Shared>,
    listener: std::net::TcpListener,
    ready: SyncSender<std::io::Result<()>>,
) {
    // Registered with this thread's runtime (it needs one to exist).
    let listener = match TcpListener::from_std(listener) {
        Ok(listener) => listener,
        Err(error) => {
            let _ = ready.send(Err(error));
            return;
        }
    };
    shared.health.set_listening(true);
    let _ = ready.send(Ok(()));
    let mut connections = endpoint::Connections::new();
    loop {
        tokio::select! {
            () = shared.stop_endpoint.notified() => break,
            accepted = listener.accept() => {
                if let Ok((stream, _)) = accepted {
                    connections.admit(stream, shared);
                }
            }
        }
    }
    // The port is free once the listener is dropped; no connection outlives
    // the runtime.
    drop(listener);
    shared.health.set_listening(false);
    connections.close().await;
}

/// Starts the facade's thread, then the collector's.
fn spawn_collector(
    shared: &Arc<Shared>,
    kernel: Kernel,
) -> Result<(oneshot::Receiver<()>, std::thread::JoinHandle<()>), StartError> {
    let thread_error = |source| StartError::Thread { source };
    // A wake-up pending is enough: the export reads the latest snapshot.
    let (wake, woken) = mpsc::sync_channel(1);
    let (finished, facade_finished) = mpsc::sync_channel::<()>(0);
    let facade = std::thread::Builder::new()
        .name("ferrite-metrics".into())
        .spawn({
            let shared = Arc::clone(shared);
            move || {
                export_to_facade(&shared, &woken);
                drop(finished);
            }
        })
        .map_err(thread_error)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(thread_error)?;
    let facade = FacadeThread {
        thread: facade,
        finished: facade_finished,
    };
    let (ready, is_ready) = mpsc::sync_channel(1);
    let (done, is_done) = oneshot::channel();
    let thread = std::thread::Builder::new()
        .name("ferrite-obs".into())
        .spawn({
            let shared = Arc::clone(shared);
            move || {
                let task = collect(Arc::clone(&shared), kernel, wake, ready);
                run_collector(&shared, runtime, task, facade);
                let _ = done.send(());
            }
        })
        .map_err(thread_error)?;
    match is_ready.recv() {
        Ok(()) => Ok((is_done, thread)),
        Err(_) => {
            let _ = thread.join();
            Err(StartError::Thread {
                source: std::io::Error::other("the collector's thread ended before it ran"),
            })
        }
    }
}

/// The facade's thread, as the collector's thread waits for it to end.
struct FacadeThread {
    thread: std::thread::JoinHandle<()>,
    /// Disconnected when the thread ends.
    finished: Receiver<()>,
}

/// The collector's thread: runs `task`, the collector loop, to its end or
/// to a panic that no stage caught; says how it ended; then waits for the
/// facade's thread.
fn run_collector(
    shared: &Shared,
    runtime: tokio::runtime::Runtime,
    task: impl std::future::Future<Output = ()>,
    facade: FacadeThread,
) {
    shared.health.collector_started();
    // Unwind-safe: what the task owned (the rollup, the kernel view, the
    // listener) is dropped as a panic unwinds, and the status then says the
    // thread has ended.
    let ended = shared
        .health
        .run(Stage::Thread, AssertUnwindSafe(|| runtime.block_on(task)));
    drop(runtime);
    shared.health.collector_ended(ended.is_ok());
    if ended.is_err() {
        // Nobody collects any more: recording would cost the host for
        // nothing.
        set_recording(false);
    }
    join_facade(facade, shared.stall_after);
}

/// Waits for the facade's thread to finish its last export, at most
/// `limit`: a recorder that does not return does not hold up the shutdown.
/// The thread then ends when the recorder returns.
fn join_facade(facade: FacadeThread, limit: Duration) {
    match facade.finished.recv_timeout(limit) {
        Err(RecvTimeoutError::Timeout) => tracing::warn!(
            "ferrite-obs: the metrics recorder has not returned for {limit:?}; \
             its export thread is left to end when it does"
        ),
        Ok(()) | Err(RecvTimeoutError::Disconnected) => {
            let _ = facade.thread.join();
        }
    }
}

/// State shared by the handle, the collector, the facade's thread and the
/// endpoint.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) snapshot: Latest<Snapshot>,
    stop: Notify,
    /// Stops the endpoint's thread.
    stop_endpoint: Notify,
    /// The endpoint's bound address, when it is on.
    endpoint: Option<SocketAddr>,
    /// The kernel view's status after loading.
    kernel: KernelStatus,
    /// What the threads report of themselves.
    health: Health,
    /// See [`supervise::stall_threshold`].
    stall_after: Duration,
    config: Config,
}

impl Served for Shared {
    fn snapshot(&self) -> Arc<Snapshot> {
        self.snapshot.load()
    }

    /// The status while the runtime runs, each part as it is now.
    fn status(&self) -> Status {
        let collector = self
            .health
            .collector(self.snapshot.load().sequence, self.stall_after);
        Status {
            enabled: true,
            recording: is_recording(),
            collector_running: collector.state == CollectorState::Running,
            rollup_interval: self.config.rollup_interval,
            endpoint: self.endpoint,
            endpoint_listening: self.health.listening(),
            endpoint_evicted: self.health.evicted(),
            endpoint_refused: self.health.refused(),
            kernel: if self.kernel.is_active() && !self.health.kernel_attached() {
                KernelStatus::Off
            } else {
                self.kernel.clone()
            },
            collector,
            facade: self.health.facade(self.stall_after),
        }
    }

    fn health(&self) -> &Health {
        &self.health
    }
}

/// The collector's end: told when it has finished, and its thread.
#[derive(Debug)]
struct Collector {
    done: oneshot::Receiver<()>,
    thread: std::thread::JoinHandle<()>,
    /// The endpoint's thread, when it is on.
    endpoint: Option<std::thread::JoinHandle<()>>,
}

/// The collector loop: a rollup every interval and a final one on stop.
/// `ready` is told once the loop runs.
async fn collect(shared: Arc<Shared>, kernel: Kernel, wake: SyncSender<()>, ready: SyncSender<()>) {
    let _ = ready.send(());
    let mut rollup = Rollup::new(cost::measure_per_call_ns(), kernel);
    let mut ticker = tokio::time::interval(shared.config.rollup_interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    ticker.tick().await;
    loop {
        tokio::select! {
            _ = ticker.tick() => roll_up(&shared, &mut rollup, &wake),
            () = shared.stop.notified() => {
                roll_up(&shared, &mut rollup, &wake);
                rollup.unload_kernel();
                break;
            }
        }
    }
}

/// One rollup, as a watched stage: the snapshot made and published, and the
/// facade's thread woken to export it.
fn roll_up(shared: &Shared, rollup: &mut Rollup, wake: &SyncSender<()>) {
    // Unwind-safe: a snapshot is published whole or not at all, and after a
    // panic the rollup forgets what its fold remembered.
    let published = shared.health.run(
        Stage::Rollup,
        AssertUnwindSafe(|| {
            let snapshot = rollup.next(&shared.snapshot.load(), thread_cpu());
            shared.snapshot.store(snapshot);
        }),
    );
    match published {
        // Full: an export is pending, and reads this snapshot. Disconnected:
        // the recorder panicked and is called no more.
        Ok(()) => {
            let _ = wake.try_send(());
        }
        Err(_) => rollup.forget(),
    }
}

/// The facade's thread: an export of the latest snapshot after each
/// rollup, until the collector ends or the recorder panics.
fn export_to_facade(shared: &Shared, woken: &Receiver<()>) {
    let mut exporter = facade::Exporter::default();
    while woken.recv().is_ok() {
        // Unwind-safe: after a panic the exporter, and the recorder, are
        // not called again.
        let exported = shared.health.run(
            Stage::Facade,
            AssertUnwindSafe(|| exporter.export(&shared.snapshot.load())),
        );
        if exported.is_err() {
            shared.health.facade_failed();
            return;
        }
    }
}

/// CPU time of the calling thread.
fn thread_cpu() -> Duration {
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `now` is a valid timespec to write; CLOCK_THREAD_CPUTIME_ID
    // is supported on every Linux and BSD.
    if unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut now) } != 0 {
        return Duration::ZERO;
    }
    Duration::new(
        u64::try_from(now.tv_sec).unwrap_or(0),
        u32::try_from(now.tv_nsec).unwrap_or(0),
    )
}

/// A running (or disabled) ferrite-obs. Keep it for the life of the server;
/// [`Handle::shutdown`] stops it.
#[derive(Debug)]
pub struct Handle {
    shared: Option<Arc<Shared>>,
    collector: Option<Collector>,
}

impl Handle {
    /// The latest snapshot, without locking or waiting for a rollup. Empty
    /// when disabled.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        match &self.shared {
            Some(shared) => shared.snapshot.load(),
            None => Arc::new(Snapshot::empty()),
        }
    }

    /// What is on, each part as it is now: see [`Status`].
    pub fn status(&self) -> Status {
        // A forked child's copy of the handle: nothing runs in the child.
        if let (Some(shared), Some(_), false) =
            (&self.shared, &self.collector, crate::fork::forked())
        {
            return shared.status();
        }
        Status {
            enabled: self.shared.is_some(),
            recording: is_recording(),
            collector_running: false,
            rollup_interval: self
                .shared
                .as_ref()
                .map_or(Duration::ZERO, |s| s.config.rollup_interval),
            endpoint: self.endpoint(),
            endpoint_listening: false,
            endpoint_evicted: 0,
            endpoint_refused: 0,
            kernel: KernelStatus::Off,
            collector: CollectorStatus::off(),
            facade: FacadeStatus::off(),
        }
    }

    /// The endpoint's address (with the port the system chose, for port 0).
    pub fn endpoint(&self) -> Option<SocketAddr> {
        self.shared.as_ref().and_then(|s| s.endpoint)
    }

    /// Stops the collector after a final rollup, turns recording off and
    /// releases everything; another [`start`] may follow.
    pub async fn shutdown(mut self) {
        self.stop().await;
    }

    async fn stop(&mut self) {
        // In a forked child, the collector thread is the parent's.
        if crate::fork::forked() {
            return;
        }
        let (Some(shared), Some(collector)) = (&self.shared, self.collector.take()) else {
            return;
        };
        crate::fork::stopped();
        shared.stop.notify_one();
        let _ = collector.done.await;
        // It has sent `done` and returns at once.
        let _ = collector.thread.join();
        shared.stop_endpoint.notify_one();
        if let Some(endpoint) = collector.endpoint {
            let _ = endpoint.join();
        }
        set_recording(false);
        slowlog::disable();
        STARTED.store(false, Ordering::Release);
    }
}

impl Drop for Handle {
    fn drop(&mut self) {
        if crate::fork::forked() {
            // The collector thread is the parent's: its handle is not
            // joined or detached here.
            std::mem::forget(self.collector.take());
            return;
        }
        // Dropped without `shutdown`: stop the collector without waiting.
        if let (Some(shared), Some(_)) = (&self.shared, &self.collector) {
            crate::fork::stopped();
            shared.stop.notify_one();
            shared.stop_endpoint.notify_one();
            set_recording(false);
            slowlog::disable();
            STARTED.store(false, Ordering::Release);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_panic_that_escapes_every_stage_ends_the_thread_and_the_status_says_so() {
        let shared = Shared {
            snapshot: Latest::new(Snapshot::empty()),
            stop: Notify::new(),
            stop_endpoint: Notify::new(),
            endpoint: Some(SocketAddr::from(([127, 0, 0, 1], 9464))),
            kernel: KernelStatus::Active {
                kernel: "6.1".to_owned(),
                attached: Vec::new(),
                unavailable: Vec::new(),
            },
            health: Health::new(true),
            stall_after: Duration::from_secs(1),
            config: Config {
                enabled: true,
                ..Config::default()
            },
        };
        shared.health.set_listening(true);
        set_recording(true);
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let (finished, facade_finished) = mpsc::sync_channel::<()>(0);
        let facade = FacadeThread {
            thread: std::thread::spawn(move || drop(finished)),
            finished: facade_finished,
        };
        run_collector(
            &shared,
            runtime,
            async { panic!("out of every stage") },
            facade,
        );

        let status = shared.status();
        match &status.collector.state {
            CollectorState::Exited { reason } => assert!(
                reason.starts_with("panicked: out of every stage"),
                "{reason}"
            ),
            other => panic!("the collector is {other:?}"),
        }
        assert!(!status.collector_running);
        assert!(!status.recording, "nobody collects: recording is off");
        assert!(
            status.endpoint_listening,
            "the endpoint, on its own thread, still answers and says so"
        );
        assert_eq!(status.kernel, KernelStatus::Off, "so did the programs");
        assert_eq!(status.collector.panics, 1);
        let panic = status.collector.last_panic.expect("the panic");
        assert_eq!(panic.stage, Stage::Thread);
    }
}
