//! Arbitrary bytes as one ring-buffer record (`struct fo_event`): decoding
//! never panics, accepts exactly the well-formed records and gives them back
//! byte for byte, and names the problem otherwise (see
//! `ferrite_obs_bpf::fuzzing::ring_record`).

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| ferrite_obs_bpf::fuzzing::ring_record(data));
