#!/usr/bin/env bash
# Initial load, side by side on one throwaway cluster and dataset: PostgreSQL's
# CREATE MATERIALIZED VIEW of the seed views, then `deltamv init` of the same views.
# Usage: scripts/compare-init.sh [ROWS per table, default 200000] (debug build unless PROFILE=release)
# COMPARE_COPY=1 also times, after init, each COPY init issued, again, through psql to /dev/null,
# with and without its ORDER BY: what PostgreSQL alone spends handing init the rows.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/deltamv/target}"
PROFILE="${PROFILE:-debug}"
if [ "$PROFILE" = release ]; then cargo build --quiet --release; else cargo build --quiet; fi
BIN="$CARGO_TARGET_DIR/$PROFILE/deltamv"
ROWS="${1:-200000}"
PORT="${COMPARE_PORT:-55433}"
# shellcheck source=lib/cluster.sh
source scripts/lib/cluster.sh
load_rows "$ROWS"
PSQL=(psql -X -q -h 127.0.0.1 -p "$PORT" -U postgres -d postgres -v ON_ERROR_STOP=1)
"${PSQL[@]}" -c "VACUUM ANALYZE"
now() { date +%s.%N; }
t0=$(now)
for f in schema/views/*.sql; do
  sed -e 's/analytics\.mv_/analytics.pg_mv_/g' -e 's/idx_mv_/idx_pg_mv_/g' "$f" | "${PSQL[@]}" >/dev/null
done
t1=$(now)
export DELTAMV_STATE_DIR="$DIR/state"
if [ -n "${COMPARE_COPY:-}" ]; then
  "${PSQL[@]}" -c "ALTER SYSTEM SET log_statement = 'all'" -c "SELECT pg_reload_conf()" >/dev/null
fi
"$BIN" init 2>"$DIR/init.log" || { cat "$DIR/init.log"; exit 1; }
[ -n "${COMPARE_HOLD:-}" ] && sleep "$COMPARE_HOLD"
t2=$(now)
pg=$(awk "BEGIN { printf \"%.2f\", $t1 - $t0 }")
dm=$(awk "BEGIN { printf \"%.2f\", $t2 - $t1 }")
echo "rows per table: $ROWS  build: $PROFILE"
echo "CREATE MATERIALIZED VIEW (5 views + indexes): ${pg} s"
echo "deltamv init (slot, snapshot, state, targets): ${dm} s"
echo "ratio deltamv/postgres: $(awk "BEGIN { printf \"%.2f\", $dm / $pg }")"
"$BIN" reconcile | grep differing
if [ -n "${COMPARE_COPY:-}" ]; then
  "${PSQL[@]}" -c "ALTER SYSTEM SET log_statement = 'none'" -c "SELECT pg_reload_conf()" >/dev/null
  grep -o 'COPY (SELECT .* TO STDOUT (FORMAT binary)' "$DIR/server.log" | sort -u |
    while read -r copy; do
      for order in with without; do
        sql="$copy"
        [ "$order" = without ] && sql=$(sed -E 's/ ORDER BY [^)]*\)/)/' <<<"$copy")
        t0=$(now)
        "${PSQL[@]}" -c "$sql" >/dev/null
        echo "COPY ${order} ORDER BY: $(awk "BEGIN { printf \"%.2f\", $(now) - $t0 }") s: ${sql:0:90}..."
      done
    done
fi
