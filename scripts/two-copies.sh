#!/usr/bin/env bash
# Two semver-incompatible copies of ferrite-obs in one binary link, and both
# work. The script copies ferrite-obs, ferrite-obs-macros and ferrite-obs-bpf
# to target/two-copies/next at the next incompatible version (0.2.0 after
# 0.1.x, 2.0.0 after 1.x), builds fixtures/two-copies (a binary on two
# libraries, fixture-cache on the workspace's ferrite-obs and fixture-store
# on the copy), and checks:
# - the binary holds one gate and one semaphore per probe, which the stapsdt
#   notes of every copy's probe_enter sites name (bcc and bpftrace raise the
#   semaphore of a probe's first note only);
# - each copy's registry holds exactly the calls made through it, and the
#   recording switch, set through one copy, is on for both;
# - bpftrace attached to usdt:BIN:ferrite:probe_enter counts exactly the calls
#   made through both copies.
# Needs root, bpftrace, nm and readelf (scripts/deps.sh installs them); builds
# offline. Fails, naming what is missing, rather than skip.
set -euo pipefail
cd "$(dirname "$0")/.."

fail() {
    echo "two-copies: $*" >&2
    exit 1
}

for tool in cargo bpftrace nm readelf mkfifo; do
    command -v "$tool" >/dev/null 2>&1 ||
        fail "$tool is missing (scripts/deps.sh installs the system tools)"
done
[ "$(id -u)" -eq 0 ] || fail "attaching bpftrace to the probes needs root (running as uid $(id -u))"

# The workspace's version and the next incompatible one.
current=$(sed -nE '/^\[workspace\.package\]/,/^\[/ s/^version = "([0-9]+\.[0-9]+\.[0-9]+)"$/\1/p' Cargo.toml)
[ -n "$current" ] || fail "no version = \"X.Y.Z\" in Cargo.toml's [workspace.package]"
IFS=. read -r major minor _ <<<"$current"
if [ "$major" -eq 0 ]; then
    next="0.$((minor + 1)).0"
else
    next="$((major + 1)).0.0"
fi

work=target/two-copies
mkdir -p "$work"
host="" tracer="" stage=""
cleanup() {
    [ -z "$host" ] || kill "$host" 2>/dev/null || true
    [ -z "$tracer" ] || kill "$tracer" 2>/dev/null || true
    [ -z "$stage" ] || rm -rf "$stage"
}
trap cleanup EXIT

# The copy: the three crates as they are, under a workspace manifest that is
# the root's with the next version and only them as members. It replaces the
# previous copy only when some file differs, so that a warm build stays warm.
stage=$(mktemp -d "$work/stage.XXXXXX")
cp -a ferrite-obs ferrite-obs-macros ferrite-obs-bpf "$stage/"
awk '
    /^members = \[/ { print "members = [\"ferrite-obs\", \"ferrite-obs-macros\", \"ferrite-obs-bpf\"]"; skip = 1; next }
    skip { if ($0 ~ /^\]/) skip = 0; next }
    /^exclude = / { next }
    { print }
' Cargo.toml | sed "s/version = \"${current//./\\.}\"/version = \"$next\"/" >"$stage/Cargo.toml"
grep -q "^version = \"$next\"" "$stage/Cargo.toml" || fail "could not set version $next in the copy's manifest"
if ! diff -rq "$stage" "$work/next" >/dev/null 2>&1; then
    rm -rf "$work/next"
    mv "$stage" "$work/next"
fi

# The fixture builds the versions the workspace locks (its own Cargo.lock,
# ignored by git, starts as a copy of the workspace's), in three profiles:
# where each copy's objects are linked as they are (dev, release), and with
# fat LTO (release-lto), where they are assembled as one.
fixture=fixtures/two-copies
cp Cargo.lock "$fixture/Cargo.lock"
profiles=(dev release release-lto)
for profile in "${profiles[@]}"; do
    cargo build --offline --quiet --manifest-path "$fixture/Cargo.toml" --target-dir "$work/build" \
        --profile "$profile" ||
        fail "building $fixture (profile $profile) with ferrite-obs $current and $next failed" \
            "(offline: the workspace's crates must be fetched first, e.g. by building it)"
done

# What each copy's registry holds after the fixture's calls: through
# fixture-cache (the workspace's copy) 3 cache_lookup and 2 CACHE_GET, each
# of which makes one cache_lookup; through fixture-store (the next copy) 4
# store_lookup and 3 STORE_GET. The recording switch, set through the
# workspace's copy, is on for both.
figures='site current CACHE_GET fixture_cache calls=2 errors=0
site current cache_lookup fixture_cache calls=5 errors=0
site next STORE_GET fixture_store calls=3 errors=0
site next store_lookup fixture_store calls=7 errors=0
done'
# And bpftrace's count of probe_enter per site: 17 firings, 7 through the
# workspace's copy and 10 through the next.
enters='@enter[CACHE_GET]: 2
@enter[STORE_GET]: 3
@enter[cache_lookup]: 5
@enter[store_lookup]: 7'

# Waits up to `seconds` for a line matching `pattern` in `file`.
wait_for() {
    local file=$1 pattern=$2 seconds=$3 what=$4
    for _ in $(seq $((seconds * 10))); do
        grep -q "$pattern" "$file" 2>/dev/null && return 0
        sleep 0.1
    done
    fail "$what within $seconds s; $file: $(cat "$file" 2>/dev/null)"
}

# Compares the fixture's `output` with the calls it made.
check_host() {
    local label=$1 tracer_line=$2 output=$3
    diff <(printf 'recording current=true next=true\n%s\n%s\n' "$tracer_line" "$figures") \
        <(grep -v '^ready ' <<<"$output") >&2 ||
        fail "$label: the fixture's output differs from the calls it made (diff: want, got)"
}

check() {
    local profile=$1 bin symbols name count semaphore notes pid status
    bin=$(realpath "$work/build/${profile/#dev/debug}/fixture-two-copies")

    # Symbols: one definition of the gate and of each semaphore in it,
    # whichever copy it came from (the stand-alone semaphores of the probes
    # the fixture never fires are collected away), and every probe_enter
    # note names that one semaphore.
    symbols=$(nm "$bin")
    for name in gate_v1 gate_v1_probe_enter gate_v1_probe_exit gate_v1_command_start \
        gate_v1_command_end; do
        count=$(awk -v name="__ferrite_obs_$name" '$3 == name' <<<"$symbols" | wc -l)
        [ "$count" -eq 1 ] || fail "$profile: $bin defines __ferrite_obs_$name $count times, not once"
    done
    semaphore=$(awk '$3 == "__ferrite_obs_gate_v1_probe_enter" { print $1 }' <<<"$symbols")
    notes=$(readelf -n --wide "$bin" |
        awk '/Name: / { name = $2 } /Semaphore: / && name == "probe_enter" { sub(/^0x/, "", $NF); print $NF }')
    [ "$(sort -u <<<"$notes")" = "$semaphore" ] ||
        fail "$profile: the probe_enter notes name semaphores [$(sort -u <<<"$notes" | tr '\n' ' ')], not the one at $semaphore"

    check_host "$profile, without a tracer" "tracer current=false next=false" "$("$bin")"

    # With bpftrace attached to one probe, which spans both copies' sites.
    rm -f "$work/go"
    mkfifo "$work/go"
    "$bin" --wait-for-tracer <"$work/go" >"$work/host.out" &
    host=$!
    exec 3>"$work/go"
    wait_for "$work/host.out" '^ready ' 30 "$profile: the fixture did not start"
    pid=$(sed -n 's/^ready //p' "$work/host.out")
    bpftrace -p "$pid" -e "
BEGIN { printf(\"tracing\n\"); }
usdt:$bin:ferrite:probe_enter { @enter[str(arg0)] = count(); }
" >"$work/bpftrace.out" 2>"$work/bpftrace.err" &
    tracer=$!
    # BEGIN runs once every location of the probe is attached.
    wait_for "$work/bpftrace.out" '^tracing$' 60 \
        "$profile: bpftrace did not attach (stderr: $(cat "$work/bpftrace.err"))"
    echo go >&3
    exec 3>&-
    status=0
    wait "$host" || status=$?
    host=""
    [ "$status" -eq 0 ] || fail "$profile: the fixture exited with $status under bpftrace: $(cat "$work/host.out")"
    check_host "$profile, under bpftrace" "tracer current=true next=true" "$(cat "$work/host.out")"
    kill -INT "$tracer"
    wait "$tracer" || true
    tracer=""
    diff <(echo "$enters") <(grep '^@enter\[' "$work/bpftrace.out" | LC_ALL=C sort) >&2 ||
        fail "$profile: bpftrace counted other probe_enter firings than the calls made (diff: want, got)"

    echo "two-copies: $profile: ferrite-obs $current and $next in one binary, one gate;" \
        "its $(wc -l <<<"$notes") probe_enter notes all name the semaphore at 0x$semaphore;" \
        "each registry holds its own calls (cache_lookup 5, CACHE_GET 2; store_lookup 7, STORE_GET 3);" \
        "bpftrace counted 17 probe_enter firings, 7 through $current and 10 through $next"
}

for profile in "${profiles[@]}"; do
    check "$profile"
done
