//! What is running, as [`Handle::status`](crate::Handle::status) and the
//! endpoint's `/status` report it.

use std::net::SocketAddr;
use std::time::Duration;

use crate::kernel::KernelStatus;

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
    /// Where the endpoint listens, when it is on.
    pub endpoint: Option<SocketAddr>,
    /// The kernel view: off, active, or degraded and why.
    pub kernel: KernelStatus,
}
