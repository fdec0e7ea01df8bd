#!/bin/sh
# Call-site benchmark, both builds: probes compiled in, then the compile-time
# off switch (`ferrite-obs/off`). Each build prints its own table with ratios
# to its own bare case. See docs/benchmarks.md.
set -eu
cd "$(dirname "$0")/.."
cargo bench -p benches --bench callsite
cargo bench -p benches --bench callsite --features ferrite-obs/off
