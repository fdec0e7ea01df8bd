#!/usr/bin/env bash
# The main job: builds ferrite-server and runs it with ferrite-obs turned on
# (kernel view included, where privileges allow) on a throwaway data
# directory, and prints where to look: the endpoint, the kernel view's
# status, a bpftrace one-liner. Drive it with redis-cli or redis-benchmark.
# Arguments go to ferrite-server (--port N, --threads N, --data-dir DIR).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/deps.sh
cargo build --release --quiet -p integration --bin ferrite-server
data=$(mktemp -d -t ferrite-data.XXXXXX)
config="$data/ferrite.toml"
cat >"$config" <<TOML
[server]
port = 6379
fsync = "everysec"
data_dir = "$data/logs"

[observability]
enabled = true
endpoint = "127.0.0.1:9464"
slow_threshold = "1ms"
TOML
trap 'rm -rf "$data"' EXIT
echo "data: $data (removed on exit); try: redis-cli -p 6379 SET k v; redis-benchmark -p 6379 -t set,get -q"
target/release/ferrite-server --config "$config" "$@"
