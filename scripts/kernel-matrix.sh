#!/usr/bin/env bash
# The kernel view on the kernels operators run: boots Debian's 6.1 and 6.12
# cloud kernels under qemu (virtme-ng, software emulation) with this
# machine's filesystem shared, runs the kernel tests inside each as root,
# runs the same tests on the host kernel, and prints one line per kernel:
# its release, pass or FAIL, and the programs the loader chose for it.
# Exits non-zero if any kernel does not attribute exactly.
#
#   scripts/kernel-matrix.sh                 # 6.1, 6.12 and the host
#   scripts/kernel-matrix.sh 6.12            # one Debian series (and the host)
#   FERRITE_MATRIX_HOST=0 scripts/kernel-matrix.sh 6.1   # guests only
#
# Needs root (the tests load eBPF; apt-get installs what is missing). It
# builds the test binaries on the host first (`cargo test --no-run`) and
# never inside a guest. Everything it fetches is cached under
# target/kernel-matrix: Debian's kernel packages, extracted; a venv with
# virtme-ng; virtiofsd (cloud kernels have no 9p, so the host filesystem
# is shared over virtio-fs). This machine's KVM cannot run stock kernels,
# hence --disable-kvm (TCG).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
work=$root/target/kernel-matrix
mkdir -p "$work"

series=("$@")
[ ${#series[@]} -gt 0 ] || series=(6.1 6.12)
run_host=${FERRITE_MATRIX_HOST:-1}

# Every test of integration/tests/kernel.rs runs in each kernel: the
# attribution ones (per-(command, opcode) counts with another process's
# requests running and not counted, tokio-uring, off-CPU time, every program
# and map gone after shutdown) and the status ones (unprivileged, no BTF, no
# io_uring tracepoints). A name given in FERRITE_MATRIX_TESTS (space
# separated) narrows it.
read -r -a guest_tests <<< "${FERRITE_MATRIX_TESTS:-}"

say() { echo "== kernel-matrix: $*" >&2; }

if [ "$(id -u)" != 0 ]; then
    echo "kernel-matrix: run as root (the tests load eBPF programs, apt-get installs the tools)" >&2
    exit 2
fi

# ---- tools

missing=()
command -v qemu-system-x86_64 >/dev/null || missing+=(qemu-system-x86)
command -v udevadm >/dev/null || missing+=(udev)
command -v modprobe >/dev/null || missing+=(kmod)
[ -x /bin/busybox ] || missing+=(busybox-static)
python3 -c 'import ensurepip' 2>/dev/null || missing+=(python3-venv)
command -v bpftool >/dev/null || missing+=(bpftool)
if [ ! -x "$work/virtiofsd/bin/virtiofsd" ]; then
    # virtiofsd links against them (bookworm does not package virtiofsd).
    [ -e /usr/include/seccomp.h ] || missing+=(libseccomp-dev)
    [ -e /usr/include/cap-ng.h ] || missing+=(libcap-ng-dev)
fi
if [ ${#missing[@]} -gt 0 ]; then
    say "installing ${missing[*]}"
    apt-get update -q >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
        "${missing[@]}" >&2
fi

venv=$work/venv
if [ ! -x "$venv/bin/vng" ]; then
    say "installing virtme-ng into $venv"
    python3 -m venv "$venv"
    "$venv/bin/pip" install -q virtme-ng >&2
fi

virtiofsd=$work/virtiofsd
if [ ! -x "$virtiofsd/bin/virtiofsd" ]; then
    say "building virtiofsd into $virtiofsd (about 1.5 min)"
    CARGO_TARGET_DIR=$work/virtiofsd-build \
        cargo install --quiet --locked virtiofsd --root "$virtiofsd" >&2
fi
export PATH=$venv/bin:$virtiofsd/bin:$PATH

# ---- kernels

# Debian series this machine's apt sources lack, and the suite that has
# them: apt reads that suite's lists from a directory of its own under
# $work, leaving the machine's sources alone.
declare -A SUITE=([5.10]=bullseye)

# apt options for series $1 (none for the machine's own suites).
apt_options() {
    local suite=${SUITE[$1]:-} dir
    [ -n "$suite" ] || return 0
    dir=$work/apt-$suite
    if [ ! -f "$dir/sources.list" ]; then
        mkdir -p "$dir/lists/partial" "$dir/cache/archives/partial"
        local keyring=/usr/share/keyrings/debian-archive-keyring.gpg
        printf 'deb [signed-by=%s] http://deb.debian.org/debian %s main\n' "$keyring" "$suite" \
            > "$dir/sources.list.tmp"
        printf 'deb [signed-by=%s] http://deb.debian.org/debian-security %s-security main\n' \
            "$keyring" "$suite" >> "$dir/sources.list.tmp"
        mv "$dir/sources.list.tmp" "$dir/sources.list"
    fi
    local options=(-o "Dir::Etc::SourceList=$dir/sources.list" -o Dir::Etc::SourceParts=/nonexistent
        -o "Dir::State::Lists=$dir/lists" -o "Dir::Cache=$dir/cache")
    [ -n "$(ls "$dir/lists" 2>/dev/null | grep -v partial)" ] || apt-get "${options[@]}" update -q >&2
    printf '%s\n' "${options[@]}"
}

# The cloud kernel packages of Debian series $1 (6.1, 6.12, ...) that apt
# knows, newest first.
packages_of() {
    local pattern options
    mapfile -t options < <(apt_options "$1")
    pattern="^linux-image-${1//./\\.}\.[0-9+a-z.-]*-cloud-amd64-unsigned "
    apt-cache "${options[@]}" search --names-only "linux-image-$1" | grep -E "$pattern" \
        | cut -d' ' -f1 | sort -rV
}

# The newest package of series $1 that downloads (a suite's security
# archive can list packages it no longer serves), extracted under
# $work/kernels once; prints the tree's directory.
kernel_tree() {
    local package tree options
    mapfile -t options < <(apt_options "$1")
    for package in $(packages_of "$1"); do
        tree=$work/kernels/$package
        if [ -d "$tree/boot" ]; then
            echo "$tree"
            return 0
        fi
        mkdir -p "$work/debs" "$work/kernels"
        if ! ls "$work/debs/${package}"_*.deb >/dev/null 2>&1; then
            (cd "$work/debs" && apt-get "${options[@]}" download -q "$package" >&2) || continue
        fi
        rm -rf "$tree.tmp"
        dpkg -x "$(ls "$work/debs/${package}"_*.deb | head -n1)" "$tree.tmp" || return 1
        mv "$tree.tmp" "$tree"
        echo "$tree"
        return 0
    done
    echo "kernel-matrix: no linux-image-$1.*-cloud-amd64-unsigned package downloads (apt-get update?)" >&2
    return 1
}

# ---- test binaries, built here

say "building the kernel tests (cargo test --no-run)"
tests_bin=$(cargo test --quiet -p integration --test kernel --no-run --message-format=json \
    | python3 -c '
import json, sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m.get("executable") \
            and m["target"]["name"] == "kernel" and m["profile"]["test"]:
        print(m["executable"])')
status_bin=$root/target/debug/kernel-status
[ -x "$tests_bin" ] && [ -x "$status_bin" ] || {
    echo "kernel-matrix: no test binary ($tests_bin) or kernel-status ($status_bin)" >&2
    exit 2
}

# What runs in each kernel: kernel-status, then the tests, each result on
# a line of its own that the host picks out of the console output.
guest=$work/guest.sh
cat > "$guest" <<'EOF'
#!/bin/sh
# Run inside a booted kernel by scripts/kernel-matrix.sh.
tests_bin=$1; status_bin=$2; shift 2
mountpoint -q /sys/kernel/tracing || mount -t tracefs tracefs /sys/kernel/tracing
mountpoint -q /sys/kernel/debug || mount -t debugfs debugfs /sys/kernel/debug
ip link set lo up 2>/dev/null
cd /tmp
echo "MATRIX release $(uname -r)"
"$status_bin" | sed 's/^/MATRIX status /'
FERRITE_REQUIRE_KERNEL=1 "$tests_bin" --exact "$@" 2>&1
echo "MATRIX tests-rc $?"
EOF
chmod +x "$guest"

# Prints the summary line of a run whose output is in $1 (its release
# taken from the output; $2 the label when the output has none).
summarise() {
    local log=$1 label=$2 release rc programs verdict
    release=$(sed -n 's/^MATRIX release //p' "$log" | tr -d '\r' | head -n1)
    rc=$(sed -n 's/^MATRIX tests-rc //p' "$log" | tr -d '\r' | head -n1)
    programs=$(sed -n 's/^MATRIX status attached //p' "$log" | tr -d '\r' \
        | sed -E 's/^tp_btf\/([a-z_]+) \((fo_[a-z_]+)\)$/\2@\1/; s/^io_uring\/.*\((fo_[a-z_]+)\)$/\1/' \
        | paste -sd' ')
    if [ "$rc" = 0 ] && grep -q '^MATRIX status kernel active' "$log"; then
        verdict=pass
    else
        verdict=FAIL
    fi
    printf '%-32s %-4s %s\n' "${release:-$label}" "$verdict" "${programs:-(no programs)}"
    sed -n 's/^MATRIX status unavailable /    unavailable: /p' "$log"
    [ "$verdict" = pass ]
}

results=$work/results.txt
: > "$results"
failed=0
started=$SECONDS

for s in "${series[@]}"; do
    tree=$(kernel_tree "$s") || { failed=1; continue; }
    package=${tree##*/}
    vmlinuz=$(ls "$tree"/boot/vmlinuz-* | head -n1)
    log=$work/${package}.log
    say "booting ${vmlinuz##*/} ($package)"
    t0=$SECONDS
    # qemu reopens its stdout at offset 0: pipe it, never redirect it. A
    # boot that hangs is cut off (a run takes under 2 minutes).
    timeout 900 vng --disable-kvm --cpus 2 -m 2G --run "$vmlinuz" \
        --exec "$guest $tests_bin $status_bin ${guest_tests[*]}" 2>&1 | tee "$log" >&2 || true
    summarise "$log" "$package" | tee -a "$results" || failed=1
    echo "    ($((SECONDS - t0)) s)" | tee -a "$results"
done

if [ "$run_host" = 1 ]; then
    log=$work/host.log
    say "host kernel $(uname -r)"
    t0=$SECONDS
    (
        echo "MATRIX release $(uname -r)"
        "$status_bin" | sed 's/^/MATRIX status /'
        rc=0
        FERRITE_REQUIRE_KERNEL=1 "$tests_bin" --exact "${guest_tests[@]}" 2>&1 || rc=$?
        echo "MATRIX tests-rc $rc"
    ) | tee "$log" >&2
    summarise "$log" host | tee -a "$results" || failed=1
    echo "    ($((SECONDS - t0)) s)" | tee -a "$results"
fi

echo "kernel-matrix: $((SECONDS - started)) s in all; $( [ $failed = 0 ] && echo 'every kernel attributes exactly' || echo 'FAILED')"
exit "$failed"
