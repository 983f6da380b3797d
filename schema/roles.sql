-- Least-privilege roles for deltamv. Run once as an administrator (the owner of the source
-- tables or a superuser), after schema/sources.sql:
--   psql -v ON_ERROR_STOP=1 -f schema/roles.sql
-- then give the worker a password (ALTER ROLE deltamv_worker PASSWORD '...') and point
-- DATABASE_URL at it. Readers (dashboards, BI tools) get analytics_reader:
--   CREATE ROLE grafana LOGIN PASSWORD '...' IN ROLE analytics_reader;
-- and backends that call deltamv.refresh_view() & co. get analytics_refresher.
DO $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'deltamv_worker') THEN
        CREATE ROLE deltamv_worker LOGIN REPLICATION;
    END IF;
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'analytics_reader') THEN
        CREATE ROLE analytics_reader NOLOGIN;
    END IF;
    -- Application backends that trigger refreshes and reconciles from SQL
    -- (deltamv.refresh_view and friends, granted by the engine at init).
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'analytics_refresher') THEN
        CREATE ROLE analytics_refresher NOLOGIN;
    END IF;
    -- The worker creates the deltamv bookkeeping schema.
    EXECUTE format('GRANT CREATE ON DATABASE %I TO deltamv_worker', current_database());
END
$$;

-- The worker reads the sources (snapshot, reconcile) and owns what it creates in analytics.
GRANT USAGE ON SCHEMA public, analytics TO deltamv_worker;
GRANT SELECT ON public.agent_runs, analytics.user_activity TO deltamv_worker;
GRANT CREATE ON SCHEMA analytics TO deltamv_worker;

-- Publishing needs the tables' owner: the administrator creates the publication once. It
-- publishes through partition roots, so partitioned sources arrive under their own names.
DO $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_publication WHERE pubname = 'deltamv_pub') THEN
        CREATE PUBLICATION deltamv_pub FOR TABLE public.agent_runs, analytics.user_activity
            WITH (publish_via_partition_root = true);
    END IF;
END
$$;

-- Readers see the summaries (and deltamv.view_status), not the sources. The engine grants
-- SELECT on every target and fallback view it creates, whichever role it runs as (the worker,
-- the database owner or a superuser); the default privileges also cover tables the worker
-- creates by other means.
GRANT USAGE ON SCHEMA analytics TO analytics_reader;
ALTER DEFAULT PRIVILEGES FOR ROLE deltamv_worker IN SCHEMA analytics GRANT SELECT ON TABLES TO analytics_reader;
