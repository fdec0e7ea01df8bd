//! A fork of a process whose runtime is running.
//!
//! A server that forks (a snapshot child, as Redis's `BGSAVE` makes) has
//! one thread in the child, a copy of the parent's memory, and the parent's
//! shared mappings still shared: the kernel view's tables, mapped into the
//! process, are the same pages in both. The child starts with recording,
//! the slow log and the kernel view off, and never writes the parent's
//! state:
//!
//! - a `pthread_atfork` child handler, registered by the first
//!   [`start`](crate::start), turns recording and the slow log off and puts
//!   private zeroed memory in place of every table the kernel view mapped
//!   (the forking thread may hold their addresses), and marks the
//!   per-thread attribution state as the parent's, so that no thread-local
//!   destructor of the child touches it. Only atomic stores and `mmap`: a
//!   parent thread may have held any lock at the instant of the fork, and
//!   the handler takes none.
//! - the child's copy of the [`Handle`](crate::Handle) knows it is not in
//!   the process that started it: its status says nothing runs, and
//!   `shutdown` returns at once (there is no collector thread to wait for).
//! - [`start`](crate::start) in the child fails with
//!   [`StartError::ForkedChild`](crate::StartError::ForkedChild): the
//!   runtime's locks were copied in whatever state the parent's threads
//!   held them.
//!
//! The kernel programs observe the parent's pid only: the child's own work
//! is not seen, and nothing it does is charged to the parent's commands.
//! A child may turn recording back on ([`set_recording`](crate::set_recording))
//! to count its own calls; the kernel view stays off.

use std::sync::Once;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};

/// The pid of the process whose runtime is running; 0 while none runs. The
/// child handler compares it with the child's own (`getpid` is
/// async-signal-safe).
static RUNNING_IN: AtomicU32 = AtomicU32::new(0);
/// Set in a child forked while a runtime was running.
static FORKED: AtomicBool = AtomicBool::new(false);
static WATCH: Once = Once::new();

/// As the runtime starts in this process: registers the child handler
/// (once per process).
pub(crate) fn running() {
    RUNNING_IN.store(std::process::id(), Ordering::Release);
    WATCH.call_once(|| {
        // SAFETY: registers a handler with no preconditions; a failure
        // (ENOMEM) leaves forks unwatched, as before the first start.
        unsafe { libc::pthread_atfork(None, None, Some(in_child)) };
    });
}

/// As the runtime stops.
pub(crate) fn stopped() {
    RUNNING_IN.store(0, Ordering::Release);
}

/// Whether this process is a child forked while a runtime was running.
pub(crate) fn forked() -> bool {
    FORKED.load(Ordering::Acquire)
}

extern "C" fn in_child() {
    if RUNNING_IN.load(Ordering::Acquire) == 0 {
        return;
    }
    FORKED.store(true, Ordering::Release);
    RUNNING_IN.store(0, Ordering::Release);
    crate::set_recording(false);
    crate::call::slowlog::pause();
    crate::kernel::forget_in_child();
}
