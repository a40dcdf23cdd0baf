#!/usr/bin/env bash
# Metrics benchmark: nanoseconds per recorded sample (our counter and lock-free histogram against
# prometheus-client's mutex histogram and the `prometheus` crate's, on 1 and 2 threads), and the
# p50/p99/max of a scrape of a registry holding every series the runtime registers (each service
# registered through its own with_metrics), encoded while threads call a node and a breaker,
# directly and as an HTTP GET of /metrics. Ensures PostgreSQL runs (scripts/postgres.sh ensure)
# and starts the broker if needed (stopping it again only if this script started it), builds the
# bench binary in release mode first so compiling does not overlap the measurements, and runs it
# once. Writes target/bench/metrics.json and prints markdown tables.
# Environment (see tests/benches/metrics.rs):
#   METRICS_BENCH_ROUNDS (7)  METRICS_BENCH_SAMPLES (20000000)  METRICS_BENCH_SCRAPES (300)
#   METRICS_BENCH_LOAD_THREADS (2)  METRICS_BENCH_ONLY (record,scrape)  METRICS_BENCH_OUT
#   METRICS_BENCH_PRINT (set: print the scraped exposition)
# A quick run: METRICS_BENCH_ROUNDS=3 METRICS_BENCH_SAMPLES=2000000 METRICS_BENCH_SCRAPES=100 scripts/bench-metrics.sh
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
# The rest runs with the broker up (this script again, inside `broker.sh run`).
if [[ -z "${ONEX_BROKER_RUN:-}" ]]; then
    ONEX_BROKER_RUN=1 exec scripts/broker.sh run "$0" "$@"
fi

cargo bench -p onex-tests --bench metrics --no-run

"$root/scripts/postgres.sh" ensure

cargo bench -p onex-tests --bench metrics
