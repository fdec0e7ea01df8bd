//! The fuzz corpora replayed on stable, so every CI run checks what the
//! fuzzers found (`fuzz/corpus/<target>/`), nightly or not.

#![cfg(not(loom))]

#[path = "support/corpus.rs"]
mod corpus;

use corpus::replay;

#[test]
fn config_corpus() {
    replay("config", ferrite_obs::fuzzing::config);
}

#[test]
fn histogram_corpus() {
    replay("histogram", ferrite_obs::fuzzing::histogram);
}
