#!/usr/bin/env bash
# ferrite-server under redis-benchmark: the bare build (ferrite-obs/off,
# observability disabled), the instrumented build with the kernel view off,
# and with it on (needs root), back to back in rounds on the same workload.
# Prints requests/s and p50/p99 per case and their ratios to bare.
# ROUNDS=3 REQUESTS=200000 CLIENTS=50 by default. See docs/benchmarks.md.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/deps.sh
ROUNDS=${ROUNDS:-3}
REQUESTS=${REQUESTS:-200000}
CLIENTS=${CLIENTS:-50}
PORT=${PORT:-6390}

cargo build --release --quiet -p integration --bin ferrite-server
cargo build --release --quiet -p integration --bin ferrite-server \
    --features ferrite-obs/off --target-dir target/bare
INSTRUMENTED=target/release/ferrite-server
BARE=target/bare/release/ferrite-server

work=$(mktemp -d -t ferrite-bench.XXXXXX)
trap 'pkill -f "$work" 2>/dev/null || true; rm -rf "$work"' EXIT

# run CASE BINARY OBS_ENABLED EBPF_ENABLED [full]: one redis-benchmark run,
# CSV lines prefixed with the case; with `full`, redis-benchmark's whole
# report (latency distributions included) instead.
run() {
    local case=$1 binary=$2 obs=$3 ebpf=$4 mode=${5:-csv}
    rm -rf "$work/data"
    cat >"$work/$case.toml" <<TOML
[server]
port = $PORT
threads = 2
fsync = "everysec"
data_dir = "$work/data"

[observability]
enabled = $obs
endpoint = "off"

[observability.ebpf]
enabled = $ebpf
TOML
    "$binary" --config "$work/$case.toml" >"$work/$case.out" 2>&1 &
    local pid=$!
    for _ in $(seq 100); do
        grep -q '^ready' "$work/$case.out" && break
        sleep 0.05
    done
    if [ "$ebpf" = true ] && ! grep -q '^kernel view: active' "$work/$case.out"; then
        echo "warning: $case: $(grep '^kernel view' "$work/$case.out")" >&2
    fi
    if [ "$mode" = full ]; then
        redis-benchmark -p "$PORT" -t set,get -n "$REQUESTS" -c "$CLIENTS" -r 100000 \
            2>/dev/null | tr '\r' '\n'
    else
        redis-benchmark -p "$PORT" -t set,get -n "$REQUESTS" -c "$CLIENTS" -r 100000 \
            --csv 2>/dev/null | tail -n +2 | sed "s/^/$case,/"
    fi
    kill "$pid"
    wait "$pid" 2>/dev/null || true
}

# Each round runs the three cases in a rotated order (so none is always
# first or last), its lines prefixed with the round.
results="$work/results.csv"
cases=("bare $BARE false false" "ebpf-off $INSTRUMENTED true false"
    "ebpf-on $INSTRUMENTED true true")
for round in $(seq "$ROUNDS"); do
    echo "round $round/$ROUNDS" >&2
    for i in 0 1 2; do
        # shellcheck disable=SC2086 # the case's words are its arguments
        run ${cases[$(((round + i) % 3))]} | sed "s/^/$round,/" >>"$results"
    done
done

# round,case,"test","rps","avg","min","p50","p95","p99","max". The ratios
# to bare are the medians of each round's ratio to that round's bare run:
# the machine's drift between rounds cancels out of them.
python3 - "$results" <<'PY'
import csv, statistics, sys
rows = {}
for rnd, case, test, rps, avg, mn, p50, p95, p99, mx in csv.reader(open(sys.argv[1])):
    rows[(case, test, rnd)] = (float(rps), float(p50), float(p99))
rounds = sorted({key[2] for key in rows})
print("| case | test | requests/s (median) | x bare | p50 ms | x bare | p99 ms | x bare |")
print("|---|---|---:|---:|---:|---:|---:|---:|")
for test in ("SET", "GET"):
    for case in ("bare", "ebpf-off", "ebpf-on"):
        paired = [(rows[(case, test, r)], rows[("bare", test, r)]) for r in rounds
                  if (case, test, r) in rows and ("bare", test, r) in rows]
        if not paired:
            continue
        median = lambda i: statistics.median(run[i] for run, _ in paired)
        ratio = lambda i: statistics.median(run[i] / bare[i] for run, bare in paired)
        print(f"| {case} | {test} | {median(0):,.0f} | {ratio(0):.3f} | {median(1):.3f} | {ratio(1):.2f} | {median(2):.3f} | {ratio(2):.2f} |")
print("\nratios: the median over rounds of each round's figure over its bare run's")
print("targets: instrumented >= 0.98 of bare throughput with eBPF off, >= 0.95 with eBPF on")
PY

# One more run of each, whole reports: their latency distributions, side by
# side.
run bare "$BARE" false false full >"$work/bare.report"
run ebpf-off "$INSTRUMENTED" true false full >"$work/ebpf-off.report"
run ebpf-on "$INSTRUMENTED" true true full >"$work/ebpf-on.report"
python3 - "$work" <<'PY'
import re, sys
cases = ["bare", "ebpf-off", "ebpf-on"]
def distribution(path, test):
    """{upper bound ms: share of requests} from redis-benchmark's
    'Cumulative distribution of latencies' of one test."""
    text = open(path).read()
    section = text.split(f"====== {test} ======", 1)[-1]
    section = section.split("Cumulative distribution of latencies:", 1)[-1]
    section = section.split("Summary:", 1)[0]
    points, previous = [], 0.0
    for pct, ms in re.findall(r"([0-9.]+)% <= ([0-9.]+) milliseconds", section):
        pct = float(pct)
        points.append((float(ms), pct - previous))
        previous = pct
    return points
for test in ("SET", "GET"):
    dists = {case: dict(distribution(f"{sys.argv[1]}/{case}.report", test)) for case in cases}
    bounds = sorted({b for d in dists.values() for b in d})
    # Merge the fine buckets into at most 16 rows.
    step = max(1, len(bounds) // 16 + (len(bounds) % 16 > 0))
    rows = []
    for i in range(0, len(bounds), step):
        chunk = bounds[i:i + step]
        rows.append((chunk[-1], {c: sum(dists[c].get(b, 0.0) for b in chunk) for c in cases}))
    print(f"\n{test}: share of requests by latency (ms), one # per 4 %")
    print(f"{'<= ms':>8}  " + "".join(f"{c:<33}" for c in cases))
    for bound, shares in rows:
        cells = "".join(f"{'#' * round(shares[c] / 4):<25}{shares[c]:5.1f}%  " for c in cases)
        print(f"{bound:>8.3f}  {cells}")
PY
