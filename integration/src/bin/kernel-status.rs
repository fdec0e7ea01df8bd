//! Starts ferrite-obs with the kernel view on, makes known `#[probe]` calls
//! and prints what it got, one `key value` per line: `kernel STATUS`, `step
//! STEP`, `fix FIX`, `calls N`. The unprivileged test runs it as `nobody`.

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
        KernelStatus::Degraded { step, error, fix } => {
            println!("kernel degraded");
            println!("step {step}");
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
