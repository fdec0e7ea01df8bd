#!/bin/sh
# Instructions per call of each call-site case, counted by callgrind: each case
# runs N and 2N calls inside the only function callgrind counts (set-up and
# clock calibration stay outside it), and the difference is divided by N. callgrind does not see inside the vDSO, but the TSC clock
# reads `rdtsc` directly, so these counts include the clock.
set -eu
cd "$(dirname "$0")/.."
N=${N:-200000}
cargo bench -p benches --bench instructions --no-run --quiet 2>/dev/null
BIN=$(ls -t target/release/deps/instructions-* | grep -v '\.d$' | head -n 1)
count() {
    out=$(mktemp)
    valgrind --tool=callgrind --toggle-collect="instructions::measured" --callgrind-out-file="$out" "$BIN" "$1" "$2" >/dev/null 2>&1
    total=$(grep '^summary:' "$out" | awk '{print $2}')
    rm -f "$out"
    echo "$total"
}
printf '| case | instructions per call | over bare |\n|---|---:|---:|\n'
base=""
for case in bare disabled enabled command clock-pair; do
    one=$(count "$case" "$N")
    two=$(count "$case" $((2 * N)))
    per=$(( (two - one) / N ))
    [ -n "$base" ] || base=$per
    printf '| %s | %d | %+d |\n' "$case" "$per" $((per - base))
done
