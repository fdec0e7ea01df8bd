//! The fuzz corpora replayed on stable, so every CI run checks what the
//! fuzzers found (`fuzz/corpus/<target>/`), nightly or not.

#![cfg(not(loom))]

use std::path::Path;

fn replay(target: &str, check: fn(&[u8])) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../fuzz/corpus")
        .join(target);
    let entries = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("corpus {} is missing: {e}", dir.display()));
    let mut replayed = 0;
    for entry in entries {
        let path = entry.expect("corpus entry").path();
        let data = std::fs::read(&path).expect("corpus file");
        if std::panic::catch_unwind(|| check(&data)).is_err() {
            panic!("corpus input {} fails", path.display());
        }
        replayed += 1;
    }
    assert!(replayed > 0, "corpus {} is empty", dir.display());
}

#[test]
fn config_corpus() {
    replay("config", ferrite_obs::fuzzing::config);
}

#[test]
fn histogram_corpus() {
    replay("histogram", ferrite_obs::fuzzing::histogram);
}
