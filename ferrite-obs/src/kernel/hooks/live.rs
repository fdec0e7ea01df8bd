//! The call path's hooks into the kernel view, built with it: the calling
//! thread's registration, its command's entry of the per-command figures,
//! and its SQE tags. Each is a relaxed load and a branch while the view is
//! not running.

use std::time::Duration;

use super::KernelBreakdown;
#[cfg(ferrite_uring)]
use super::uring;
use super::{commands, threads};

/// What the end of a command's poll needs from its start: where the
/// thread's io_uring submission queue was (with the tokio-uring adapter).
#[derive(Clone, Copy, Debug)]
pub(crate) struct PollWatch {
    /// The SQ tail, and the thread's next SQE tag sequence (SQEs tagged from
    /// then on by a command root nested in this poll stay theirs).
    #[cfg(ferrite_uring)]
    sq_tail: Option<(u32, u64)>,
}

/// As command root `command` begins: gives it its entry of the kernel
/// view's per-command figures.
#[inline(always)]
pub(crate) fn begin_command(command: u64) {
    commands::begin(command);
}

/// Where command `command`'s time went, read as it ends (`busy`: its time
/// running), if the kernel view is running and still holds its figures.
pub(crate) fn command_breakdown(command: u64, busy: Duration) -> Option<KernelBreakdown> {
    commands::figures(command).map(|figures| {
        let off_cpu = Duration::from_nanos(figures.blocked_ns.saturating_add(figures.preempted_ns));
        KernelBreakdown {
            io_requests: figures.io_ops,
            io_wait: Duration::from_nanos(figures.io_ns),
            off_cpu,
            on_cpu: busy.saturating_sub(off_cpu),
        }
    })
}

/// On a thread entering a synchronous command: makes sure the kernel view
/// knows the thread (registered once per load).
#[inline(always)]
pub(crate) fn enter_command() {
    let _ = threads::enter_command();
}

/// On a thread entering a command's poll: [`enter_command`], and the SQ tail
/// of its tokio-uring ring, for [`exit_command`].
#[inline(always)]
pub(crate) fn enter_command_poll() -> PollWatch {
    #[cfg(ferrite_uring)]
    return PollWatch {
        sq_tail: threads::enter_command().and_then(|seq| Some((uring::tail()?, seq))),
    };
    #[cfg(not(ferrite_uring))]
    {
        enter_command();
        PollWatch {}
    }
}

/// At the end of a command's poll: tags the SQEs the poll pushed to the
/// thread's tokio-uring ring as the command's.
#[inline(always)]
pub(crate) fn exit_command(watch: PollWatch, command: u64, kind: u32) {
    #[cfg(ferrite_uring)]
    if let Some((before, since)) = watch.sq_tail {
        uring::pushed_since(before, |user_data| {
            threads::tag_as(user_data, command, kind, since)
        });
    }
    #[cfg(not(ferrite_uring))]
    let _ = (watch, command, kind);
}

/// See [`crate::kernel::tag_sqe`].
#[inline(always)]
pub(crate) fn tag_sqe(user_data: u64) {
    threads::tag(user_data);
}

/// In a forked child of a process whose kernel view is loaded: the view's
/// tables, mapped into both processes, are the parent's, so the child stops
/// using them before it runs anything.
pub(crate) fn forget_in_child() {
    commands::forget_in_child();
    threads::forget_in_child();
}
