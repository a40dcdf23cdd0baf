#!/usr/bin/env bash
# Runs the PostgreSQL benchmark: select-by-primary-key through the connection manager node,
# its pool API, raw deadpool-postgres, raw bb8-postgres and `pgbench -S -M prepared` at 8, 32
# and 128 clients, plus uncontended checkout cost. Creates a scratch database with
# `pgbench -i -s 10`, drops it afterwards (also on failure), writes target/bench/postgres.json
# and prints a markdown table.
#
# Usage: scripts/bench-postgres.sh
# Environment: ONEX_BENCH_SECONDS (per round, default 2), ONEX_BENCH_ROUNDS (default 5),
#              ONEX_BENCH_CLIENTS (default 8,32,128), ONEX_BENCH_ONLY (comma-separated:
#              node, pool-api, deadpool, bb8, pgbench),
#              CARGO_TARGET_DIR (cargo's, as usual).
set -euo pipefail

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
cargo bench -p onex-tests --bench postgres --no-run

psql_admin "CREATE DATABASE \"$db\""
pgbench -h 127.0.0.1 -U postgres -i -s 10 -q "$db" >/dev/null 2>&1
psql -h 127.0.0.1 -U postgres -d "$db" -qc "VACUUM ANALYZE pgbench_accounts"
# Flush the freshly loaded tables now: otherwise the checkpointer writes them out during the
# first rounds and slows whichever contender runs then.
psql_admin "CHECKPOINT"

cargo bench -p onex-tests --bench postgres
