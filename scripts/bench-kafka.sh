#!/usr/bin/env bash
# Kafka producer benchmark: raw rdkafka vs the pool vs the node, against the local tansu broker.
# Starts the broker if needed (and stops it again if this script started it), runs the bench
# binary in release mode, writes target/bench/kafka.json and prints a markdown table.
#   KAFKA_BENCH_MESSAGES (1000000)  KAFKA_BENCH_LINGER_MS (pool default)  KAFKA_BENCH_ONLY (comma-separated contender names)
#   --instructions: instead of throughput, count instructions per message under callgrind (raw
#   rdkafka, the pool and the node, 100,000 messages each with and without idempotence; several
#   minutes); writes target/bench/kafka-instructions.json. Steady where throughput is noisy.
set -euo pipefail
mode=${1:-throughput}
case "$mode" in
    throughput | --instructions) ;;
    *) echo "usage: $0 [--instructions]" >&2; exit 2 ;;
esac
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
if [[ $mode == --instructions ]]; then
    command -v valgrind >/dev/null || { echo "bench-kafka.sh: --instructions needs valgrind (apt-get install -y valgrind)" >&2; exit 1; }
    bin=$(cargo bench -p onex-tests --bench kafka --no-run --message-format=json 2>/dev/null \
        | python3 -c 'import json, sys; print([j["executable"] for j in map(json.loads, sys.stdin) if j.get("executable")][-1])')
    mkdir -p "$ROOT/target/bench"
    profiles=()
    for contender in raw-rdkafka pool node-send-batch; do
        out="$ROOT/target/bench/callgrind-kafka-$contender.out"
        # The whole process: librdkafka's threads are client work too.
        KAFKA_BENCH_ONLY=$contender KAFKA_BENCH_MESSAGES=100000 KAFKA_BENCH_ROUNDS=1 \
            KAFKA_BENCH_OUT="$ROOT/target/bench/callgrind-kafka-$contender.json" \
            valgrind --tool=callgrind --callgrind-out-file="$out" "$bin" 2>&1 | grep -E '^round' || true
        profiles+=("$contender=$out")
    done
    python3 "$ROOT/scripts/callgrind-per-op.py" --per-call rd_kafka_producev \
        --out "$ROOT/target/bench/kafka-instructions.json" "${profiles[@]}"
    exit 0
fi
cargo bench -p onex-tests --bench kafka
