#!/usr/bin/env bash
# What a library author pays for `#[probe]`: the fixture libraries depend on
# ferrite-obs at its default features. Their dependency tree must hold none
# of the runtime's or the kernel view's crates, and they must build with no
# clang to run (a `clang` that fails shadows the real one on PATH).
set -euo pipefail
cd "$(dirname "$0")/.."

forbidden='^(aya|aya-obj|ferrite-obs-bpf|tokio|tokio-uring|mio|arc-swap|metrics|toml|hyper|http|axum) '
shadow=$(mktemp -d)
trap 'rm -rf "$shadow"' EXIT
for clang in clang clang-19; do
    printf '#!/bin/sh\necho "library-deps: clang was run ($0 $*): the default features must not need it" >&2\nexit 1\n' \
        >"$shadow/$clang"
    chmod +x "$shadow/$clang"
done

for fixture in fixture-library-2018 fixture-library-2021; do
    tree=$(cargo tree --quiet -p "$fixture" -e normal --prefix none | sort -u)
    if found=$(grep -E "$forbidden" <<<"$tree"); then
        echo "library-deps: $fixture pulls in runtime crates at ferrite-obs's default features:" >&2
        echo "$found" >&2
        exit 1
    fi
    PATH="$shadow:$PATH" CLANG="$shadow/clang" \
        cargo build --quiet -p "$fixture" --target-dir target/library-deps
    echo "library-deps: $fixture: $(wc -l <<<"$tree") crates, none of the runtime's, built without clang"
done
