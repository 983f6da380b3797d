#!/usr/bin/env bash
# Installs what a fresh Debian/Ubuntu machine lacks to build and test deltamv:
# PostgreSQL server and client programs (initdb, pg_ctl, postgres, psql, pgbench, pg_recvlogical),
# libclang with clang's headers (RocksDB's bindings), chromium (the dashboard's browser test) and
# openssl (certificates for the TLS test). Detection lives in scripts/lib/tools.sh, the same logic
# scripts/check-tools.sh runs in CI after this. Elsewhere it says what to install.
set -euo pipefail
# shellcheck source=lib/tools.sh
. "$(dirname "$0")/lib/tools.sh"

mapfile -t missing < <(missing_packages)
[ ${#missing[@]} -eq 0 ] && exit 0

if command -v apt-get >/dev/null 2>&1; then
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  echo "installing: ${missing[*]}" >&2
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
else
  echo "deltamv needs: PostgreSQL server and client programs (14 or newer), libclang with its headers," >&2
  echo "chromium and openssl. Missing here: ${missing[*]} - install them with your package manager" >&2
  echo "(e.g. brew install postgresql llvm chromium openssl), or set LIBCLANG_PATH to libclang's directory." >&2
  exit 1
fi
