#!/usr/bin/env bash
# Kafka producer benchmark: raw rdkafka vs the pool vs the node, against the local tansu broker.
# Starts the broker if needed (and stops it again if this script started it), runs the bench
# binary in release mode, writes target/bench/kafka.json and prints a markdown table.
#   KAFKA_BENCH_MESSAGES (1000000)  KAFKA_BENCH_LINGER_MS (pool default)  KAFKA_BENCH_ONLY (comma-separated contender names)
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
started_here=0
if ! scripts/broker.sh status >/dev/null 2>&1; then
    scripts/broker.sh start
    started_here=1
fi
cleanup() {
    if [[ $started_here == 1 ]]; then scripts/broker.sh stop; fi
}
trap cleanup EXIT
cargo bench -p onex-tests --bench kafka
