//! `ferrite-server`: a Redis-compatible server with ferrite-obs turned on by
//! its configuration file.
//!
//! ```text
//! ferrite-server [--config FILE] [--port PORT] [--data-dir DIR] [--threads N]
//! ```
//!
//! The file's `[server]` section configures the server (bind, port,
//! data_dir, threads, fsync, value_threshold), its `[observability]` section
//! ferrite-obs (`enabled = true` turns it on); `FERRITE_OBS_*` environment
//! variables override the latter. Once listening it prints
//! `ready PORT PID`, then where to look.

use std::process::ExitCode;

use integration::server::{self, ServerConfig};

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("ferrite-server: {message}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> Result<(), String> {
    let mut args = std::env::args().skip(1);
    let mut text = String::new();
    let mut overrides = Vec::new();
    while let Some(arg) = args.next() {
        let mut value = |flag: &str| args.next().ok_or_else(|| format!("{flag} needs a value"));
        match arg.as_str() {
            "--config" => {
                let path = value("--config")?;
                text = std::fs::read_to_string(&path)
                    .map_err(|e| format!("cannot read the configuration {path}: {e}"))?;
            }
            "--port" | "--data-dir" | "--threads" => overrides.push((arg.clone(), value(&arg)?)),
            "--help" | "-h" => {
                println!(
                    "usage: ferrite-server [--config FILE] [--port PORT] [--data-dir DIR] [--threads N]"
                );
                return Ok(());
            }
            other => return Err(format!("unknown argument `{other}` (see --help)")),
        }
    }
    let mut config = ServerConfig::from_toml(&text)?;
    for (flag, value) in overrides {
        match flag.as_str() {
            "--port" => config.bind.set_port(
                value
                    .parse()
                    .map_err(|_| format!("--port {value}: expected a port number"))?,
            ),
            "--data-dir" => config.data_dir = value.into(),
            _ => {
                config.threads = value
                    .parse()
                    .ok()
                    .filter(|n| (1..=256).contains(n))
                    .ok_or_else(|| format!("--threads {value}: expected 1 to 256"))?;
            }
        }
    }
    let observability = ferrite_obs::Config::from_server_toml(&text)
        .and_then(|c| c.with_process_env())
        .map_err(|e| e.to_string())?;
    let handle = ferrite_obs::start(observability).map_err(|e| e.to_string())?;
    let status = handle.status();
    server::run(&config, |addr| {
        println!("ready {} {}", addr.port(), std::process::id());
        if let Some(endpoint) = status.endpoint {
            println!("metrics: curl -s http://{endpoint}/metrics   (also /snapshot, /slowlog, /status)");
        }
        println!("kernel view: {}", status.kernel);
        println!(
            "bpftrace: bpftrace -p {pid} -e 'usdt:/proc/{pid}/exe:ferrite:command_end {{ @us[str(arg1)] = hist(arg2 / 1000); }}'",
            pid = std::process::id()
        );
        use std::io::Write as _;
        let _ = std::io::stdout().flush();
    })
    .map_err(|e| format!("serving failed: {e}"))?;
    drop(handle);
    Ok(())
}
