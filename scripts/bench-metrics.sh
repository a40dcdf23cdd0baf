#!/usr/bin/env bash
# Metrics benchmark: nanoseconds per recorded sample (our counter and lock-free histogram against
# prometheus-client's mutex histogram and the `prometheus` crate's, on 1 and 2 threads), and the
# p50/p99/max of a scrape of a registry holding every series the runtime registers, encoded while
# threads record into it, directly and as an HTTP GET of /metrics. Needs no database or broker.
# Builds the bench binary in release mode first so compiling does not overlap the measurements, and
# runs it once. Writes target/bench/metrics.json and prints markdown tables.
# Environment (see tests/benches/metrics.rs):
#   METRICS_BENCH_ROUNDS (7)  METRICS_BENCH_SAMPLES (20000000)  METRICS_BENCH_SCRAPES (300)
#   METRICS_BENCH_LOAD_THREADS (2)  METRICS_BENCH_NODES (9)  METRICS_BENCH_OPERATIONS (3)
#   METRICS_BENCH_ONLY (record,scrape)  METRICS_BENCH_OUT
# A quick run: METRICS_BENCH_ROUNDS=3 METRICS_BENCH_SAMPLES=500000 METRICS_BENCH_SCRAPES=100 scripts/bench-metrics.sh
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"

cargo bench -p onex-tests --bench metrics --no-run
cargo bench -p onex-tests --bench metrics
