#!/usr/bin/env bash
# Installs Debian's Prometheus server and promtool into the checkout (not system-wide), and runs a server for
# looking at a process's metrics by hand.
#
#   scripts/prometheus.sh install   download Debian's `prometheus` package into .prometheus/ and unpack it there
#                                   (`apt-get download` + `dpkg-deb -x`: nothing is installed system-wide)
#   scripts/prometheus.sh path      install if needed, print the directory holding `prometheus` and `promtool`
#   scripts/prometheus.sh start     install if needed, start a server on $ONEX_PROMETHEUS_ADDR scraping
#                                   $ONEX_OBSERVABILITY_ADDR's /metrics every second, wait until it is ready
#   scripts/prometheus.sh stop      stop the server started by `start`
#   scripts/prometheus.sh status    exit 0 when that server runs
#
# The tests do not use `start`: each starts its own server on its own port and data directory
# (tests/support/prometheus.rs), finding the binaries in .prometheus/usr/bin (or $ONEX_PROMETHEUS_BIN_DIR).
# Everything lives in .prometheus/ (gitignored): the .deb, the unpacked tree, and the manual server's
# prometheus.yml, data/, prometheus.pid and prometheus.log.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PROM_DIR="${ONEX_PROMETHEUS_DIR:-$ROOT/.prometheus}"
BIN_DIR="$PROM_DIR/usr/bin"
LISTEN="${ONEX_PROMETHEUS_ADDR:-127.0.0.1:19139}"
TARGET="${ONEX_OBSERVABILITY_ADDR:-127.0.0.1:9464}"
PID_FILE="$PROM_DIR/prometheus.pid"
LOG_FILE="$PROM_DIR/prometheus.log"
START_TIMEOUT_S=30

log() { echo "prometheus.sh: $*" >&2; }

NAME=prometheus
# shellcheck source=lib/daemon.sh
source "$ROOT/scripts/lib/daemon.sh"

install() {
    if [[ -x "$BIN_DIR/prometheus" && -x "$BIN_DIR/promtool" ]]; then
        return 0
    fi
    mkdir -p "$PROM_DIR/debs"
    log "downloading Debian's prometheus package"
    # apt-get download writes into the current directory. A machine that never ran `apt-get update` has no
    # package lists yet: refresh them once and retry.
    if ! (cd "$PROM_DIR/debs" && apt-get download -qq prometheus 2>"$PROM_DIR/download.log"); then
        log "download failed ($(tail -n 1 "$PROM_DIR/download.log")); running apt-get update and retrying"
        apt-get update -qq
        (cd "$PROM_DIR/debs" && apt-get download -qq prometheus)
    fi
    local deb
    deb="$(ls -t "$PROM_DIR"/debs/prometheus_*.deb | head -n1)"
    dpkg-deb -x "$deb" "$PROM_DIR"
    # Only the binaries are used; the package's service files and web assets stay unpacked beside them.
    log "installed $("$BIN_DIR/prometheus" --version 2>&1 | head -n1) in $BIN_DIR"
}

path() {
    install
    echo "$BIN_DIR"
}

# 200 from /-/ready, asked over bash's /dev/tcp (a fresh machine may have no curl).
ready() {
    local status
    status="$(
        exec 2>/dev/null
        exec 3<>"/dev/tcp/${LISTEN%:*}/${LISTEN##*:}" || exit 1
        printf 'GET /-/ready HTTP/1.0\r\nHost: %s\r\n\r\n' "$LISTEN" >&3
        head -n1 <&3
    )" || return 1
    [[ "$status" == *" 200 "* ]]
}

start() {
    if pid="$(running_pid)"; then
        log "already running (pid $pid) on $LISTEN"
        return 0
    fi
    install
    mkdir -p "$PROM_DIR/data"
    cat >"$PROM_DIR/prometheus.yml" <<EOF
global:
  scrape_interval: 1s
  evaluation_interval: 1s
scrape_configs:
  - job_name: onex
    static_configs:
      - targets: ["$TARGET"]
EOF
    log "starting Prometheus on $LISTEN scraping $TARGET (log: $LOG_FILE)"
    nohup "$BIN_DIR/prometheus" \
        --config.file="$PROM_DIR/prometheus.yml" \
        --storage.tsdb.path="$PROM_DIR/data" \
        --web.listen-address="$LISTEN" >"$LOG_FILE" 2>&1 &
    echo $! >"$PID_FILE"
    daemon_wait ready "$START_TIMEOUT_S"
    log "ready (pid $(cat "$PID_FILE")): http://$LISTEN/"
}

stop() {
    daemon_stop TERM 10
}

status() {
    if pid="$(running_pid)"; then
        echo "running (pid $pid) on $LISTEN scraping $TARGET"
    else
        echo "not running"
        return 1
    fi
}

case "${1:-}" in
install) install ;;
path) path ;;
start) start ;;
stop) stop ;;
status) status ;;
*)
    echo "usage: $0 {install|path|start|stop|status}" >&2
    exit 2
    ;;
esac
