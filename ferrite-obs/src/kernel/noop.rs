//! The kernel view where there is none: not Linux, or built without the
//! `ebpf` feature. Same signatures as the Linux backend; the status says why.

use super::{KernelSnapshot, KernelStatus};
use crate::config::Config;

#[derive(Debug)]
pub(crate) struct Kernel {
    status: KernelStatus,
}

impl Kernel {
    pub(crate) fn load(config: &Config) -> Kernel {
        let status = if !config.ebpf.enabled {
            KernelStatus::Off
        } else if cfg!(target_os = "linux") {
            KernelStatus::Unsupported {
                reason: "ferrite-obs was built without its `ebpf` feature: enable it (`features = [\"ebpf\"]`) for the kernel view".to_owned(),
            }
        } else {
            KernelStatus::Unsupported {
                reason: "the kernel view needs Linux (eBPF tracepoints)".to_owned(),
            }
        };
        Kernel { status }
    }

    pub(crate) fn status(&self) -> KernelStatus {
        self.status.clone()
    }

    pub(crate) fn read(
        &mut self,
        _name: &dyn Fn(u32) -> Option<super::CommandName>,
    ) -> Option<KernelSnapshot> {
        None
    }

    pub(crate) fn unload(&mut self) {}
}
