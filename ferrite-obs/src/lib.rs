//! # ferrite-obs
//!
//! Always-on, in-process observability for Ferrite and the libraries it is
//! built from. Put `#[probe]` on a hot-path function and get, per call site:
//!
//! - **USDT probes** (`ferrite:probe_enter` / `ferrite:probe_exit`) for
//!   bpftrace, perf and SystemTap, free while no tracer is attached;
//! - a **`tracing` span** whenever a subscriber wants one;
//! - **exact counters and a latency histogram**, lock-free and sharded per
//!   thread, while recording is on: calls, errors, in-flight, cancelled,
//!   panicked, latency within 1.6 % from 1 ns to over an hour, and for async
//!   functions poll count and busy time.
//!
//! ## For a library author
//!
//! ```
//! use ferrite_obs::probe;
//!
//! #[probe]
//! fn lookup(key: &str) -> Option<usize> {
//!     key.find('x')
//! }
//!
//! #[probe(name = "storage_read", level = "trace", skip(buf), err)]
//! async fn read_block(offset: u64, buf: &mut [u8]) -> std::io::Result<usize> {
//!     Ok(buf.len())
//! }
//!
//! # ferrite_obs::set_recording(true);
//! lookup("a key");
//! let site = ferrite_obs::sites().into_iter().find(|s| s.name == "lookup").unwrap();
//! assert_eq!(site.calls, 1);
//! ```
//!
//! Options of `#[probe(...)]`:
//!
//! | option | meaning |
//! |---|---|
//! | `name = "..."` | the site's name in figures, spans and probes (default: the function's name) |
//! | `level = "debug"` | level of the `tracing` span: `trace`, `debug` (default), `info`, `warn`, `error`, or `Level::X` |
//! | `fields(a = expr, b)` | extra span fields, in `tracing`'s syntax |
//! | `skip(a, b)`, `skip_all` | arguments not recorded on the span (others must be `Debug`) |
//! | `err` | an `Err` return counts as an error |
//! | `command` | a command root: see below |
//!
//! Spans default to `debug` rather than `tracing`'s `info`: probes sit on hot
//! paths, and an `info` subscriber should not pay for them.
//!
//! ## Commands
//!
//! `#[probe(command)]` marks a command root. While recording is on (or a
//! tracer is attached to its probes), each call gets a unique [`CommandId`],
//! fires `ferrite:command_start` / `command_end`, and while the call runs (for
//! an async function: during each poll of its future) the thread's current
//! command is that id; probes nested inside report it and [`current_command`]
//! returns it. Per-command figures are the command sites' own ([`commands`]).
//!
//! ```
//! # use ferrite_obs::probe;
//! ferrite_obs::set_recording(true);
//!
//! #[probe(command, name = "GET")]
//! fn get(key: &[u8]) -> Option<Vec<u8>> {
//!     assert!(ferrite_obs::current_command().is_some());
//!     None
//! }
//! # get(b"k");
//! ```
//!
//! ## For a server operator
//!
//! The `[observability]` section of the server's configuration turns it on
//! ([`Config`]; `enabled = true` is the flag, `FERRITE_OBS_*` environment
//! variables override). [`start`] turns recording on and starts the collector
//! and the loopback endpoint (`/metrics`, `/snapshot`, `/status`) on a thread
//! of their own, and the export into the `metrics` facade on another;
//! [`Handle::shutdown`] stops them and frees the port. [`Handle::status`]
//! (and `/status`) says what each part is doing now: a collector that has
//! stalled or panicked, a recorder that blocks or panicked, an endpoint that
//! stopped listening (docs/operations.md says what to do about each).
//!
//! With the `runtime` feature (`ferrite-obs = { version = "0.1", features =
//! ["runtime", "ebpf"] }` in the server's manifest):
//!
//! ```no_run
//! # #[cfg(feature = "runtime")]
//! # async fn serve() -> Result<(), Box<dyn std::error::Error>> {
//! let text = std::fs::read_to_string("ferrite.toml")?;
//! let config = ferrite_obs::Config::from_server_toml(&text)?.with_process_env()?;
//! let handle = ferrite_obs::start(config)?;
//! // ... serve; `handle.snapshot()` is the latest rollup, lock-free ...
//! let status = handle.status();
//! if !status.collector_running {
//!     eprintln!("ferrite-obs collector: {:?}", status.collector.state);
//! }
//! handle.shutdown().await;
//! # Ok(())
//! # }
//! ```
//!
//! The USDT probes work whether or not ferrite-obs is enabled. Attach to a
//! running server with `bpftrace -p PID` (see [`probes`] for every probe and
//! its arguments):
//!
//! ```text
//! bpftrace -p $(pidof ferrite-server) -e \
//!   'usdt:/proc/'$(pidof ferrite-server)'/exe:ferrite:probe_exit { @[str(arg0)] = hist(arg2); }'
//! ```
//!
//! ## Features
//!
//! The default features are what a library author needs: `#[probe]`, the
//! USDT probes, counters, histograms, spans and [`sites`], with no tokio, no
//! HTTP, no TOML, no eBPF and no C toolchain. A server turns on the rest.
//!
//! | feature | effect |
//! |---|---|
//! | `runtime` | [`start`] and its [`Handle`]: the collector thread, snapshots, the slow log, the loopback endpoint, the `metrics` facade export, and [`Config`] (tokio, arc-swap, metrics, toml) |
//! | `ebpf` | the kernel view (Linux; implies `runtime`): aya, and clang with the libbpf headers at build time |
//! | `tokio-uring` | `kernel::uring::start`, a tokio-uring runtime whose requests are attributed to commands (implies `ebpf`) |
//! | `schema` | [`schema`]: the endpoint's JSON documents as serde types, for readers (implied by `runtime`) |
//! | `off` | compile-time off switch: `#[probe]` still checks its arguments but expands to the original function: no statics, no USDT notes, no cost |
//!
//! ## Platforms
//!
//! USDT probes are emitted on Linux (x86-64 and aarch64); elsewhere the probe
//! functions are no-ops with the same signatures. Counters, histograms and
//! spans work everywhere.
//!
//! ## Costs
//!
//! Recording off, no tracer attached, no subscriber for the span's level: two
//! loads and two branches per call (the gate word that holds the recording
//! switch and the probes' semaphores, and `tracing`'s level), and no stack
//! frame of its own (the body is compiled once, as a closure, and called
//! directly, on the straight path). Recording on: one out-of-line call, two
//! clock readings (TSC) and a handful of uncontended stores to the calling
//! thread's own shard, none of them at an address that waits for the clock;
//! no allocation, lock or system call after a thread's first call at a site.
//! `docs/benchmarks.md` has the figures.

// The layers, each depending only on those above it in this list (see the
// map in docs/architecture.md). Without the `runtime` feature, only the
// call-site layer is built: core, the call path, the kernel view's public
// types and its hooks (which do nothing), and `sites()`.
mod call;
#[cfg(not(loom))]
mod collect;
#[cfg(feature = "runtime")]
pub mod config;
mod core;
#[cfg(all(feature = "runtime", not(loom)))]
mod export;
#[cfg(all(feature = "runtime", not(loom)))]
mod fork;
#[cfg(not(loom))]
pub mod kernel;
#[cfg(all(feature = "runtime", not(loom)))]
mod runtime;
#[cfg(feature = "schema")]
pub mod schema;
#[cfg(all(feature = "runtime", not(loom)))]
mod status;
#[cfg(all(feature = "runtime", not(loom)))]
mod supervise;

#[doc(hidden)]
pub mod fuzzing;
#[cfg(all(test, loom))]
mod loom;

pub use crate::call::probes;
pub use crate::call::recording::{is_recording, set_recording};
#[cfg(not(loom))]
pub use crate::call::slowlog;
#[cfg(not(loom))]
pub use crate::collect::fold::{SiteStats, commands, sites};
#[cfg(all(feature = "runtime", not(loom)))]
pub use crate::collect::snapshot::{self, Snapshot};
pub use crate::core::command::{CommandId, current_command};
pub use crate::core::histogram::{self, Histogram};
pub use crate::core::site::{Site, SiteMeta};
#[cfg(feature = "runtime")]
pub use config::{Config, ConfigError};
pub use ferrite_obs_macros::probe;
#[cfg(all(feature = "runtime", not(loom)))]
pub use runtime::{Handle, StartError, start};
#[cfg(all(feature = "runtime", not(loom)))]
pub use status::{
    CaughtPanic, CollectorState, CollectorStatus, FacadeState, FacadeStatus, Stage, Status,
};

/// Items used by the code `#[probe]` generates. Not a public API.
#[doc(hidden)]
#[cfg(not(loom))]
pub mod __private {
    pub use crate::call::run::{
        Classify, ErrOnResult, ErrReturn, Instrumented, NeverErr, active, call_once, run,
        run_spanned,
    };
    #[cfg(not(loom))]
    pub use crate::core::site::leaked_site;
    pub use crate::core::site::{Site, SiteMeta};
    pub use tracing;
}
