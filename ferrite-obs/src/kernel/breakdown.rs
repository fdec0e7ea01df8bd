//! A command's time in the kernel, as the kernel view reads it when the
//! command ends.

use std::time::Duration;

/// Where a slow command's time went, as the kernel view measures it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KernelBreakdown {
    /// Its io_uring requests that completed before it ended.
    pub io_requests: u64,
    /// The sum of their latencies (from the start of the batch that
    /// submitted each to the start of the flush that posted its completion;
    /// requests in flight at once overlap, so this can exceed the command's
    /// duration).
    pub io_wait: Duration,
    /// Switched out of the CPU while running the command.
    pub off_cpu: Duration,
    /// On the CPU.
    pub on_cpu: Duration,
}
