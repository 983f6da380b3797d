-- Error Summary: failed runs per workspace, agent, day and error code over the last 7 days,
-- with how many distinct users were affected and when the error was last seen.
CREATE MATERIALIZED VIEW analytics.mv_error_summary AS
SELECT
    workspace_id,
    agent_id,
    DATE(started_at) AS error_date,
    COALESCE(error_code, 'unknown') AS error_code,
    COUNT(*) AS error_count,
    COUNT(DISTINCT user_id) AS affected_users,
    MAX(started_at) AS last_seen_at
FROM public.agent_runs
WHERE status = 'failed'
  AND started_at >= CURRENT_DATE - INTERVAL '7 days'
GROUP BY workspace_id, agent_id, DATE(started_at), COALESCE(error_code, 'unknown');

CREATE UNIQUE INDEX idx_mv_error_summary
    ON analytics.mv_error_summary (workspace_id, agent_id, error_date, error_code);
