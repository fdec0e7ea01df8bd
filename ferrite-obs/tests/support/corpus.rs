//! Replaying a fuzz corpus (`fuzz/corpus/<target>/`) through the fuzz
//! target's check, on stable: shared by the crates whose targets they are.

use std::path::Path;

/// Runs `check` on every input of corpus `target`; fails on the first input
/// that fails it, and when the corpus is missing or empty.
pub(crate) fn replay(target: &str, check: fn(&[u8])) {
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
