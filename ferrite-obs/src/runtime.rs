//! Starting and stopping the runtime: recording on, and a collector that
//! publishes a [`Snapshot`] every `rollup_interval`.
//!
//! The collector, and the endpoint it serves, run on a thread of their own
//! (`ferrite-obs`) with a single-threaded tokio runtime, whether or not the
//! caller runs one: they never take time from the server's workers, and they
//! do not depend on how the server's runtime was built (on a runtime without
//! the time or IO driver, tokio panics where a timer or socket is made, and a
//! panic must not reach the host). Snapshots are published with `arc-swap`:
//! [`Handle::snapshot`] is a lock-free load that never waits for a rollup in
//! progress.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::{Notify, oneshot};
use tokio::task::JoinSet;

use crate::call::recording::{is_recording, set_recording};
use crate::call::slowlog;
use crate::collect::cost;
use crate::collect::snapshot::{Rollup, Snapshot};
use crate::config::Config;
use crate::core::latest::Latest;
use crate::export::endpoint::{self, Served};
use crate::export::facade;
use crate::kernel::{Kernel, KernelStatus};
use crate::status::Status;

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
/// `#[probe]` site, and the collector starts on its thread. Callable from
/// inside or outside a tokio runtime.
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
    // Loaded before recording starts, so the first commands are attributed.
    let kernel = Kernel::load(&config);
    slowlog::configure(config.slow_threshold, config.slowlog_len);
    set_recording(true);
    let shared = Arc::new(Shared {
        snapshot: Latest::new(Snapshot::empty()),
        stop: Notify::new(),
        endpoint: listener.as_ref().and_then(|l| l.local_addr().ok()),
        kernel: kernel.status(),
        config,
    });
    let (done_tx, done_rx) = oneshot::channel();
    let task = collect(Arc::clone(&shared), listener, kernel, done_tx);
    let thread = match spawn_thread(task) {
        Ok(thread) => thread,
        Err(source) => {
            set_recording(false);
            slowlog::disable();
            STARTED.store(false, Ordering::Release);
            return Err(StartError::Thread { source });
        }
    };
    crate::fork::running();
    Ok(Handle {
        shared: Some(shared),
        collector: Some(Collector {
            done: done_rx,
            thread,
        }),
    })
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

fn spawn_thread(
    task: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    std::thread::Builder::new()
        .name("ferrite-obs".into())
        .spawn(move || runtime.block_on(task))
}

/// State shared by the handle, the collector and the endpoint.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) snapshot: Latest<Snapshot>,
    stop: Notify,
    /// The endpoint's bound address, when it is on.
    pub(crate) endpoint: Option<SocketAddr>,
    /// The kernel view's status after loading.
    pub(crate) kernel: KernelStatus,
    pub(crate) config: Config,
}

impl Served for Shared {
    fn snapshot(&self) -> Arc<Snapshot> {
        self.snapshot.load()
    }

    /// The status while the collector runs.
    fn status(&self) -> Status {
        Status {
            enabled: true,
            recording: is_recording(),
            collector_running: true,
            rollup_interval: self.config.rollup_interval,
            endpoint: self.endpoint,
            kernel: self.kernel.clone(),
        }
    }
}

/// The collector's end: told when it has finished, and its thread.
#[derive(Debug)]
struct Collector {
    done: oneshot::Receiver<()>,
    thread: std::thread::JoinHandle<()>,
}

/// The collector loop: a rollup every interval and a final one on stop, and
/// the endpoint's accept loop, each connection served by a task of its own.
async fn collect(
    shared: Arc<Shared>,
    listener: Option<std::net::TcpListener>,
    kernel: Kernel,
    done: oneshot::Sender<()>,
) {
    // Registered with this task's runtime (it needs one to exist).
    let listener = listener.and_then(|l| TcpListener::from_std(l).ok());
    let mut connections = JoinSet::new();
    let mut rollup = Rollup::new(cost::measure_per_call_ns(), kernel);
    facade::describe();
    let mut exporter = facade::Exporter::default();
    let mut ticker = tokio::time::interval(shared.config.rollup_interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    ticker.tick().await;
    loop {
        tokio::select! {
            _ = ticker.tick() => publish(&shared, &mut exporter, rollup.next(&shared.snapshot.load(), thread_cpu())),
            () = shared.stop.notified() => {
                publish(&shared, &mut exporter, rollup.next(&shared.snapshot.load(), thread_cpu()));
                rollup.unload_kernel();
                break;
            }
            Some(stream) = accept(listener.as_ref()) => {
                while connections.try_join_next().is_some() {}
                if connections.len() < endpoint::MAX_CONNECTIONS {
                    connections.spawn(endpoint::serve(stream, Arc::clone(&shared)));
                } else {
                    connections.spawn(endpoint::refuse(stream));
                }
            }
        }
    }
    // The port is free once the listener is dropped; no connection outlives
    // the runtime.
    drop(listener);
    connections.abort_all();
    while connections.join_next().await.is_some() {}
    let _ = done.send(());
}

/// Makes `snapshot` the one readers get, and exports it to `metrics`.
fn publish(shared: &Shared, exporter: &mut facade::Exporter, snapshot: Snapshot) {
    exporter.export(&snapshot);
    shared.snapshot.store(snapshot);
}

/// The next connection; never, without an endpoint.
async fn accept(listener: Option<&TcpListener>) -> Option<tokio::net::TcpStream> {
    match listener {
        Some(listener) => listener.accept().await.ok().map(|(stream, _)| stream),
        None => std::future::pending().await,
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

    /// What is on.
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
            kernel: KernelStatus::Off,
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
            set_recording(false);
            slowlog::disable();
            STARTED.store(false, Ordering::Release);
        }
    }
}
