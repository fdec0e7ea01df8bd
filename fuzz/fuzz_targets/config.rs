//! Arbitrary bytes as a server configuration file: parsing never panics, and
//! whatever parses round-trips through TOML unchanged.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| ferrite_obs::fuzzing::config(data));
