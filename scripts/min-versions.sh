#!/usr/bin/env bash
# Builds ferrite-obs, every feature on, against the lowest version of each of
# its dependencies that the workspace declares: fixtures/min-versions has a
# lockfile of its own that pins exactly those. Fails when a declared version
# and the pinned one differ (declare the real minimum, or re-pin with
# `cargo update -p NAME --precise VERSION` there), or when the build fails.
set -euo pipefail
cd "$(dirname "$0")/.."

fixture=fixtures/min-versions
status=0
for name in arc-swap libc metrics pin-project-lite quanta serde thiserror tokio \
    tokio-uring toml tracing aya aya-obj; do
    declared=$(sed -nE "s/^$name = (\{ version = )?\"=?([0-9.]+)\".*/\2/p" Cargo.toml)
    pinned=$(awk -v n="$name" '$0 == "name = \"" n "\"" { getline; gsub(/"|\+.*/, "", $3); print $3 }' \
        "$fixture/Cargo.lock")
    if [ -z "$declared" ] || ! grep -qx "$declared" <<<"$pinned"; then
        echo "min-versions: $name is declared as '${declared:-?}' but $fixture/Cargo.lock pins '$(echo $pinned)'" >&2
        status=1
    fi
done
[ "$status" -eq 0 ] || exit 1

cargo check --quiet --locked --manifest-path "$fixture/Cargo.toml" --target-dir target/min-versions
echo "min-versions: ferrite-obs builds against the lowest declared versions"
