#!/usr/bin/env bash
# Circuit-breaker benchmark: closed-path overhead of our breaker, failsafe and recloser (1 and 2
# threads), publish throughput through the breaker against the event bus alone, and the outbox
# relay draining queued events to the bus. Ensures PostgreSQL runs (scripts/postgres.sh ensure)
# and starts the broker if needed (stopping it again only if this script started it), builds
# the bench binary in release mode first so compiling does not overlap the measurements, and
# runs it once. Writes target/bench/circuit_breaker.json and prints markdown tables.
# Environment (see tests/benches/circuit_breaker.rs):
#   CB_BENCH_ROUNDS (7)  CB_BENCH_PUBLISH_ROUNDS (9)  CB_BENCH_IO_ROUNDS (3)  CB_BENCH_CALLS (3000000)
#   CB_BENCH_EVENTS (100000)
#   CB_BENCH_IN_FLIGHT (10000)  CB_BENCH_RELAY_EVENTS (100000)  CB_BENCH_RELAY_BATCH (1000)
#   CB_BENCH_RELAY_SECONDS (30)  CB_BENCH_ONLY (overhead,publish,relay)  CB_BENCH_OUT
# A quick run: CB_BENCH_ROUNDS=3 CB_BENCH_PUBLISH_ROUNDS=1 CB_BENCH_IO_ROUNDS=1 CB_BENCH_CALLS=200000 CB_BENCH_EVENTS=10000
#   CB_BENCH_RELAY_EVENTS=5000 CB_BENCH_RELAY_SECONDS=5 scripts/bench-circuit-breaker.sh
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
# The rest runs with the broker up (this script again, inside `broker.sh run`).
if [[ -z "${ONEX_BROKER_RUN:-}" ]]; then
    ONEX_BROKER_RUN=1 exec scripts/broker.sh run "$0" "$@"
fi

cargo bench -p onex-tests --bench circuit_breaker --no-run

"$root/scripts/postgres.sh" ensure

cargo bench -p onex-tests --bench circuit_breaker
