//! Starting and stopping the runtime: recording on, and a collector that
//! publishes a [`Snapshot`] every `rollup_interval`.
//!
//! The collector runs as a task on the caller's tokio runtime, or, when there
//! is none, on a thread of its own (`ferrite-obs`) with a single-threaded
//! runtime. Snapshots are published with `arc-swap`: [`Handle::snapshot`] is a
//! lock-free load that never waits for a rollup in progress.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio::sync::{Notify, oneshot};

use crate::config::Config;
use crate::snapshot::{Rollup, Snapshot};

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
/// recording) and the handle's snapshots stay empty. Otherwise recording is
/// turned on at every `#[probe]` site and the collector starts: on the
/// current tokio runtime if there is one, else on a thread of its own.
pub fn start(config: Config) -> Result<Handle, StartError> {
    if !config.enabled {
        return Ok(Handle {
            shared: None,
            collector: None,
        });
    }
    if STARTED.swap(true, Ordering::AcqRel) {
        return Err(StartError::AlreadyStarted);
    }
    crate::set_recording(true);
    let shared = Arc::new(Shared {
        snapshot: ArcSwap::from_pointee(Snapshot::empty()),
        stop: Notify::new(),
        config,
    });
    let (done_tx, done_rx) = oneshot::channel();
    let task = collect(Arc::clone(&shared), done_tx);
    let thread = match tokio::runtime::Handle::try_current() {
        Ok(runtime) => {
            runtime.spawn(task);
            None
        }
        Err(_) => match spawn_thread(task) {
            Ok(thread) => Some(thread),
            Err(source) => {
                crate::set_recording(false);
                STARTED.store(false, Ordering::Release);
                return Err(StartError::Thread { source });
            }
        },
    };
    Ok(Handle {
        shared: Some(shared),
        collector: Some(Collector {
            done: done_rx,
            thread,
        }),
    })
}

fn spawn_thread(
    task: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()?;
    std::thread::Builder::new()
        .name("ferrite-obs".into())
        .spawn(move || runtime.block_on(task))
}

/// State shared by the handle and the collector.
#[derive(Debug)]
struct Shared {
    snapshot: ArcSwap<Snapshot>,
    stop: Notify,
    config: Config,
}

/// The collector's end: told when it has finished, and its thread if it
/// owns one.
#[derive(Debug)]
struct Collector {
    done: oneshot::Receiver<()>,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// The collector loop: a rollup every interval, and a final one on stop.
async fn collect(shared: Arc<Shared>, done: oneshot::Sender<()>) {
    let mut rollup = Rollup::new();
    let mut ticker = tokio::time::interval(shared.config.rollup_interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    ticker.tick().await;
    loop {
        tokio::select! {
            _ = ticker.tick() => {
                shared.snapshot.store(Arc::new(rollup.next(thread_cpu())));
            }
            () = shared.stop.notified() => {
                shared.snapshot.store(Arc::new(rollup.next(thread_cpu())));
                break;
            }
        }
    }
    let _ = done.send(());
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

/// What is running, for operators.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Status {
    /// `enabled` in the configuration.
    pub enabled: bool,
    /// Whether `#[probe]` sites are recording.
    pub recording: bool,
    /// Whether the collector is publishing snapshots.
    pub collector_running: bool,
    /// Rollup interval in force.
    pub rollup_interval: Duration,
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
            Some(shared) => shared.snapshot.load_full(),
            None => Arc::new(Snapshot::empty()),
        }
    }

    /// What is on.
    pub fn status(&self) -> Status {
        Status {
            enabled: self.shared.is_some(),
            recording: crate::is_recording(),
            collector_running: self.collector.is_some(),
            rollup_interval: self
                .shared
                .as_ref()
                .map_or(Duration::ZERO, |s| s.config.rollup_interval),
        }
    }

    /// Stops the collector after a final rollup, turns recording off and
    /// releases everything; another [`start`] may follow.
    pub async fn shutdown(mut self) {
        self.stop().await;
    }

    async fn stop(&mut self) {
        let (Some(shared), Some(collector)) = (&self.shared, self.collector.take()) else {
            return;
        };
        shared.stop.notify_one();
        let _ = collector.done.await;
        if let Some(thread) = collector.thread {
            // It has sent `done` and returns at once.
            let _ = thread.join();
        }
        crate::set_recording(false);
        STARTED.store(false, Ordering::Release);
    }
}

impl Drop for Handle {
    fn drop(&mut self) {
        // Dropped without `shutdown`: stop the collector without waiting.
        if let (Some(shared), Some(_)) = (&self.shared, &self.collector) {
            shared.stop.notify_one();
            crate::set_recording(false);
            STARTED.store(false, Ordering::Release);
        }
    }
}
