//! The instrumented host programs and end-to-end tests of ferrite-obs.

#[cfg(target_os = "linux")]
pub mod server;
