//! The call path's hooks into the kernel view, built without it (not Linux,
//! or no `ebpf` feature): the same signatures, doing nothing.

use std::time::Duration;

use super::KernelBreakdown;

/// What the end of a command's poll needs from its start: nothing here.
#[derive(Clone, Copy, Debug)]
pub(crate) struct PollWatch {}

#[inline(always)]
pub(crate) fn begin_command(_command: u64) {}

pub(crate) fn command_breakdown(_command: u64, _busy: Duration) -> Option<KernelBreakdown> {
    None
}

#[inline(always)]
pub(crate) fn enter_command() {}

#[inline(always)]
pub(crate) fn enter_command_poll() -> PollWatch {
    PollWatch {}
}

#[inline(always)]
pub(crate) fn exit_command(_watch: PollWatch, _command: u64, _kind: u32) {}

#[inline(always)]
pub(crate) fn tag_sqe(_user_data: u64) {}

#[cfg(feature = "runtime")]
pub(crate) fn forget_in_child() {}
