-- Active Users Summary
CREATE MATERIALIZED VIEW analytics.mv_active_users AS
SELECT 
    workspace_id,
    DATE(created_at) as activity_date,
    COUNT(DISTINCT user_id) as daily_active_users,
    COUNT(DISTINCT CASE 
        WHEN created_at >= CURRENT_DATE - INTERVAL '7 days' 
        THEN user_id 
    END) as weekly_active_users,
    COUNT(DISTINCT CASE 
        WHEN created_at >= CURRENT_DATE - INTERVAL '30 days' 
        THEN user_id 
    END) as monthly_active_users
FROM analytics.user_activity
WHERE created_at >= CURRENT_DATE - INTERVAL '90 days'
GROUP BY workspace_id, DATE(created_at);

CREATE UNIQUE INDEX idx_mv_active_users 
    ON analytics.mv_active_users(workspace_id, activity_date);
