//! Arbitrary sequences of records, merges and deltas never panic and keep the
//! histogram's invariants (see `ferrite_obs::fuzzing::histogram`).

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| ferrite_obs::fuzzing::histogram(data));
