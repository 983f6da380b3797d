#!/usr/bin/env bash
# The quick start: a throwaway local PostgreSQL (wal_level=logical) with the seed views, synthetic
# writers (pgbench), the deltamv engine, and its live status every 2 s. Ctrl-C stops and cleans up.
# Options (environment): DEMO_ROWS (initial rows per table, default 100000), DEMO_RATE (writer
# transactions per second, default 200).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/deltamv/target}"
# shellcheck source=lib/tools.sh
. scripts/lib/tools.sh
announce_cold_build
cargo build --quiet
BIN="$CARGO_TARGET_DIR/debug/deltamv"
ROWS="${DEMO_ROWS:-100000}"
RATE="${DEMO_RATE:-200}"

PORT="${DEMO_PORT:-55432}"
# shellcheck source=lib/cluster.sh
source scripts/lib/cluster.sh
load_rows "$ROWS"
export DELTAMV_STATE_DIR="$DIR/state"
# Where the engine serves its live dashboard (and /metrics, /healthz).
export DELTAMV_HTTP="${DELTAMV_HTTP:-127.0.0.1:9187}"
if [ "$DELTAMV_HTTP" = off ]; then
  DASHBOARD="(off: DELTAMV_HTTP=off)"
else
  DASHBOARD="http://$DELTAMV_HTTP/"
fi
"$BIN" init
# tokio_postgres logs every server NOTICE at info; keep the engine's own lines readable.
DELTAMV_LOG="${DELTAMV_LOG:-info,tokio_postgres=warn}" "$BIN" run 2>"$DIR/engine.log" &
pids+=($!)
cat > "$DIR/writer.sql" <<'SQL'
\set a random(1, 2000)
\set u random(1, 5000)
\set r random(1, 1000)
INSERT INTO public.agent_runs (agent_id, workspace_id, user_id, status, started_at, runtime_seconds, credits_consumed)
VALUES (md5('agent' || :a)::uuid, md5('ws' || (:a % 200))::uuid, md5('user' || :u)::uuid,
        (ARRAY['running','completed','failed','cancelled'])[1 + :r % 4], now() - :r * interval '1 minute', :r / 3.0, (:r * 0.0137)::numeric(12,4));
INSERT INTO analytics.user_activity (workspace_id, user_id, activity_type, created_at)
VALUES (md5('ws' || (:u % 200))::uuid, md5('user' || :u)::uuid, 'chat', now());
UPDATE public.agent_runs SET status = 'completed' WHERE id = :r * 37;
SQL
"$PGBIN/pgbench" -n -h 127.0.0.1 -p "$PORT" -U postgres -c 2 -R "$RATE" -T 100000 -f "$DIR/writer.sql" postgres >/dev/null 2>&1 &
pids+=($!)
while true; do
  if [ -t 1 ]; then clear; fi
  echo "deltamv demo: $RATE writer transactions/s into $DATABASE_URL (Ctrl-C to stop)"
  echo "live dashboard: $DASHBOARD"
  echo
  "$BIN" status || true
  echo
  tail -n 3 "$DIR/engine.log" || true
  sleep 2
done
