//! Helpers shared by the integration tests.

use std::io::Write;
use std::process::{Command, Stdio};

/// Fails unless `promtool check metrics` accepts `text` (Debian package
/// `prometheus`, installed by `scripts/deps.sh`).
pub(crate) fn promtool_check(text: &str) {
    let mut promtool = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool runs (apt-get install prometheus)");
    promtool
        .stdin
        .take()
        .expect("promtool's stdin")
        .write_all(text.as_bytes())
        .expect("write to promtool");
    let checked = promtool.wait_with_output().expect("promtool finishes");
    assert!(
        checked.status.success(),
        "promtool check metrics: {}{}",
        String::from_utf8_lossy(&checked.stdout),
        String::from_utf8_lossy(&checked.stderr)
    );
}

/// Stops the runtime behind `handle` and waits until it has released
/// everything, from a test that has no tokio runtime of its own.
#[allow(dead_code, reason = "the server tests drive a process, not a Handle")]
pub(crate) fn shutdown(handle: ferrite_obs::Handle) {
    tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap()
        .block_on(handle.shutdown());
}
