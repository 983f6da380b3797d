//! The randomized differential test: seeded random workloads (every kind of change, concurrent
//! writers during `init`, kill -9 restarts, midnights) against a real PostgreSQL, and after each
//! phase every target compared with PostgreSQL's own evaluation of the view's SQL.
//!
//! The views are the seed's plus two whose CURRENT_DATE conditions sit at outer stages
//! ([`OUTER_DATE_VIEWS`]): a nested query with WHERE, FILTER, CASE and HAVING on the dates of its
//! inner groups (and a HAVING on CURRENT_DATE in the inner query), and a view over the seed's
//! `mv_agent_performance` with such conditions on its `run_date`. Both must follow the clock
//! across midnight with no writes, like the innermost conditions do.
//!
//! Knobs: `DELTAMV_TEST_SEED` (default: fixed seeds), `DELTAMV_TEST_TXNS` (transactions per phase).

mod support;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use support::engine::{
    assert_converges, crash_during_writes, kill9, micros, run_txns, seed_rows, seed_views_with,
    terminate, wait_caught_up, Fixture,
};
use support::workload::Workload;

const CATCH_UP: Duration = Duration::from_secs(90);

/// Views with CURRENT_DATE conditions at outer stages, added to the seed's: (file, contents).
const OUTER_DATE_VIEWS: &[(&str, &str)] = &[
    (
        "mv_agent_recency.sql",
        "-- CURRENT_DATE on the dates of inner groups: outer WHERE, FILTER, CASE and HAVING, and a
-- HAVING on CURRENT_DATE in the inner query.
CREATE MATERIALIZED VIEW analytics.mv_agent_recency AS
SELECT
    workspace_id,
    COUNT(*) AS agents,
    COUNT(*) FILTER (WHERE last_day >= CURRENT_DATE - 7) AS active_7d,
    SUM(runs) FILTER (WHERE last_day >= CURRENT_DATE - INTERVAL '3 days') AS runs_recent,
    SUM(CASE WHEN first_day < CURRENT_DATE - 60 THEN runs ELSE 0 END) AS veteran_runs,
    CASE WHEN MAX(last_day) = CURRENT_DATE - 1 THEN 'yesterday' ELSE 'other' END AS last_seen,
    MAX(last_day) AS last_day
FROM (
    SELECT workspace_id, agent_id, MIN(DATE(started_at)) AS first_day,
           MAX(DATE(started_at)) AS last_day, COUNT(*) AS runs
    FROM public.agent_runs
    GROUP BY workspace_id, agent_id
    HAVING MAX(started_at) >= CURRENT_DATE - 10
) per_agent
WHERE last_day < CURRENT_DATE + 2
GROUP BY workspace_id
HAVING MIN(last_day) >= CURRENT_DATE - 6 OR COUNT(*) > 2;
",
    ),
    (
        "mv_workspace_week.sql",
        "-- A view over a maintained view with CURRENT_DATE conditions on its run_date.
CREATE MATERIALIZED VIEW analytics.mv_workspace_week AS
SELECT
    workspace_id,
    SUM(total_runs) FILTER (WHERE run_date >= CURRENT_DATE - INTERVAL '7 days') AS runs_7d,
    SUM(total_credits) FILTER (WHERE run_date >= CURRENT_DATE - 7) AS credits_7d,
    COUNT(*) FILTER (WHERE run_date = CURRENT_DATE - 1) AS agents_yesterday,
    COUNT(DISTINCT agent_id) FILTER (WHERE run_date BETWEEN CURRENT_DATE - 14 AND CURRENT_DATE - 1)
        AS agents_2w,
    MAX(run_date) AS last_day,
    CASE WHEN MAX(run_date) >= CURRENT_DATE THEN 'today' ELSE 'earlier' END AS freshness
FROM analytics.mv_agent_performance
WHERE run_date < CURRENT_DATE + 1
GROUP BY workspace_id
HAVING MIN(run_date) <= CURRENT_DATE - 20;

CREATE UNIQUE INDEX mv_workspace_week_key ON analytics.mv_workspace_week (workspace_id);
",
    ),
];

fn txns_per_phase() -> usize {
    std::env::var("DELTAMV_TEST_TXNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(150)
}

fn seeds() -> Vec<u64> {
    match std::env::var("DELTAMV_TEST_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
    {
        Some(s) => vec![s],
        None => vec![7, 11, 23],
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_workloads_match_postgres() -> Result<()> {
    for seed in seeds() {
        eprintln!("seed {seed}");
        one_seed(seed)
            .await
            .with_context(|| format!("seed {seed} (rerun with DELTAMV_TEST_SEED={seed})"))?;
    }
    Ok(())
}

async fn one_seed(seed: u64) -> Result<()> {
    // Early November in New York: the 7-day window crosses the end of daylight saving time.
    let mut now = "2026-11-05T17:00:00Z".to_string();
    let views = seed_views_with("")?;
    for (file, text) in OUTER_DATE_VIEWS {
        std::fs::write(views.path().join(file), text)?;
    }
    let Fixture {
        cluster: _cluster,
        url,
        client,
        env,
    } = Fixture::start(Some("America/New_York"), views.path(), Some(&now)).await?;
    let mut w = Workload::new(seed, micros(&now));
    seed_rows(&client, &mut w, 1500).await?;
    let n = txns_per_phase();

    // Writers keep going while init takes its snapshot.
    let writing = Arc::new(AtomicBool::new(true));
    let writer = {
        let url = url.clone();
        let writing = writing.clone();
        let mut w2 = Workload::new(seed ^ 0xdead, micros(&now));
        w2.allow_truncate = false;
        tokio::spawn(async move {
            let c = support::connect(&url).await?;
            seed_rows(&c, &mut w2, 300).await?;
            while writing.load(Ordering::Relaxed) {
                let sql = w2.transaction();
                if let Err(e) = c.batch_execute(&sql).await {
                    if c.is_closed() {
                        return Err(e.into());
                    }
                    let _ = c.batch_execute("ROLLBACK").await;
                }
            }
            anyhow::Ok(())
        })
    };
    let (code, out, err) = tokio::task::spawn_blocking({
        let cmd_env = env.clone();
        move || cmd_env.run_cmd(&["init"])
    })
    .await??;
    assert_eq!(code, 0, "init failed:\n{out}\n{err}");
    let (code, _, err) = env.run_cmd(&["init"])?;
    assert_eq!(code, 0, "a second init must be a no-op:\n{err}");
    writing.store(false, Ordering::Relaxed);
    writer.await??;

    let mut engine = env.spawn_run()?;
    run_txns(&client, &mut w, n).await?;
    wait_caught_up(&client, &mut engine, &env, CATCH_UP).await?;
    assert_converges(
        &env,
        Duration::from_secs(10),
        "after init under concurrent writes and a first phase",
    )
    .await?;

    // kill -9 in the middle of a stream of writes, then restart.
    let mut engine = crash_during_writes(
        &env,
        &mut engine,
        &url,
        seed ^ 0xbeef,
        micros(&now),
        n,
        Duration::from_millis(700),
    )
    .await?;
    run_txns(&client, &mut w, n / 2).await?;
    wait_caught_up(&client, &mut engine, &env, CATCH_UP).await?;
    assert_converges(&env, Duration::from_secs(10), "after kill -9 and restart").await?;

    // Midnight in New York passes while the engine runs, without new writes.
    now = "2026-11-06T05:00:30Z".to_string();
    env.set_clock(&now)?;
    w.set_now(micros(&now));
    assert_converges(&env, Duration::from_secs(20), "after midnight").await?;

    // More writes, another crash, a week later.
    run_txns(&client, &mut w, n).await?;
    kill9(&mut engine);
    now = "2026-11-13T15:00:00Z".to_string();
    env.set_clock(&now)?;
    w.set_now(micros(&now));
    let mut engine = env.spawn_run()?;
    run_txns(&client, &mut w, n / 2).await?;
    wait_caught_up(&client, &mut engine, &env, CATCH_UP).await?;
    assert_converges(&env, Duration::from_secs(20), "a week later, after a crash").await?;

    // Every view is healthy and non-trivial.
    let (code, status, err) = env.run_cmd(&["status", "--json"])?;
    assert_eq!(code, 0, "status failed: {err}");
    let views: serde_json::Value = serde_json::from_str(&status)?;
    for v in views.as_array().context("status is a list")? {
        assert_eq!(v["state"], "ok", "view not healthy: {v}");
        assert!(v["rows"].as_i64().unwrap_or(0) > 0, "view has no rows: {v}");
    }
    eprintln!("{status}");

    // The reconcile command agrees, and SIGTERM stops the engine promptly.
    let (code, out, err) = env.run_cmd(&["reconcile"])?;
    assert_eq!(code, 0, "reconcile reported differences:\n{out}\n{err}");
    // Nor did any reconcile during the run (the scheduled one after midnight among them).
    let found: Vec<String> = client
        .query(
            "SELECT kind || ': ' || coalesce(detail::text, '') FROM deltamv.requests WHERE status = 'differences'",
            &[],
        )
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert!(
        found.is_empty(),
        "reconciles during the run reported differences: {found:?}"
    );
    let exit = terminate(&mut engine, Duration::from_secs(10))?;
    assert_eq!(
        exit,
        Some(0),
        "deltamv run did not exit cleanly within 10 s of SIGTERM"
    );
    Ok(())
}
