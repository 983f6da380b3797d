-- deltamv's bookkeeping schema: progress per replication slot, state per view, refresh history,
-- requests and the SQL API to submit them, and the status view dashboards read.
-- Loaded by `deltamv init` (src/bookkeeping/mod.rs, include_str!) and again on every resume, so
-- every statement is idempotent (IF NOT EXISTS, OR REPLACE): bookkeeping added by a newer
-- version appears without a re-init.
CREATE SCHEMA IF NOT EXISTS deltamv;
CREATE TABLE IF NOT EXISTS deltamv.progress (
    slot_name text PRIMARY KEY,
    applied_lsn pg_lsn NOT NULL,
    applied_commit_time timestamptz,
    caught_up_at timestamptz,
    updated_at timestamptz NOT NULL DEFAULT now()
);
-- The date the targets' CURRENT_DATE conditions were evaluated at, written with applied_lsn:
-- a crash can lose the state's move to a new date after the targets took it, and the restart
-- must know which date the targets show (src/engine/durability.rs). NULL: written by a version
-- that did not record it.
ALTER TABLE deltamv.progress ADD COLUMN IF NOT EXISTS targets_date date;
CREATE TABLE IF NOT EXISTS deltamv.views (
    view_name text PRIMARY KEY,
    file text NOT NULL,
    query_sql text NOT NULL,
    state text NOT NULL,
    last_error text,
    last_change_at timestamptz,
    updated_at timestamptz NOT NULL DEFAULT now()
);
ALTER TABLE deltamv.views ADD COLUMN IF NOT EXISTS mode text NOT NULL DEFAULT 'incremental';
-- Rows in the view's target, kept by the engine in the transaction that writes them (so reading
-- view_status never counts a target); NULL until the first load or count.
ALTER TABLE deltamv.views ADD COLUMN IF NOT EXISTS rows bigint;
CREATE TABLE IF NOT EXISTS deltamv.refresh_history (
    id bigserial PRIMARY KEY,
    view_name text NOT NULL,
    kind text NOT NULL,
    started_at timestamptz NOT NULL,
    finished_at timestamptz NOT NULL,
    duration_ms double precision NOT NULL,
    rows_changed bigint,
    error text
);
ALTER TABLE deltamv.refresh_history ADD COLUMN IF NOT EXISTS rows_compared bigint;
ALTER TABLE deltamv.refresh_history ADD COLUMN IF NOT EXISTS differences bigint;
CREATE INDEX IF NOT EXISTS refresh_history_view ON deltamv.refresh_history (view_name, finished_at DESC);
-- Refresh and reconcile requests (from SQL, the command line or the schedule) and their results.
-- The engine writes the rows; it learns of a request through the replication stream. Ids are
-- random UUIDs: a sequence would give the caller's transaction an XID (nextval WAL-logs), and
-- the engine's reconcile snapshot waits for every transaction with one, the waiting caller's too.
CREATE TABLE IF NOT EXISTS deltamv.requests (
    request_id uuid PRIMARY KEY,
    kind text NOT NULL,
    view_name text,
    repair boolean NOT NULL DEFAULT false,
    requested_by text,
    requested_at timestamptz,
    status text NOT NULL,
    phase text,
    started_at timestamptz,
    finished_at timestamptz,
    lsn pg_lsn,
    rows_compared bigint,
    differences bigint,
    rows_changed bigint,
    duration_ms double precision,
    error text,
    detail jsonb
);
-- Records a request on the replication stream (a non-transactional logical message: written at
-- once, after every transaction committed before the call, whatever the caller's transaction
-- does next) and, given a timeout, waits for the engine's result.
CREATE OR REPLACE FUNCTION deltamv.submit_request(kind text, view_name text, repair boolean, timeout interval)
RETURNS TABLE (request_id uuid, status text, rows_compared bigint, differences bigint,
               rows_changed bigint, duration_ms double precision, error text)
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $f$
DECLARE
    id uuid := gen_random_uuid();
    deadline timestamptz;
    r deltamv.requests%ROWTYPE;
    found_mode text;
BEGIN
    IF view_name IS NOT NULL THEN
        SELECT v.mode INTO found_mode FROM deltamv.views v WHERE v.view_name = submit_request.view_name;
        IF NOT FOUND THEN
            RAISE EXCEPTION 'deltamv: no view named %', view_name
                USING HINT = 'SELECT view_name FROM deltamv.views lists the views deltamv maintains (schema.name)';
        END IF;
        IF kind = 'reconcile' AND found_mode <> 'incremental' THEN
            RAISE EXCEPTION 'deltamv: % is a fallback view (a materialized view): it is refreshed, not reconciled', view_name
                USING HINT = 'call deltamv.refresh_view instead';
        END IF;
    END IF;
    IF timeout IS NOT NULL AND pg_current_xact_id_if_assigned() IS NOT NULL THEN
        RAISE EXCEPTION 'deltamv: cannot wait for a result in a transaction that has written'
            USING DETAIL = 'the engine''s reconcile snapshot waits for this transaction to end',
                  HINT = 'commit first, or call without a timeout and read deltamv.requests later';
    END IF;
    IF timeout IS NOT NULL AND current_setting('transaction_isolation') <> 'read committed' THEN
        RAISE EXCEPTION 'deltamv: waiting for a result needs READ COMMITTED (this transaction is %)',
            current_setting('transaction_isolation')
            USING HINT = 'call without a timeout and read deltamv.requests later, or call outside this transaction';
    END IF;
    PERFORM pg_logical_emit_message(false, 'deltamv.request',
        json_build_object('id', id, 'kind', kind, 'view', view_name, 'repair', repair,
                          'by', session_user, 'at', clock_timestamp())::text);
    IF timeout IS NULL THEN
        RETURN QUERY SELECT id, 'queued'::text, NULL::bigint, NULL::bigint, NULL::bigint, NULL::float8, NULL::text;
        RETURN;
    END IF;
    deadline := clock_timestamp() + timeout;
    LOOP
        SELECT * INTO r FROM deltamv.requests q WHERE q.request_id = id;
        IF r.finished_at IS NOT NULL OR clock_timestamp() >= deadline THEN
            RETURN QUERY SELECT id, coalesce(r.status, 'queued'), r.rows_compared, r.differences,
                                r.rows_changed, r.duration_ms, r.error;
            RETURN;
        END IF;
        PERFORM pg_sleep(least(0.05, greatest(0, extract(epoch FROM deadline - clock_timestamp()))));
    END LOOP;
END
$f$;
CREATE OR REPLACE FUNCTION deltamv.refresh_view(view_name text, timeout interval DEFAULT NULL)
RETURNS TABLE (request_id uuid, status text, rows_compared bigint, differences bigint,
               rows_changed bigint, duration_ms double precision, error text)
LANGUAGE sql VOLATILE AS $f$ SELECT * FROM deltamv.submit_request('refresh', view_name, true, timeout) $f$;
CREATE OR REPLACE FUNCTION deltamv.refresh_all(timeout interval DEFAULT NULL)
RETURNS TABLE (request_id uuid, status text, rows_compared bigint, differences bigint,
               rows_changed bigint, duration_ms double precision, error text)
LANGUAGE sql VOLATILE AS $f$ SELECT * FROM deltamv.submit_request('refresh all', NULL, true, timeout) $f$;
CREATE OR REPLACE FUNCTION deltamv.reconcile_view(view_name text, repair boolean DEFAULT false, timeout interval DEFAULT NULL)
RETURNS TABLE (request_id uuid, status text, rows_compared bigint, differences bigint,
               rows_changed bigint, duration_ms double precision, error text)
LANGUAGE sql VOLATILE AS $f$ SELECT * FROM deltamv.submit_request('reconcile', view_name, repair, timeout) $f$;
CREATE OR REPLACE FUNCTION deltamv.reconcile_all(repair boolean DEFAULT false, timeout interval DEFAULT NULL)
RETURNS TABLE (request_id uuid, status text, rows_compared bigint, differences bigint,
               rows_changed bigint, duration_ms double precision, error text)
LANGUAGE sql VOLATILE AS $f$ SELECT * FROM deltamv.submit_request('reconcile all', NULL, repair, timeout) $f$;
REVOKE ALL ON FUNCTION deltamv.submit_request(text, text, boolean, interval) FROM PUBLIC;
REVOKE ALL ON FUNCTION deltamv.refresh_view(text, interval) FROM PUBLIC;
REVOKE ALL ON FUNCTION deltamv.refresh_all(interval) FROM PUBLIC;
REVOKE ALL ON FUNCTION deltamv.reconcile_view(text, boolean, interval) FROM PUBLIC;
REVOKE ALL ON FUNCTION deltamv.reconcile_all(boolean, interval) FROM PUBLIC;
CREATE OR REPLACE VIEW deltamv.view_status AS
SELECT v.view_name,
       v.mode,
       v.state,
       v.last_error,
       CASE WHEN v.mode = 'incremental' THEN p.applied_lsn END AS applied_lsn,
       CASE WHEN v.mode = 'incremental' THEN greatest(0, (pg_current_wal_insert_lsn()
            - greatest(p.applied_lsn, coalesce(s.confirmed_flush_lsn, p.applied_lsn)))::int8) END AS lag_bytes,
       CASE WHEN v.mode = 'incremental'
            THEN greatest(0, extract(epoch FROM now() - greatest(p.caught_up_at, p.applied_commit_time)))::float8
       END AS lag_seconds,
       v.last_change_at,
       v.rows,
       h.kind AS last_refresh_kind,
       h.finished_at AS last_refresh_at,
       h.duration_ms AS last_refresh_ms,
       h.error AS last_refresh_error
  FROM deltamv.views v
  LEFT JOIN LATERAL (SELECT * FROM deltamv.progress ORDER BY updated_at DESC LIMIT 1) p ON true
  LEFT JOIN pg_replication_slots s ON s.slot_name = p.slot_name
  LEFT JOIN LATERAL (SELECT kind, finished_at, duration_ms, error FROM deltamv.refresh_history r
                      WHERE r.view_name = v.view_name ORDER BY r.finished_at DESC LIMIT 1) h ON true;
-- Status once counted each target on every read (deltamv.row_count); the count is kept now.
DROP FUNCTION IF EXISTS deltamv.row_count(text);
-- What the specification's get_refresh_status() returned: per view, its last refresh (initial
-- load, full refresh or fallback refresh) with duration, its last applied change, and lag.
CREATE OR REPLACE FUNCTION deltamv.refresh_status()
RETURNS TABLE (view_name text, mode text, state text, last_refresh_kind text,
               last_refresh_at timestamptz, last_refresh_ms double precision,
               last_change_at timestamptz, lag_seconds double precision)
LANGUAGE sql STABLE AS $f$
    SELECT view_name, mode, state, last_refresh_kind, last_refresh_at, last_refresh_ms,
           last_change_at, lag_seconds
      FROM deltamv.view_status ORDER BY view_name
$f$;
REVOKE ALL ON FUNCTION deltamv.refresh_status() FROM PUBLIC;
DO $g$
BEGIN
    IF EXISTS (SELECT FROM pg_roles WHERE rolname = 'analytics_reader') THEN
        GRANT USAGE ON SCHEMA deltamv TO analytics_reader;
        GRANT SELECT ON deltamv.view_status TO analytics_reader;
        GRANT EXECUTE ON FUNCTION deltamv.refresh_status() TO analytics_reader;
    END IF;
    -- Applications that trigger refreshes and reconciles (the specification's refresh service).
    IF EXISTS (SELECT FROM pg_roles WHERE rolname = 'analytics_refresher') THEN
        GRANT USAGE ON SCHEMA deltamv TO analytics_refresher;
        GRANT SELECT ON deltamv.requests, deltamv.view_status TO analytics_refresher;
        GRANT EXECUTE ON FUNCTION deltamv.refresh_view(text, interval), deltamv.refresh_all(interval),
            deltamv.reconcile_view(text, boolean, interval), deltamv.reconcile_all(boolean, interval),
            deltamv.submit_request(text, text, boolean, interval), deltamv.refresh_status()
            TO analytics_refresher;
    END IF;
END
$g$;
COMMENT ON VIEW deltamv.view_status IS 'Freshness of every view deltamv maintains: lag in WAL bytes and seconds (incremental views), state, last error, rows, last refresh';
