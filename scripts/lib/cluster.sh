# Shared by the scripts: a throwaway PostgreSQL cluster (wal_level=logical) in a temp dir, run as
# the postgres OS user when root, stopped and removed on exit; and synthetic source data.
# Callers set PORT, and may append background pids to `pids` (terminated before the cluster).
if command -v pg_config >/dev/null 2>&1 && [ -x "$(pg_config --bindir)/initdb" ]; then
  PGBIN="$(pg_config --bindir)"
else
  PGBIN="$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n 1)"
fi
DIR="$(mktemp -d /tmp/deltamv-demo.XXXXXX)"
chmod 755 "$DIR"
AS=()
if [ "$(id -u)" -eq 0 ]; then chown postgres "$DIR"; AS=(runuser -u postgres --); fi
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

# load_rows N: N rows into each source table, spread over 40 (runs) and 100 (activity) days.
load_rows() {
  local rows="$1"
  PSQL=(psql -X -q -h 127.0.0.1 -p "$PORT" -U postgres -d postgres -v ON_ERROR_STOP=1)
  "${PSQL[@]}" -f schema/sources.sql
  echo "loading $rows rows into each source table..."
  "${PSQL[@]}" <<SQL
INSERT INTO public.agent_runs (agent_id, workspace_id, user_id, status, started_at, runtime_seconds, credits_consumed, error_code)
SELECT md5('agent' || (g % 2000))::uuid, md5('ws' || (g % 2000 % 200))::uuid, md5('user' || (g % 5000))::uuid,
       (ARRAY['running','completed','failed','cancelled'])[1 + g % 4], now() - (g % 40) * interval '1 day' - (g % 1440) * interval '1 minute',
       (g % 997) / 7.0, ((g % 1000) * 0.0137)::numeric(12,4), CASE WHEN g % 4 = 2 THEN 'E' || (g % 5) END
FROM generate_series(1, $rows) g;
INSERT INTO analytics.user_activity (workspace_id, user_id, activity_type, created_at)
SELECT md5('ws' || (g % 200))::uuid, md5('user' || (g % 5000))::uuid, 'chat', now() - (g % 100) * interval '1 day' - (g % 1440) * interval '1 minute'
FROM generate_series(1, $rows) g;
SQL
}
