-- Top Agents: per workspace, the 10 agents with the most completed runs over the last 30 days,
-- with their run counts, success rate and credits; ties broken by agent_id.
CREATE MATERIALIZED VIEW analytics.mv_top_agents AS
SELECT workspace_id, agent_id, completed_runs, total_runs, success_rate, total_credits, rank
FROM (
    SELECT
        workspace_id,
        agent_id,
        COUNT(*) FILTER (WHERE status = 'completed') AS completed_runs,
        COUNT(*) AS total_runs,
        100.0 * COUNT(*) FILTER (WHERE status = 'completed') / COUNT(*) AS success_rate,
        COALESCE(SUM(credits_consumed), 0) AS total_credits,
        ROW_NUMBER() OVER (
            PARTITION BY workspace_id
            ORDER BY COUNT(*) FILTER (WHERE status = 'completed') DESC, agent_id
        ) AS rank
    FROM public.agent_runs
    WHERE started_at >= CURRENT_DATE - INTERVAL '30 days'
    GROUP BY workspace_id, agent_id
) ranked
WHERE rank <= 10;

CREATE UNIQUE INDEX idx_mv_top_agents ON analytics.mv_top_agents (workspace_id, rank);
