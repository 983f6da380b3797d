#!/usr/bin/env bash
# Proves that every tool the build and tests need is found by the same logic install-deps.sh uses
# to decide what to install (scripts/lib/tools.sh), and prints where each was found. CI runs it
# after install-deps.sh: if the detection said "present" for something bindgen or the tests then
# cannot find, this is where it shows, not half an hour into a build.
set -euo pipefail
# shellcheck source=lib/tools.sh
. "$(dirname "$0")/lib/tools.sh"

fail=0
report() { # name, value (empty = missing), fix
  if [ -n "$2" ]; then
    printf '  %-16s %s\n' "$1" "$2"
  else
    printf '  %-16s MISSING: %s\n' "$1" "$3" >&2
    fail=1
  fi
}
echo "tools found:"
bindir=$(find_pg_bindir)
report "postgres bindir" "$bindir" "install postgresql (initdb, pg_ctl, postgres)"
have_pg_clients && clients=yes || clients=""
report "pg clients" "$clients" "install postgresql-client (psql, pgbench, pg_recvlogical)"
report "libclang" "$(find_libclang)" "install libclang-dev, or set LIBCLANG_PATH"
report "clang headers" "$(find_clang_headers)" "install libclang-dev (clang's stddef.h)"
report "chromium" "$(find_chromium)" "install chromium"
have_openssl && ssl=$(command -v openssl) || ssl=""
report "openssl" "$ssl" "install openssl"
exit $fail
