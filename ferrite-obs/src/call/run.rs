//! What a `#[probe]` call does at run time: [`run`] around a plain call,
//! [`Instrumented`] around an async function's future.
//!
//! A call does nothing beyond two loads and two branches (the gate word that
//! holds the recording switch and its probes' semaphores, and `tracing`'s
//! level) unless recording is on, a tracer is attached to one of its probes,
//! or a `tracing` subscriber wants its span. When active, a call takes a
//! clock reading at entry and one at exit (per poll for futures), fires the
//! USDT probes, keeps the thread's current command for command roots, and
//! writes the calling thread's shard; nothing allocates, locks or makes a
//! system call after a thread's first call at a site.

use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;
use std::task::{Context, Poll};

use tracing::Span;

use crate::call::probes::{Gate, backend};
use crate::call::slowlog;
use crate::core::clock::{self, Stamp};
use crate::core::command::{self, Previous, Scope};
use crate::core::registry::REGISTRY;
use crate::core::shard::Shard;
use crate::core::site::Site;
use crate::core::thread_slot;
use crate::kernel;

/// Decides whether a call's return value is an error (`#[probe(err)]`).
pub trait Classify<T> {
    /// True when `output` counts as an error.
    fn is_err(output: &T) -> bool;
}

/// No return value is an error (the default).
#[derive(Debug)]
pub enum NeverErr {}

/// An `Err` return value is an error (`#[probe(err)]`).
#[derive(Debug)]
pub enum ErrOnResult {}

impl<T> Classify<T> for NeverErr {
    #[inline(always)]
    fn is_err(_: &T) -> bool {
        false
    }
}

#[diagnostic::on_unimplemented(
    message = "`#[probe(err)]` needs a function that returns `Result`, not `{Self}`",
    label = "this function does not return a `Result`",
    note = "remove `err` from `#[probe(...)]`, or return a `Result`"
)]
/// Implemented by return types that `#[probe(err)]` understands.
pub trait ErrReturn {
    /// True for the error variant.
    fn is_err_value(&self) -> bool;
}

impl<T, E> ErrReturn for Result<T, E> {
    #[inline(always)]
    fn is_err_value(&self) -> bool {
        self.is_err()
    }
}

impl<T: ErrReturn> Classify<T> for ErrOnResult {
    #[inline(always)]
    fn is_err(output: &T) -> bool {
        output.is_err_value()
    }
}

/// The common start of an active call: command bookkeeping and entry probes.
/// Returns the id of the command this call starts, or 0 for a call that is
/// not a command root (its probes then report the thread's current command,
/// read only when they fire).
#[inline(always)]
fn begin(site: &'static Site, is_command: bool) -> u64 {
    let meta = site.meta;
    let command = if is_command {
        let id = command::next_id();
        kernel::begin_command(id);
        backend::command_start(id, meta.c_name.as_ptr());
        id
    } else {
        0
    };
    backend::probe_enter(meta.c_name.as_ptr(), command);
    command
}

/// The common end of an active call: exit probes, and a command root's id
/// released (after its slow-log entry has read its kernel figures).
#[inline(always)]
fn end(site: &'static Site, is_command: bool, command: u64, elapsed_ns: u64, error: bool) {
    let meta = site.meta;
    backend::probe_exit(meta.c_name.as_ptr(), command, elapsed_ns, error);
    if is_command {
        backend::command_end(command, meta.c_name.as_ptr(), elapsed_ns, error);
        command::release(command);
    }
}

#[inline(always)]
fn local_shard(site: &'static Site) -> (&'static Shard, bool) {
    let slot = thread_slot::current();
    (site.shard(slot, &REGISTRY), slot.exclusive())
}

/// Whether a synchronous call at a site must go through [`run`]; the rest
/// of `#[probe]`'s fast-path test is `tracing::level_enabled!`, evaluated in
/// the generated code. `is_command` is the site's own (constant) flag.
#[inline(always)]
pub fn active(is_command: bool) -> bool {
    backend::gate().wanted(is_command)
}

/// One call of a synchronous `#[probe]` function that is recorded or traced:
/// a [`SyncCall`] guard times it, fires the probes and writes the shard when
/// the body returns, or, dropped while the body unwinds, counts a panic.
///
/// Out of line and generic over the body, so that the instrumented function
/// itself is the fast-path test plus the body, with a frame no larger than
/// the bare function's.
///
/// `COMMAND` is the site's `#[probe(command)]` flag, a constant, so that
/// the path of a plain site carries no command bookkeeping at all.
#[inline(never)]
pub fn run<R, C: Classify<R>, const COMMAND: bool>(
    site: &'static Site,
    body: impl FnOnce() -> R,
) -> R {
    // One reading of the gate decides the whole call.
    let gate = backend::gate();
    if !COMMAND && gate.recording_only() {
        return record(site, body, C::is_err);
    }
    if !gate.wanted(COMMAND) {
        return body();
    }
    let call = SyncCall::<COMMAND>::begin(site, gate);
    let output = body();
    call.finish(C::is_err(&output));
    output
}

/// A plain call while recording is on and no tracer is attached to its
/// probes, the common case in production: the shard and the clock, nothing
/// else. A tracer that attaches during the call sees the calls that begin
/// after it.
#[inline(always)]
fn record<R>(site: &'static Site, body: impl FnOnce() -> R, is_err: fn(&R) -> bool) -> R {
    let (shard, exclusive) = local_shard(site);
    shard.record_start(exclusive);
    let call = Recorded {
        shard,
        exclusive,
        start: clock::now(),
    };
    let output = body();
    let error = is_err(&output);
    // Ended here, so not again by `drop`, which is left to the unwinding of
    // a body that panicked.
    let call = std::mem::ManuallyDrop::new(call);
    call.shard
        .record_end(call.start.elapsed(), error, call.exclusive);
    output
}

/// A call on [`record`]'s path: counts a panic if the body unwinds.
struct Recorded {
    shard: &'static Shard,
    exclusive: bool,
    start: Stamp,
}

impl Drop for Recorded {
    fn drop(&mut self) {
        self.shard.record_abandoned(true, self.exclusive);
    }
}

/// Calls `body` once: the inactive path of a synchronous site. Through a
/// generic `FnOnce`, so a body that mutates what it captured (a `&mut`
/// argument) needs no `mut` binding.
#[inline(always)]
pub fn call_once<R>(body: impl FnOnce() -> R) -> R {
    body()
}

/// [`run`] inside `span`, for a call whose span level a subscriber wants.
#[inline(never)]
pub fn run_spanned<R, C: Classify<R>, const COMMAND: bool>(
    site: &'static Site,
    span: Span,
    body: impl FnOnce() -> R,
) -> R {
    // Exited after `run` has recorded the call's end.
    let _entered = span.entered();
    run::<R, C, COMMAND>(site, body)
}

/// The state of one active synchronous call: small and flat, built in place.
/// `COMMAND`: whether the site is a command root.
struct SyncCall<const COMMAND: bool> {
    site: &'static Site,
    /// The calling thread's shard while recording.
    shard: Option<&'static Shard>,
    exclusive: bool,
    timed: bool,
    /// The command this call started, or 0 (its probes report the current).
    command: u64,
    /// The current command before this command root began.
    restore: Previous,
    start: Stamp,
}

impl<const COMMAND: bool> SyncCall<COMMAND> {
    #[inline(always)]
    fn begin(site: &'static Site, gate: Gate) -> Self {
        let is_command = COMMAND;
        let recording = gate.recording();
        let command = begin(site, is_command);
        let (shard, exclusive) = if recording {
            let (shard, exclusive) = local_shard(site);
            shard.record_start(exclusive);
            (Some(shard), exclusive)
        } else {
            (None, false)
        };
        if is_command {
            kernel::enter_command();
        }
        // After the rest of the call's bookkeeping, so that it is not timed.
        let timed = recording || gate.exit_traced(is_command);
        let start = if timed { clock::now() } else { Stamp::ZERO };
        // The command is current only inside its timed span, so that the
        // off-CPU time the kernel charges to it lies within its duration.
        // After `local_shard`, which registers the site and so gives it its
        // kind.
        let restore = if is_command {
            command::enter(command, site.kind())
        } else {
            Previous::default()
        };
        SyncCall {
            site,
            shard,
            exclusive,
            timed,
            command,
            restore,
            start,
        }
    }
}

impl<const COMMAND: bool> SyncCall<COMMAND> {
    /// Ends a call whose body returned; `error`: its value counts as one.
    #[inline(always)]
    fn finish(self, error: bool) {
        // Ended here, so not again by `drop`, which is left to the unwinding
        // of a body that panicked.
        std::mem::ManuallyDrop::new(self).end(error, false);
    }

    #[inline(always)]
    fn end(&self, error: bool, panicked: bool) {
        if COMMAND {
            command::restore(self.restore);
        }
        let elapsed = if self.timed { self.start.elapsed() } else { 0 };
        if let Some(shard) = self.shard {
            if panicked {
                shard.record_abandoned(true, self.exclusive);
            } else {
                shard.record_end(elapsed, error, self.exclusive);
            }
        }
        if COMMAND && self.timed && slowlog::is_slow(elapsed) {
            let name = self.site.meta.name;
            slowlog::log(self.command, name, elapsed, elapsed, error || panicked);
        }
        end(self.site, COMMAND, self.command, elapsed, error || panicked);
    }
}

impl<const COMMAND: bool> Drop for SyncCall<COMMAND> {
    /// Reached only when the body unwinds: [`SyncCall::finish`] ends a call
    /// that returned without dropping it.
    fn drop(&mut self) {
        self.end(true, true);
    }
}

pin_project_lite::pin_project! {
    /// The future of an async `#[probe]` function: times every poll and the
    /// whole call, from first poll to completion.
    #[must_use = "futures do nothing unless polled"]
    pub struct Instrumented<F, C> {
        site: &'static Site,
        state: State,
        #[pin]
        inner: F,
        classify: PhantomData<fn() -> C>,
    }

    impl<F, C> PinnedDrop for Instrumented<F, C> {
        fn drop(this: Pin<&mut Self>) {
            let this = this.project();
            if let State::Running(running) = this.state {
                // Dropped before completion: cancelled, or unwinding from a
                // panic in a poll.
                let panicked = std::thread::panicking();
                if running.recorded {
                    let (shard, exclusive) = local_shard(this.site);
                    shard.record_abandoned(panicked, exclusive);
                }
                let elapsed = running
                    .start
                    .map_or(0, Stamp::elapsed);
                if running.is_command && running.start.is_some() && slowlog::is_slow(elapsed) {
                    let name = this.site.meta.name;
                    slowlog::log(running.command, name, elapsed, running.busy_ns, true);
                }
                end(this.site, running.is_command, running.command, elapsed, true);
            }
        }
    }
}

#[derive(Debug)]
enum State {
    NotStarted,
    Running(Running),
    Done,
}

#[derive(Debug)]
struct Running {
    command: u64,
    /// The command's kind, for a command root (see `Site::kind`).
    kind: u32,
    is_command: bool,
    start: Option<Stamp>,
    /// The call's start was counted, so its end must be too.
    recorded: bool,
    /// Time inside this call's polls so far (while recording).
    busy_ns: u64,
}

impl<F, C> Instrumented<F, C> {
    /// Wraps the body of an async function at `site`.
    #[inline(always)]
    pub fn new(site: &'static Site, inner: F) -> Self {
        Instrumented {
            site,
            state: State::NotStarted,
            inner,
            classify: PhantomData,
        }
    }
}

impl<F: Future, C: Classify<F::Output>> Future for Instrumented<F, C> {
    type Output = F::Output;

    #[inline]
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = self.project();
        let site = *this.site;
        // The first poll's start is the call's start: one clock reading.
        let mut first_poll_start = None;
        if let State::NotStarted = this.state {
            let gate = backend::gate();
            let recording = gate.recording();
            *this.state = if gate.wanted(site.meta.is_command) {
                // Resolved now: the end may come in a drop outside any
                // command's poll.
                let command = match begin(site, site.meta.is_command) {
                    0 => command::current_raw(),
                    own => own,
                };
                if recording {
                    let (shard, exclusive) = local_shard(site);
                    shard.record_start(exclusive);
                }
                let start = (recording || gate.exit_traced(site.meta.is_command)).then(clock::now);
                first_poll_start = start;
                State::Running(Running {
                    command,
                    // After `local_shard`, which registers the site; only a
                    // command root's kind is ever read.
                    kind: if site.meta.is_command { site.kind() } else { 0 },
                    is_command: site.meta.is_command,
                    start,
                    recorded: recording,
                    busy_ns: 0,
                })
            } else {
                State::Done
            };
        }
        let State::Running(running) = this.state else {
            return this.inner.poll(cx);
        };

        let scope = running.is_command.then(|| {
            let watch = kernel::enter_command_poll();
            (Scope::enter(running.command, running.kind), watch)
        });
        // Busy time is measured only while recording; a tracer alone needs
        // just the call's start and end.
        let poll_start = match running.start {
            Some(start) if running.recorded => {
                Some(first_poll_start.unwrap_or_else(|| start.now_like()))
            }
            _ => None,
        };
        let poll = this.inner.poll(cx);
        if let Some((scope, watch)) = scope {
            kernel::exit_command(watch, running.command, running.kind);
            drop(scope);
        }
        let poll_end = match running.start {
            Some(start) if poll_start.is_some() || poll.is_ready() => Some(start.now_like()),
            _ => None,
        };

        let shard = running.recorded.then(|| local_shard(site));
        if let (Some((shard, exclusive)), Some(from), Some(to)) = (shard, poll_start, poll_end) {
            let busy = from.elapsed_ns(to);
            running.busy_ns = running.busy_ns.saturating_add(busy);
            shard.record_poll(busy, exclusive);
        }
        if let Poll::Ready(output) = &poll {
            let elapsed = match (running.start, poll_end) {
                (Some(start), Some(to)) => start.elapsed_ns(to),
                _ => 0,
            };
            let error = C::is_err(output);
            if let Some((shard, exclusive)) = shard {
                shard.record_end(elapsed, error, exclusive);
            }
            if running.is_command && running.start.is_some() && slowlog::is_slow(elapsed) {
                slowlog::log(
                    running.command,
                    site.meta.name,
                    elapsed,
                    running.busy_ns,
                    error,
                );
            }
            end(site, running.is_command, running.command, elapsed, error);
            *this.state = State::Done;
        }
        poll
    }
}
