#!/usr/bin/env bash
# Installs the system packages the build needs (OpenSSL headers for rdkafka and postgres-openssl, a C toolchain
# for librdkafka), only where they are missing.
set -euo pipefail
missing=()
for pkg in libssl-dev pkg-config zlib1g-dev build-essential python3-pip; do
  dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
done
# python3-pip is only needed when no pip is on PATH (pyenv machines bring their own).
if command -v pip3 >/dev/null || command -v pip >/dev/null; then
  missing=("${missing[@]/python3-pip}")
fi
missing=($(printf '%s\n' "${missing[@]}" | grep -v '^$' || true))
if [ ${#missing[@]} -gt 0 ]; then
  echo "build-deps.sh: installing ${missing[*]}" >&2
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi
