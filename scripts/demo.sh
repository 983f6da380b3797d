#!/usr/bin/env bash
# The quick start: a throwaway local PostgreSQL (wal_level=logical) with the seed views, synthetic
# writers (pgbench), the deltamv engine, and its live status every 2 s. Ctrl-C stops and cleans up.
# Options (environment): DEMO_ROWS (initial rows per table, default 100000), DEMO_RATE (writer
# transactions per second, default 200).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/deltamv/target}"
cargo build --quiet
BIN="$CARGO_TARGET_DIR/debug/deltamv"
ROWS="${DEMO_ROWS:-100000}"
RATE="${DEMO_RATE:-200}"

if command -v pg_config >/dev/null 2>&1 && [ -x "$(pg_config --bindir)/initdb" ]; then
  PGBIN="$(pg_config --bindir)"
else
  PGBIN="$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n 1)"
fi
DIR="$(mktemp -d /tmp/deltamv-demo.XXXXXX)"
chmod 755 "$DIR"
AS=()
if [ "$(id -u)" -eq 0 ]; then chown postgres "$DIR"; AS=(runuser -u postgres --); fi
PORT="${DEMO_PORT:-55432}"
pids=()
cleanup() {
  trap - EXIT INT TERM
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  # The engine finishes its batch and exits on SIGTERM; give it 10 s, then kill what is left.
  for _ in $(seq 1 100); do
    alive=0
    for p in "${pids[@]}"; do kill -0 "$p" 2>/dev/null && alive=1; done
    [ "$alive" -eq 0 ] && break
    sleep 0.1
  done
  for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  "${AS[@]}" "$PGBIN/pg_ctl" -D "$DIR/data" -m fast -w stop >/dev/null 2>&1 || true
  rm -rf "$DIR"
}
# Ctrl-C / SIGTERM end the script (a trap that only cleaned up would resume the status loop);
# the EXIT trap then cleans up once.
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

"${AS[@]}" "$PGBIN/initdb" -D "$DIR/data" -U postgres --auth=trust -E UTF8 --locale=C >/dev/null
"${AS[@]}" "$PGBIN/pg_ctl" -D "$DIR/data" -l "$DIR/server.log" -w start \
  -o "-p $PORT -k $DIR -c listen_addresses=127.0.0.1 -c wal_level=logical -c max_replication_slots=10 -c max_wal_senders=10" >/dev/null
export DATABASE_URL="postgresql://postgres@127.0.0.1:$PORT/postgres"
export DELTAMV_STATE_DIR="$DIR/state"
PSQL=(psql -X -q -h 127.0.0.1 -p "$PORT" -U postgres -d postgres -v ON_ERROR_STOP=1)
"${PSQL[@]}" -f schema/sources.sql
echo "loading $ROWS rows into each source table..."
"${PSQL[@]}" <<SQL
INSERT INTO public.agent_runs (agent_id, workspace_id, user_id, status, started_at, runtime_seconds, credits_consumed, error_code)
SELECT md5('agent' || (g % 2000))::uuid, md5('ws' || (g % 2000 % 200))::uuid, md5('user' || (g % 5000))::uuid,
       (ARRAY['running','completed','failed','cancelled'])[1 + g % 4], now() - (g % 40) * interval '1 day' - (g % 1440) * interval '1 minute',
       (g % 997) / 7.0, ((g % 1000) * 0.0137)::numeric(12,4), CASE WHEN g % 4 = 2 THEN 'E' || (g % 5) END
FROM generate_series(1, $ROWS) g;
INSERT INTO analytics.user_activity (workspace_id, user_id, activity_type, created_at)
SELECT md5('ws' || (g % 200))::uuid, md5('user' || (g % 5000))::uuid, 'chat', now() - (g % 100) * interval '1 day' - (g % 1440) * interval '1 minute'
FROM generate_series(1, $ROWS) g;
SQL
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
  echo
  "$BIN" status || true
  echo
  tail -n 3 "$DIR/engine.log" || true
  sleep 2
done
