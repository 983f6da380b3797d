//! Views on views: a three-level chain (incremental on incremental on incremental) stays equal
//! to PostgreSQL's evaluation under random writes, crashes and midnights; a dependent is never
//! ahead of (or behind) its input, since both change in one transaction; cycles are refused and
//! a view others read cannot silently disappear.

mod support;

use std::time::Duration;

use anyhow::Result;
use support::engine::{
    assert_converges, kill9, micros, seed_rows, terminate, wait_caught_up, Database, Fixture,
};
use support::workload::Workload;

const NOW: &str = "2026-11-05T17:00:00Z";

const DAILY: &str = "CREATE MATERIALIZED VIEW analytics.v_daily AS
SELECT workspace_id, agent_id, DATE(started_at) AS day, COUNT(*) AS runs, SUM(credits_consumed) AS credits
  FROM public.agent_runs WHERE started_at >= CURRENT_DATE - INTERVAL '30 days'
 GROUP BY workspace_id, agent_id, DATE(started_at);";
const AGENT: &str = "CREATE MATERIALIZED VIEW analytics.v_agent AS
SELECT workspace_id, agent_id, SUM(runs) AS runs, MAX(day) AS last_day, AVG(credits) AS avg_daily_credits
  FROM analytics.v_daily GROUP BY workspace_id, agent_id;";
const WORKSPACE: &str = "CREATE MATERIALIZED VIEW analytics.v_workspace AS
SELECT workspace_id, COUNT(*) AS agents, SUM(runs) AS runs, MAX(last_day) AS last_day
  FROM analytics.v_agent GROUP BY workspace_id HAVING SUM(runs) > 0;";

/// In one snapshot, the top view's totals equal the totals of the view it reads.
async fn consistent(client: &tokio_postgres::Client) -> Result<bool> {
    client
        .batch_execute("BEGIN ISOLATION LEVEL REPEATABLE READ")
        .await?;
    let row = client
        .query_one(
            "SELECT (SELECT coalesce(sum(runs), 0) FROM analytics.v_workspace)::int8,
                    (SELECT coalesce(sum(runs), 0) FROM analytics.v_agent)::int8,
                    (SELECT coalesce(sum(runs), 0) FROM analytics.v_daily)::int8",
            &[],
        )
        .await;
    client.batch_execute("COMMIT").await?;
    let row = row?;
    let (a, b, c): (i64, i64, i64) = (row.get(0), row.get(1), row.get(2));
    Ok(a == b && b == c)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_three_level_chain_stays_exact_and_consistent() -> Result<()> {
    let db = Database::start(Some("America/New_York")).await?;
    let views = tempfile::tempdir()?;
    // File names in reverse dependency order: the order must come from the SQL.
    std::fs::write(views.path().join("a_workspace.sql"), WORKSPACE)?;
    std::fs::write(views.path().join("b_agent.sql"), AGENT)?;
    std::fs::write(views.path().join("c_daily.sql"), DAILY)?;
    let Fixture {
        cluster: _cluster,
        url,
        client,
        env,
    } = db.engine(views.path(), Some(NOW))?;
    let mut w = Workload::new(31, micros(NOW));
    seed_rows(&client, &mut w, 800).await?;
    let (code, out, err) = env.run_cmd(&["explain", "--view", "analytics.v_workspace"])?;
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        out.matches("aggregate by").count(),
        3,
        "three stages:\n{out}"
    );
    let (code, _, err) = env.run_cmd(&["init"])?;
    assert_eq!(code, 0, "{err}");
    let mut engine = env.spawn_run()?;
    let checker = support::connect(&url).await?;
    for round in 0..4 {
        for _ in 0..40 {
            client.batch_execute(&w.transaction()).await?;
            if !consistent(&checker).await? {
                anyhow::bail!(
                    "a dependent view disagrees with its input within one snapshot (round {round})"
                );
            }
        }
        if round == 1 {
            kill9(&mut engine);
            engine = env.spawn_run()?;
        }
    }
    wait_caught_up(&client, &mut engine, &env, Duration::from_secs(60)).await?;
    assert_converges(&env, Duration::from_secs(10), "three-level chain").await?;
    env.set_clock("2026-11-07T05:30:00Z")?;
    assert_converges(
        &env,
        Duration::from_secs(20),
        "three-level chain after two midnights",
    )
    .await?;
    assert!(consistent(&checker).await?);
    terminate(&mut engine, Duration::from_secs(10))?;

    // The input of other views cannot disappear silently.
    std::fs::remove_file(views.path().join("c_daily.sql"))?;
    let (code, _, err) = env.run_cmd(&["status"])?;
    assert_ne!(code, 0);
    assert!(
        err.contains("analytics.v_daily is no longer defined") && err.contains("analytics.v_agent"),
        "{err}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cycles_are_refused_with_the_cycle_named() -> Result<()> {
    let db = Database::start(None).await?;
    let views = tempfile::tempdir()?;
    std::fs::write(
        views.path().join("x.sql"),
        "CREATE MATERIALIZED VIEW analytics.x AS SELECT workspace_id, count(*) AS n FROM analytics.y GROUP BY workspace_id;",
    )?;
    std::fs::write(
        views.path().join("y.sql"),
        "CREATE MATERIALIZED VIEW analytics.y AS SELECT workspace_id, count(*) AS n FROM analytics.x GROUP BY workspace_id;",
    )?;
    let Fixture {
        cluster: _cluster,
        client,
        env,
        ..
    } = db.engine(views.path(), None)?;
    let (code, _, err) = env.run_cmd(&["init"])?;
    assert_ne!(code, 0);
    assert!(
        err.contains("views form a cycle: analytics.x -> analytics.y -> analytics.x"),
        "{err}"
    );
    let schema: bool = client
        .query_one("SELECT to_regnamespace('deltamv') IS NOT NULL", &[])
        .await?
        .get(0);
    assert!(!schema, "nothing is created");
    Ok(())
}
