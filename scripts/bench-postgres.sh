#!/usr/bin/env bash
# Runs the PostgreSQL benchmark: select-by-primary-key through the connection manager node,
# its pool API, raw deadpool-postgres, raw bb8-postgres and `pgbench -S -M prepared` at 8, 32
# and 128 clients, plus uncontended checkout cost. Creates a scratch database with
# `pgbench -i -s 10`, drops it afterwards (also on failure), writes target/bench/postgres.json
# and prints a markdown table.
#
# Usage: scripts/bench-postgres.sh [--instructions]
#   --instructions: instead of throughput, count instructions per statement under callgrind
#   (node, pool API, deadpool and bb8 at 32 clients, one 2 s round each; several minutes);
#   writes target/bench/postgres-instructions.json. Steady where throughput is noisy.
#   ONEX_BENCH_INSTRUCTIONS (space-separated contenders, default "node pool-api deadpool bb8";
#   e.g. "node node-traced-0.1 node-traced-1.0" for what tracing costs per statement; one round
#   of ONEX_BENCH_SECONDS, default 2 here: longer rounds spread one-time costs thinner).
#   ONEX_BENCH_INSTRUCTIONS_CLIENTS (space-separated client counts, default "32"; e.g. "8 128"
#   to see what grows with concurrency: pools hold at most 50 connections, so at 128 clients
#   most checkouts wait). Rows are named contender@clients. BENCH_CACHE_SIM=1 adds first-level
#   cache misses per statement (scripts/lib/callgrind.sh).
# Environment: ONEX_BENCH_SECONDS (per round, default 3), ONEX_BENCH_ROUNDS (default 11; about
#              20 minutes for everything),
#              ONEX_BENCH_CLIENTS (default 8,32,128), ONEX_BENCH_ONLY (comma-separated:
#              node, node-metrics, node-traced-1.0, node-traced-0.1, node-traced-0.0, adapter, adapter-quiet,
#              pool-api, contract-floor (the node's request and answer on the pool API,
#              without the node: a reference row), deadpool, deadpool-bounded (deadpool with
#              our 30 s wait timeout, a reference row), bb8, pgbench),
#              ONEX_BENCH_SLICE_MS (e.g. 250: the round's contenders take turns of this
#              many ms with every pool open, so the machine's load falls on all alike;
#              not with traced contenders or pgbench),
#              ONEX_BENCH_BINARY (a bench binary built earlier, for A/B runs of two commits
#              on one database; default: build this checkout's),
#              CARGO_TARGET_DIR (cargo's, as usual).
set -euo pipefail

mode=${1:-throughput}
case "$mode" in
    throughput | --instructions) ;;
    *) echo "usage: $0 [--instructions]" >&2; exit 2 ;;
esac

root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
"$root/scripts/postgres.sh" ensure

db="onex_bench_$$"
export ONEX_BENCH_PG_DATABASE="$db"
export ONEX_BENCH_OUT="$root/target/bench/postgres.json"
psql_admin() { psql -h 127.0.0.1 -U postgres -d postgres -qAtc "$1"; }
cleanup() { psql_admin "DROP DATABASE IF EXISTS \"$db\" WITH (FORCE)" || true; }
trap cleanup EXIT

# Build first so compilation does not overlap the measurements.
bin=${ONEX_BENCH_BINARY:-$("$root/scripts/bench-binary.sh" postgres)}

psql_admin "CREATE DATABASE \"$db\""
pgbench -h 127.0.0.1 -U postgres -i -s 10 -q "$db" >/dev/null 2>&1
psql -h 127.0.0.1 -U postgres -d "$db" -qc "VACUUM ANALYZE pgbench_accounts"
# Flush the freshly loaded tables now: otherwise the checkpointer writes them out during the
# first rounds and slows whichever contender runs then.
psql_admin "CHECKPOINT"

if [[ $mode == --instructions ]]; then
    command -v valgrind >/dev/null || { echo "bench-postgres.sh: --instructions needs valgrind (apt-get install -y valgrind)" >&2; exit 1; }
    # shellcheck source=lib/callgrind.sh
    source "$root/scripts/lib/callgrind.sh"
    # valgrind does not create the directory of its output file (a fresh checkout has none).
    mkdir -p "$root/target/bench"
    profiles=()
    read -ra measured <<<"${ONEX_BENCH_INSTRUCTIONS:-node pool-api deadpool bb8}"
    read -ra client_counts <<<"${ONEX_BENCH_INSTRUCTIONS_CLIENTS:-32}"
    for clients in "${client_counts[@]}"; do
        for contender in "${measured[@]}"; do
            out="$root/target/bench/callgrind-postgres-$contender-c$clients.out"
            # Collected inside tokio's task polls: the worker threads' whole work (requests, the
            # connection drivers, parking), not the set-up on the main thread.
            ONEX_BENCH_ONLY=$contender ONEX_BENCH_CLIENTS=$clients ONEX_BENCH_ROUNDS=1 ONEX_BENCH_SECONDS=${ONEX_BENCH_SECONDS:-2} \
                ONEX_BENCH_OUT="$root/target/bench/callgrind-postgres-$contender-c$clients.json" \
                valgrind --tool=callgrind $(callgrind_cache_args) --callgrind-out-file="$out" \
                --toggle-collect='tokio::runtime::task::raw::poll*' \
                "$bin" 2>&1 | grep -E 'tps=' || true
            profiles+=("$contender@$clients=$out")
        done
    done
    python3 "$root/scripts/callgrind-per-op.py" --per-call tokio_postgres::client::InnerClient::send \
        --out "$root/target/bench/postgres-instructions.json" "${profiles[@]}"
    exit 0
fi

"$bin"
