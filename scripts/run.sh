#!/usr/bin/env bash
# The main job: builds and runs the instrumented demo host with recording on.
# It prints every call site's figures at an interval and how to attach
# bpftrace to it. Arguments go to probe-demo (--seconds N, --threads N,
# --interval-ms N); by default it runs until interrupted.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/deps.sh
cargo build --release --quiet -p integration --bin probe-demo
exec target/release/probe-demo "$@"
