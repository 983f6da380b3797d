-- Workspace Metrics Summary
CREATE MATERIALIZED VIEW analytics.mv_workspace_metrics AS
SELECT 
    workspace_id,
    COUNT(DISTINCT user_id) as total_users,
    COUNT(DISTINCT agent_id) as total_agents,
    SUM(total_runs) as total_executions,
    AVG(success_rate) as avg_success_rate,
    SUM(credits_consumed) as total_credits_consumed,
    MAX(last_activity) as last_activity_at
FROM (
    SELECT 
        workspace_id,
        user_id,
        agent_id,
        COUNT(*) as total_runs,
        AVG(CASE WHEN status = 'completed' THEN 100.0 ELSE 0 END) as success_rate,
        SUM(credits_consumed) as credits_consumed,
        MAX(started_at) as last_activity
    FROM public.agent_runs
    WHERE started_at >= CURRENT_DATE - INTERVAL '30 days'
    GROUP BY workspace_id, user_id, agent_id
) subquery
GROUP BY workspace_id;

CREATE UNIQUE INDEX idx_mv_workspace_metrics 
    ON analytics.mv_workspace_metrics(workspace_id);
