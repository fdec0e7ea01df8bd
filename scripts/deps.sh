#!/usr/bin/env bash
# Installs the system packages ferrite-obs's build, demo and tests need, when
# they are missing. Debian packages; needs root (or sudo) only when something
# is missing.
set -euo pipefail

# command -> Debian package providing it
declare -A NEEDED=(
    [bpftrace]=bpftrace     # attaches to the USDT probes in the tests
    [readelf]=binutils      # lists the stapsdt notes
    [kill]=procps           # stops bpftrace with SIGINT so it flushes
    [promtool]=prometheus   # checks the /metrics exposition
    [clang-19]=clang-19     # compiles the eBPF programs (ferrite-obs-bpf/build.rs)
    [bpftool]=bpftool       # lists loaded programs in the kernel tests
    [redis-cli]=redis-tools # drives ferrite-server in the end-to-end tests
    [setpriv]=util-linux    # runs the unprivileged kernel-view test
    [tmux]=tmux             # drives ferrite-top in its test
)
# file -> Debian package providing it
declare -A NEEDED_FILES=(
    [/usr/include/bpf/bpf_helpers.h]=libbpf-dev       # BPF helper declarations
    [/usr/include/linux/bpf.h]=linux-libc-dev         # kernel UAPI headers
)

missing=()
for command in "${!NEEDED[@]}"; do
    command -v "$command" >/dev/null 2>&1 || missing+=("${NEEDED[$command]}")
done
for file in "${!NEEDED_FILES[@]}"; do
    [ -e "$file" ] || missing+=("${NEEDED_FILES[$file]}")
done
if ! command -v cargo >/dev/null 2>&1; then
    echo "deps: cargo is missing: install a Rust toolchain (rustup, 1.95 or newer)" >&2
    exit 1
fi
[ ${#missing[@]} -eq 0 ] && exit 0

sudo=""
if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1; then
        sudo="sudo"
    else
        echo "deps: missing packages ${missing[*]}, and not root: install them with apt-get" >&2
        exit 1
    fi
fi
echo "deps: installing ${missing[*]}"
$sudo apt-get update -qq
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
