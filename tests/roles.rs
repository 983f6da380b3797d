//! Least privilege: the engine runs as the `deltamv_worker` role of `schema/roles.sql` (not a
//! superuser) and keeps the views exact; an `analytics_reader` member reads the summaries and
//! `deltamv.view_status` but not the raw sources.

mod support;

use std::time::Duration;

use anyhow::Result;
use support::engine::{
    assert_converges, micros, run_txns, seed_rows, seed_views_with, terminate, wait_caught_up,
    Database, EngineEnv,
};
use support::workload::Workload;

const NOW: &str = "2026-11-05T17:00:00Z";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_worker_role_suffices_and_readers_see_only_summaries() -> Result<()> {
    let db = Database::start(None).await?;
    let admin = &db.client;
    admin
        .batch_execute(&std::fs::read_to_string("schema/roles.sql")?)
        .await?;
    admin
        .batch_execute("CREATE ROLE bi LOGIN IN ROLE analytics_reader")
        .await?;
    let superuser: bool = admin
        .query_one(
            "SELECT rolsuper FROM pg_roles WHERE rolname = 'deltamv_worker'",
            &[],
        )
        .await?
        .get(0);
    assert!(!superuser);
    let mut w = Workload::new(17, micros(NOW));
    seed_rows(admin, &mut w, 300).await?;

    // The seed views, with row-level security on one of them.
    let views = seed_views_with(
        "[views.\"analytics.mv_workspace_metrics\"]\ntenant_setting = \"app.workspace_id\"\n",
    )?;
    let worker_url = db.url.replacen("postgres@", "deltamv_worker@", 1);
    let env = EngineEnv::new(&worker_url, views.path())?;
    env.set_clock(NOW)?;
    let (code, out, err) = env.run_cmd(&["init"])?;
    assert_eq!(code, 0, "init as the worker role:\n{out}\n{err}");
    let mut engine = env.spawn_run()?;
    run_txns(admin, &mut w, 60).await?;
    wait_caught_up(admin, &mut engine, &env, Duration::from_secs(60)).await?;
    assert_converges(
        &env,
        Duration::from_secs(10),
        "maintained by the worker role",
    )
    .await?;

    let reader = support::connect(&db.url.replacen("postgres@", "bi@", 1)).await?;
    let rows: i64 = reader
        .query_one("SELECT count(*) FROM analytics.mv_agent_performance", &[])
        .await?
        .get(0);
    assert!(rows > 0, "the reader sees the summaries");
    let fresh: i64 = reader
        .query_one(
            "SELECT count(*) FROM deltamv.view_status WHERE state = 'ok' AND rows IS NOT NULL",
            &[],
        )
        .await?
        .get(0);
    assert_eq!(fresh, 5, "and their freshness");
    // The specification's refresh status, as a function an application calls.
    let status = reader
        .query(
            "SELECT view_name, last_refresh_kind, last_refresh_ms, lag_seconds FROM deltamv.refresh_status()",
            &[],
        )
        .await?;
    assert_eq!(status.len(), 5, "one row per view");
    for row in &status {
        let view: String = row.get(0);
        let kind: Option<String> = row.get(1);
        let ms: Option<f64> = row.get(2);
        let lag: Option<f64> = row.get(3);
        assert!(
            kind.as_deref() == Some("initial load") && ms.is_some() && lag.is_some(),
            "{view}: last refresh and lag expected, got {kind:?} {ms:?} {lag:?}"
        );
    }
    // Only roles granted it may call it (even one that may read view_status).
    admin
        .batch_execute(
            "CREATE ROLE stranger LOGIN; GRANT USAGE ON SCHEMA deltamv TO stranger;
             GRANT SELECT ON deltamv.view_status TO stranger;",
        )
        .await?;
    let stranger = support::connect(&db.url.replacen("postgres@", "stranger@", 1)).await?;
    let denied = stranger
        .query("SELECT * FROM deltamv.refresh_status()", &[])
        .await
        .expect_err("a role without the grant is refused");
    assert_eq!(
        denied.code(),
        Some(&tokio_postgres::error::SqlState::INSUFFICIENT_PRIVILEGE),
        "{denied}"
    );
    // Refreshes and reconciles from SQL with the engine as the worker role: the request
    // functions run as their owner (the worker), so neither the caller nor the worker needs
    // more than schema/roles.sql gives.
    admin
        .batch_execute("CREATE ROLE backend LOGIN IN ROLE analytics_refresher")
        .await?;
    let backend = support::connect(&db.url.replacen("postgres@", "backend@", 1)).await?;
    let row = backend
        .query_one(
            "SELECT status, differences, error FROM deltamv.reconcile_all(timeout => '60 s')",
            &[],
        )
        .await?;
    let (status, differences, error): (String, Option<i64>, Option<String>) =
        (row.get(0), row.get(1), row.get(2));
    assert_eq!(
        (status.as_str(), differences, error),
        ("done", Some(0), None),
        "a reconcile through the worker's engine"
    );
    let denied = reader
        .query("SELECT * FROM deltamv.refresh_all()", &[])
        .await
        .expect_err("readers may not trigger refreshes");
    assert_eq!(
        denied.code(),
        Some(&tokio_postgres::error::SqlState::INSUFFICIENT_PRIVILEGE),
        "{denied}"
    );
    // Row-level security: a tenant sees only its workspace's row.
    let total: i64 = admin
        .query_one("SELECT count(*) FROM analytics.mv_workspace_metrics", &[])
        .await?
        .get(0);
    assert!(total > 1, "several workspaces");
    let none: i64 = reader
        .query_one("SELECT count(*) FROM analytics.mv_workspace_metrics", &[])
        .await?
        .get(0);
    assert_eq!(none, 0, "no tenant set: no rows");
    let ws: String = admin
        .query_one(
            "SELECT workspace_id::text FROM analytics.mv_workspace_metrics LIMIT 1",
            &[],
        )
        .await?
        .get(0);
    reader
        .batch_execute(&format!("SET app.workspace_id = '{ws}'"))
        .await?;
    let mine: Vec<String> = reader
        .query(
            "SELECT workspace_id::text FROM analytics.mv_workspace_metrics",
            &[],
        )
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(mine, vec![ws], "exactly the tenant's row");
    let denied = reader
        .query_one("SELECT count(*) FROM public.agent_runs", &[])
        .await;
    let err = denied.expect_err("the raw sources are off limits");
    assert!(
        err.to_string().contains("permission denied") || format!("{err:?}").contains("42501"),
        "{err:?}"
    );
    terminate(&mut engine, Duration::from_secs(10))?;
    Ok(())
}
