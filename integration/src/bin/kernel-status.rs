//! Starts ferrite-obs with the kernel view on, makes known `#[probe]` calls
//! and prints what it got, one `key value` per line: `kernel STATE`,
//! `release RELEASE`; when active an `attached HOOK (PROGRAM)` line per
//! program and an `unavailable FIGURE REASON` line per figure the kernel
//! cannot give; when degraded `step STEP`, `cause CAUSE`, `error ERROR`,
//! `fix FIX`; then `calls N sum S`. The kernel tests run it as `nobody` and
//! with a stand-in BTF; the kernel matrix runs it in each booted kernel.

use ferrite_obs::kernel::KernelStatus;
use ferrite_obs::{Config, probe};

#[probe(command, name = "PING", skip_all)]
fn ping(i: u64) -> u64 {
    i + 1
}

fn main() {
    let mut config = Config {
        enabled: true,
        endpoint: None,
        ..Config::default()
    };
    config.ebpf.enabled = true;
    let handle = match ferrite_obs::start(config) {
        Ok(handle) => handle,
        Err(e) => {
            println!("error {e}");
            std::process::exit(1);
        }
    };
    let status = handle.status();
    match &status.kernel {
        KernelStatus::Active {
            kernel,
            attached,
            unavailable,
        } => {
            println!("kernel active");
            println!("release {kernel}");
            for program in attached {
                println!("attached {program}");
            }
            for missing in unavailable {
                println!("unavailable {} {}", missing.figure, missing.reason);
            }
        }
        KernelStatus::Degraded {
            kernel,
            step,
            cause,
            error,
            fix,
        } => {
            println!("kernel degraded");
            println!("release {kernel}");
            println!("step {step}");
            println!("cause {cause}");
            println!("error {error}");
            println!("fix {fix}");
        }
        other => println!("kernel {other}"),
    }
    let sum: u64 = (0..1000).map(ping).sum();
    let calls = ferrite_obs::commands()
        .iter()
        .find(|s| s.name == "PING")
        .map_or(0, |s| s.calls);
    println!("calls {calls} sum {sum}");
    drop(handle);
}
