-- Agent Performance Summary
CREATE MATERIALIZED VIEW analytics.mv_agent_performance AS
SELECT 
    agent_id,
    workspace_id,
    DATE(started_at) as run_date,
    COUNT(*) as total_runs,
    COUNT(*) FILTER (WHERE status = 'completed') as successful_runs,
    AVG(runtime_seconds) as avg_runtime,
    PERCENTILE_CONT(0.5) WITHIN GROUP (ORDER BY runtime_seconds) as median_runtime,
    PERCENTILE_CONT(0.95) WITHIN GROUP (ORDER BY runtime_seconds) as p95_runtime,
    SUM(credits_consumed) as total_credits
FROM public.agent_runs
WHERE started_at >= CURRENT_DATE - INTERVAL '30 days'
GROUP BY agent_id, workspace_id, DATE(started_at);

CREATE UNIQUE INDEX idx_mv_agent_performance 
    ON analytics.mv_agent_performance(agent_id, run_date);
