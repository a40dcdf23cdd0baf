#!/usr/bin/env bash
# Builds one bench binary of the onex-tests crate in release mode and prints its path. The bench
# scripts run that binary directly: under callgrind, with an allocator preloaded, or plainly.
# Usage: scripts/bench-binary.sh NAME    (kafka, postgres: the files in tests/benches/)
set -euo pipefail
cd "$(dirname "$0")/.."
[[ $# == 1 ]] || { echo "usage: $0 NAME" >&2; exit 2; }
# Compiler messages go to stderr as usual; stdout carries cargo's JSON, whose last executable
# is the bench binary.
cargo bench -p onex-tests --bench "$1" --no-run --message-format=json-render-diagnostics \
    | python3 -c 'import json, sys; print([j["executable"] for j in map(json.loads, sys.stdin) if j.get("executable")][-1])'
