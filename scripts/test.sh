#!/usr/bin/env bash
# The whole test suite, starting what it needs: PostgreSQL on 127.0.0.1:5432 and a Kafka-protocol broker
# (tansu) on 127.0.0.1:19092, stopped again when the tests end (a broker this checkout already ran, say
# for the benchmarks, is used and left running). It also installs Prometheus and promtool into .prometheus/
# (the metrics tests start their own server from there), and starts the TLS and SASL endpoints of
# scripts/secure-broker.sh (127.0.0.1:19093-19098, stunnel from Debian), stopped again at the end.
# Extra arguments go to `cargo test`.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/build-deps.sh
scripts/postgres.sh ensure
scripts/prometheus.sh install
scripts/secure-broker.sh start
trap 'scripts/secure-broker.sh stop' EXIT
scripts/broker.sh run cargo test --workspace "$@"
