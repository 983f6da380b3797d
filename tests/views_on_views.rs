//! Views on views: a three-level chain (incremental on incremental on incremental) stays equal
//! to PostgreSQL's evaluation under random writes, crashes and midnights; a dependent is never
//! ahead of (or behind) its input, since both change in one transaction; cycles are refused and
//! a view others read cannot silently disappear. CURRENT_DATE conditions at outer stages (of a
//! nested query and of a view over a view) follow the clock across midnights with no writes and
//! across a restart.

mod support;

use std::time::Duration;

use anyhow::Result;
use support::engine::{
    assert_converges, kill9, micros, run_txns, seed_rows, terminate, wait_caught_up, Database,
    Fixture,
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

/// An outer query's WHERE and FILTERs on the dates of its inner groups.
const ACTIVITY: &str = "CREATE MATERIALIZED VIEW analytics.v_agent_activity AS
SELECT workspace_id,
       COUNT(*) AS agents,
       COUNT(*) FILTER (WHERE last_day >= CURRENT_DATE - 1) AS active_since_yesterday,
       SUM(runs) FILTER (WHERE last_day < CURRENT_DATE) AS runs_before_today
  FROM (SELECT workspace_id, agent_id, MAX(DATE(started_at)) AS last_day, COUNT(*) AS runs
          FROM public.agent_runs GROUP BY workspace_id, agent_id) per_agent
 WHERE last_day >= CURRENT_DATE - 2
 GROUP BY workspace_id;";
/// A maintained view without conditions, read by [`RECENT`].
const PER_DAY: &str = "CREATE MATERIALIZED VIEW analytics.v_per_day AS
SELECT workspace_id, agent_id, DATE(started_at) AS day, COUNT(*) AS runs
  FROM public.agent_runs GROUP BY workspace_id, agent_id, DATE(started_at);";
/// A view over a view: WHERE, FILTER and HAVING with CURRENT_DATE on the inner view's `day`.
const RECENT: &str = "CREATE MATERIALIZED VIEW analytics.v_recent AS
SELECT workspace_id,
       SUM(runs) FILTER (WHERE day = CURRENT_DATE - 1) AS runs_yesterday,
       COUNT(DISTINCT agent_id) AS agents,
       MAX(day) AS last_day
  FROM analytics.v_per_day
 WHERE day >= CURRENT_DATE - 2
 GROUP BY workspace_id
HAVING MAX(day) >= CURRENT_DATE - 1;";

/// The fixed workspace's row of both outer views (`-` when it has none).
async fn fixed_rows(client: &tokio_postgres::Client, ws: &str) -> Result<(String, String)> {
    let text = |sql: String| async move {
        let rows = client.simple_query(&sql).await?;
        let mut out = Vec::new();
        for m in rows {
            if let tokio_postgres::SimpleQueryMessage::Row(r) = m {
                out.push(
                    (0..r.len())
                        .map(|i| r.get(i).unwrap_or("NULL").to_string())
                        .collect::<Vec<_>>()
                        .join("|"),
                );
            }
        }
        anyhow::Ok(if out.is_empty() {
            "-".into()
        } else {
            out.join(";")
        })
    };
    Ok((
        text(format!(
            "SELECT agents, active_since_yesterday, runs_before_today
               FROM analytics.v_agent_activity WHERE workspace_id = '{ws}'"
        ))
        .await?,
        text(format!(
            "SELECT runs_yesterday, agents, last_day FROM analytics.v_recent WHERE workspace_id = '{ws}'"
        ))
        .await?,
    ))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outer_current_date_conditions_follow_midnight_without_writes() -> Result<()> {
    let db = Database::start(Some("America/New_York")).await?;
    let views = tempfile::tempdir()?;
    std::fs::write(views.path().join("activity.sql"), ACTIVITY)?;
    std::fs::write(views.path().join("per_day.sql"), PER_DAY)?;
    std::fs::write(views.path().join("recent.sql"), RECENT)?;
    let Fixture {
        cluster: _cluster,
        url: _url,
        client,
        env,
    } = db.engine(views.path(), Some(NOW))?;
    // A workspace of three agents whose last runs are known: the 5th (today, New York), the 3rd
    // and the 6th (tomorrow); random workspaces around it.
    let ws = "00000000-0000-4000-a000-0000000000aa";
    let agent = |n: u8| format!("00000000-0000-4000-a000-0000000000{n:02x}");
    client
        .batch_execute(&format!(
            "INSERT INTO public.agent_runs (agent_id, workspace_id, user_id, status, started_at)
             VALUES ('{a}', '{ws}', '{ws}', 'completed', '2026-11-05 10:00-05'),
                    ('{b}', '{ws}', '{ws}', 'completed', '2026-11-03 10:00-05'),
                    ('{c}', '{ws}', '{ws}', 'failed', '2026-11-06 09:00-05');",
            a = agent(1),
            b = agent(2),
            c = agent(3),
        ))
        .await?;
    let mut w = Workload::new(47, micros(NOW));
    w.allow_truncate = false;
    seed_rows(&client, &mut w, 400).await?;
    let (code, out, err) = env.run_cmd(&["explain", "--view", "analytics.v_recent"])?;
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("groups revisited when CURRENT_DATE flips it")
            && out.contains("input rows revisited when CURRENT_DATE flips it"),
        "the outer stage's time-dependent conditions are in the plan:\n{out}"
    );
    let (code, _, err) = env.run_cmd(&["init"])?;
    assert_eq!(code, 0, "{err}");
    let mut engine = env.spawn_run()?;
    assert_converges(&env, Duration::from_secs(10), "after init").await?;
    // 11-05: A, B and C are within two days; A and C since yesterday; B's run before today.
    // v_recent: nothing yesterday (the 4th), three agents, the last day the 6th.
    assert_eq!(
        fixed_rows(&client, ws).await?,
        ("3|2|1".into(), "NULL|3|2026-11-06".into())
    );
    run_txns(&client, &mut w, 60).await?;
    wait_caught_up(&client, &mut engine, &env, Duration::from_secs(60)).await?;
    assert_converges(&env, Duration::from_secs(10), "after writes").await?;

    // Midnight in New York, no writes: B leaves the two-day window, A's run is yesterday's.
    env.set_clock("2026-11-06T05:00:30Z")?;
    assert_converges(&env, Duration::from_secs(20), "after midnight").await?;
    assert_eq!(
        fixed_rows(&client, ws).await?,
        ("2|2|1".into(), "1|2|2026-11-06".into()),
        "the outer stages moved at midnight without writes"
    );

    // Stopped across two more midnights: at the start only C is left within two days, nobody
    // ran yesterday (the 7th), so v_recent's HAVING drops the workspace.
    terminate(&mut engine, Duration::from_secs(10))?;
    env.set_clock("2026-11-08T06:00:00Z")?;
    let mut engine = env.spawn_run()?;
    assert_converges(
        &env,
        Duration::from_secs(30),
        "after a restart two days later",
    )
    .await?;
    assert_eq!(fixed_rows(&client, ws).await?, ("1|0|1".into(), "-".into()));

    // One more midnight while running: C leaves the window, the workspace's group is gone.
    env.set_clock("2026-11-09T05:30:00Z")?;
    assert_converges(&env, Duration::from_secs(20), "after the last midnight").await?;
    assert_eq!(fixed_rows(&client, ws).await?, ("-".into(), "-".into()));

    // A clock set back (an operator's correction) revisits every row and group.
    env.set_clock("2026-11-06T12:00:00Z")?;
    assert_converges(&env, Duration::from_secs(20), "after the clock went back").await?;
    assert_eq!(
        fixed_rows(&client, ws).await?,
        ("2|2|1".into(), "1|2|2026-11-06".into())
    );
    run_txns(&client, &mut w, 40).await?;
    wait_caught_up(&client, &mut engine, &env, Duration::from_secs(60)).await?;
    assert_converges(&env, Duration::from_secs(10), "after more writes").await?;
    let (code, out, err) = env.run_cmd(&["reconcile"])?;
    assert_eq!(code, 0, "reconcile:\n{out}\n{err}");

    // Forward again, past the dates the groups were filed under before the clock went back:
    // they are still revisited (their time-index entries survived the step back).
    env.set_clock("2026-11-09T05:30:00Z")?;
    assert_converges(
        &env,
        Duration::from_secs(20),
        "after the clock went forward again",
    )
    .await?;
    terminate(&mut engine, Duration::from_secs(10))?;
    Ok(())
}
