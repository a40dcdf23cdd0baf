#!/usr/bin/env bash
# Makes sure PostgreSQL serves on 127.0.0.1:5432 with trust auth for local TCP, as the tests expect.
# Usage: scripts/postgres.sh ensure
set -euo pipefail

ready() { pg_isready -q -h 127.0.0.1 -p 5432 2>/dev/null; }

cluster_version() { ls /etc/postgresql 2>/dev/null | sort -V | tail -n 1; }

install_server() {
  echo "postgres.sh: PostgreSQL is not installed; installing it from Debian's packages" >&2
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null
  local v hba
  v=$(cluster_version)
  hba=/etc/postgresql/$v/main/pg_hba.conf
  # The tests connect as postgres over loopback TCP without a password, like the machines they run on.
  sed -i -E 's/^(host\s+all\s+all\s+(127\.0\.0\.1\/32|::1\/128)\s+)\S+/\1trust/' "$hba"
  sed -i -E 's/^(local\s+all\s+all\s+)\S+/\1trust/' "$hba"
}

ensure() {
  if ready; then return 0; fi
  command -v pg_ctlcluster >/dev/null && [ -n "$(cluster_version)" ] || install_server
  pg_ctlcluster --skip-systemctl-redirect "$(cluster_version)" main start
  for _ in $(seq 1 50); do ready && break; sleep 0.2; done
  ready || { echo "postgres.sh: PostgreSQL did not come up on 127.0.0.1:5432" >&2; exit 1; }
  psql -h 127.0.0.1 -U postgres -tAc "SELECT 1 FROM pg_database WHERE datname = 'test'" | grep -q 1 \
    || psql -h 127.0.0.1 -U postgres -qc "CREATE DATABASE test"
}

case "${1:-ensure}" in
  ensure) ensure ;;
  *) echo "usage: $0 ensure" >&2; exit 2 ;;
esac
