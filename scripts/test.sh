#!/usr/bin/env bash
# The whole test suite, starting what it needs: PostgreSQL on 127.0.0.1:5432 and a Kafka-protocol broker
# (tansu) on 127.0.0.1:19092, stopped again when the tests end (a broker this checkout already ran, say
# for the benchmarks, is used and left running). It also installs Prometheus and promtool into .prometheus/
# (the metrics tests start their own server from there). Extra arguments go to `cargo test`.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/build-deps.sh
scripts/postgres.sh ensure
scripts/prometheus.sh install
scripts/broker.sh run cargo test --workspace "$@"
