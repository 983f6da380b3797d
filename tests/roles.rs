//! Least privilege: readers in `analytics_reader` (from `schema/roles.sql`) read the summaries,
//! the fallback views and `deltamv.view_status`, but not the raw sources, whichever role runs
//! the engine: the `deltamv_worker` role of `schema/roles.sql` (not a superuser, which must
//! suffice to keep the views exact), or a superuser as in the quick start (whose targets no
//! default privileges cover: the engine grants them).

mod support;

use std::time::Duration;

use anyhow::Result;
use support::engine::{
    assert_converges, micros, run_txns, seed_rows, seed_views_with, terminate, wait_caught_up,
    Database, EngineEnv,
};
use support::workload::Workload;

const NOW: &str = "2026-11-05T17:00:00Z";

/// The five views: the first three incremental, the last two kept as fallback views.
const INCREMENTAL: [&str; 3] = [
    "analytics.mv_active_users",
    "analytics.mv_agent_performance",
    "analytics.mv_workspace_metrics",
];
const FALLBACK: [&str; 2] = ["analytics.mv_error_summary", "analytics.mv_top_agents"];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_worker_role_suffices_and_readers_see_only_summaries() -> Result<()> {
    readers_see_only_summaries(Some("deltamv_worker")).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readers_see_the_summaries_of_an_engine_run_as_superuser() -> Result<()> {
    readers_see_only_summaries(None).await
}

/// The engine runs as `engine_role` (`None`: the cluster's superuser, `postgres`).
async fn readers_see_only_summaries(engine_role: Option<&str>) -> Result<()> {
    let db = Database::start(None).await?;
    let admin = &db.client;
    admin
        .batch_execute(&std::fs::read_to_string("schema/roles.sql")?)
        .await?;
    admin
        .batch_execute("CREATE ROLE bi LOGIN IN ROLE analytics_reader")
        .await?;
    let engine_user = engine_role.unwrap_or("postgres");
    let superuser: bool = admin
        .query_one(
            "SELECT rolsuper FROM pg_roles WHERE rolname = $1",
            &[&engine_user],
        )
        .await?
        .get(0);
    assert_eq!(superuser, engine_role.is_none(), "{engine_user}");
    let mut w = Workload::new(17, micros(NOW));
    seed_rows(admin, &mut w, 300).await?;

    // The seed views, with row-level security on one of them and two kept as fallback views.
    let mut settings =
        "[views.\"analytics.mv_workspace_metrics\"]\ntenant_setting = \"app.workspace_id\"\n"
            .to_string();
    for view in FALLBACK {
        settings.push_str(&format!("[views.\"{view}\"]\nmode = \"fallback\"\n"));
    }
    let views = seed_views_with(&settings)?;
    let engine_url = db.url.replacen("postgres@", &format!("{engine_user}@"), 1);
    let env = EngineEnv::new(&engine_url, views.path())?;
    env.set_clock(NOW)?;
    let (code, out, err) = env.run_cmd(&["init"])?;
    assert_eq!(code, 0, "init as {engine_user}:\n{out}\n{err}");
    let mut engine = env.spawn_run()?;
    run_txns(admin, &mut w, 60).await?;
    wait_caught_up(admin, &mut engine, &env, Duration::from_secs(60)).await?;
    assert_converges(
        &env,
        Duration::from_secs(10),
        &format!("maintained by {engine_user}"),
    )
    .await?;

    let reader = support::connect(&db.url.replacen("postgres@", "bi@", 1)).await?;
    // Every target and fallback view, as the reader sees it (the tenant-filtered one aside).
    for view in INCREMENTAL.iter().chain(&FALLBACK) {
        let row = admin
            .query_one(
                "SELECT relkind::text, pg_get_userbyid(relowner)::text FROM pg_class WHERE oid = $1::text::regclass",
                &[view],
            )
            .await?;
        let (kind, owner): (String, String) = (row.get(0), row.get(1));
        let fallback = FALLBACK.contains(view);
        assert_eq!(
            (kind.as_str(), owner.as_str()),
            (if fallback { "m" } else { "r" }, engine_user),
            "{view}: created by the engine"
        );
        let sql = format!("SELECT count(*) FROM {view}");
        let seen: i64 = reader
            .query_one(&sql, &[])
            .await
            .map_err(|e| anyhow::anyhow!("the reader may read {view}: {e}"))?
            .get(0);
        // (Fallback views may be refreshed between two counts: the read itself is the check.)
        if !fallback && *view != "analytics.mv_workspace_metrics" {
            let all: i64 = admin.query_one(&sql, &[]).await?.get(0);
            assert_eq!(seen, all, "the reader sees all of {view}");
        }
        if *view == "analytics.mv_agent_performance" {
            assert!(seen > 0, "{view} has rows");
        }
    }
    let fresh: Vec<(String, String, Option<i64>)> = reader
        .query(
            "SELECT view_name, state, rows FROM deltamv.view_status ORDER BY view_name",
            &[],
        )
        .await?
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    assert_eq!(fresh.len(), 5, "and their freshness: {fresh:?}");
    assert!(
        fresh
            .iter()
            .all(|(_, state, rows)| state == "ok" && rows.is_some()),
        "{fresh:?}"
    );
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
        let (want, lag_expected) = if FALLBACK.contains(&view.as_str()) {
            ("fallback refresh", false)
        } else {
            ("initial load", true)
        };
        assert!(
            kind.as_deref() == Some(want) && ms.is_some() && lag.is_some() == lag_expected,
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
    // Refreshes and reconciles from SQL: the request functions run as their owner (the
    // engine's role), so neither the caller nor the worker needs more than schema/roles.sql
    // gives.
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
        "a reconcile through the engine run as {engine_user}"
    );
    let row = backend
        .query_one(
            "SELECT status, error FROM deltamv.refresh_view($1, timeout => '60 s')",
            &[&FALLBACK[1]],
        )
        .await?;
    let (status, error): (String, Option<String>) = (row.get(0), row.get(1));
    assert_eq!(
        (status.as_str(), error),
        ("done", None),
        "a fallback refresh through the engine run as {engine_user}"
    );
    reader
        .query_one(&format!("SELECT count(*) FROM {}", FALLBACK[1]), &[])
        .await
        .map_err(|e| anyhow::anyhow!("the reader still reads the refreshed view: {e}"))?;
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
