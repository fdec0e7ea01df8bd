//! Skipping a test that needs what this machine lacks: loudly, and never
//! where the suite requires the kernel (`FERRITE_REQUIRE_KERNEL=1`, set by
//! the test command), where it fails instead.

/// Skips `test` for `reason`, or fails it when the kernel is required.
pub(crate) fn skip(test: &str, reason: &str) {
    if std::env::var_os("FERRITE_REQUIRE_KERNEL").is_some_and(|v| v == "1") {
        panic!("{test}: {reason}, and FERRITE_REQUIRE_KERNEL=1 requires it");
    }
    eprintln!("SKIPPED {test}: {reason}");
}

/// Whether this process runs as root.
pub(crate) fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}
