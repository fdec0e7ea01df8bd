#!/usr/bin/env bash
# The whole test suite, as CI runs it: formatting, clippy with -D warnings,
# the loom models, a library author's build (default features), two
# semver-incompatible copies of ferrite-obs in one binary, the lowest
# declared dependency versions, every test of the workspace
# (kernel-facing tests included and required) and the trybuild UI tests.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/deps.sh

echo "== cargo fmt --check"
cargo fmt --all --check

echo "== cargo clippy --workspace --all-targets -- -D warnings"
cargo clippy --workspace --all-targets --quiet -- -D warnings

echo "== loom models (--cfg loom, release)"
RUSTFLAGS="--cfg loom" cargo test --quiet -p ferrite-obs --release --lib \
    --target-dir target/loom loom

echo "== a library author's build: default features, no runtime crates, no clang"
scripts/library-deps.sh

echo "== two semver-incompatible copies of ferrite-obs in one binary, traced by bpftrace"
scripts/two-copies.sh

echo "== the lowest declared dependency versions"
scripts/min-versions.sh

echo "== cargo package: every file each crate needs"
for crate in ferrite-obs-macros ferrite-obs-bpf ferrite-obs; do
    files=$(cargo package --quiet -p "$crate" --no-verify --list --allow-dirty)
    for needed in src/lib.rs Cargo.toml; do
        grep -qx "$needed" <<<"$files" || { echo "cargo package -p $crate lacks $needed" >&2; exit 1; }
    done
done

echo "== cargo build -p ferrite-top (run by the end-to-end tests)"
cargo build --quiet -p ferrite-top

echo "== cargo test --workspace"
# The USDT tests attach real bpftrace: as root here, so a skip is a failure.
log=$(mktemp)
trap 'rm -f "$log"' EXIT
status=0
FERRITE_REQUIRE_KERNEL=1 cargo test --workspace 2>&1 | tee "$log" || status=$?

echo "== kernel matrix: Debian 6.1 and 6.12 booted under qemu, and the host kernel"
scripts/kernel-matrix.sh 6.1 6.12 || status=$?

# One total over every test binary (each prints its own `test result:` line).
awk '/^test result:/ { passed += $4; failed += $6 }
     END { printf "tests: %d passed, %d failed\n", passed, failed }' "$log"
exit "$status"
