#!/usr/bin/env bash
# Installs what a fresh Debian/Ubuntu machine lacks to build and test deltamv:
# PostgreSQL server binaries (initdb, pg_ctl, postgres), libclang (RocksDB's bindings),
# chromium (the dashboard's browser test) and openssl (certificates for the TLS test).
# Elsewhere it says what to install.
set -euo pipefail

have_pg() {
  command -v pg_config >/dev/null 2>&1 && [ -x "$(pg_config --bindir)/initdb" ] && return 0
  ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1
}
have_clang() {
  ls /usr/lib/llvm-*/lib/libclang*.so* >/dev/null 2>&1 || ldconfig -p 2>/dev/null | grep -q libclang
}

missing=()
have_pg || missing+=(postgresql)
have_clang || missing+=(libclang-dev)
command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 || missing+=(chromium)
command -v openssl >/dev/null 2>&1 || missing+=(openssl)
[ ${#missing[@]} -eq 0 ] && exit 0

if command -v apt-get >/dev/null 2>&1; then
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  echo "installing: ${missing[*]}" >&2
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" postgresql-client >/dev/null
else
  echo "deltamv needs: PostgreSQL server binaries (initdb, pg_ctl; 14 or newer) and libclang." >&2
  echo "missing here: ${missing[*]} - install them with your package manager (e.g. brew install postgresql llvm)." >&2
  exit 1
fi
