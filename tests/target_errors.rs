//! A target the engine can no longer write fails its view alone, loudly, and `deltamv init`
//! brings it back: a failed write is judged by its SQLSTATE class (transient: retried after a
//! reconnect; definite: this view fails with the error and the fix in `status`). Before, every
//! sink error counted as transient and the engine retried forever.
//!
//! The engine runs as `deltamv_worker` (schema/roles.sql): a superuser would bypass the revoked
//! privilege.

mod support;

use std::time::Duration;

use anyhow::{ensure, Result};
use support::engine::{
    assert_converges, assert_converges_except, micros, run_txns, seed_rows, terminate, view_state,
    wait_caught_up, Database, EngineChild, EngineEnv, SEED_VIEWS,
};
use support::workload::Workload;
use support::PgCluster;

const NOW: &str = "2026-11-05T17:00:00Z";

/// A database with the seed views initialised and maintained by `deltamv_worker`, and a
/// running engine that has caught up with a first round of writes.
struct Running {
    _cluster: PgCluster,
    admin: tokio_postgres::Client,
    env: EngineEnv,
    engine: EngineChild,
    w: Workload,
}

async fn start(seed: u64) -> Result<Running> {
    let db = Database::start(None).await?;
    db.client
        .batch_execute(&std::fs::read_to_string("schema/roles.sql")?)
        .await?;
    let mut w = Workload::new(seed, micros(NOW));
    w.allow_truncate = false;
    seed_rows(&db.client, &mut w, 300).await?;
    let env = EngineEnv::new(
        &db.url.replacen("postgres@", "deltamv_worker@", 1),
        std::path::Path::new("schema/views"),
    )?;
    env.set_clock(NOW)?;
    let (code, out, err) = env.run_cmd(&["init"])?;
    ensure!(code == 0, "init:\n{out}\n{err}");
    let mut engine = env.spawn_run()?;
    run_txns(&db.client, &mut w, 30).await?;
    wait_caught_up(&db.client, &mut engine, &env, Duration::from_secs(60)).await?;
    assert_converges(&env, Duration::from_secs(10), "before the fault").await?;
    Ok(Running {
        _cluster: db.cluster,
        admin: db.client,
        env,
        engine,
        w,
    })
}

/// After `fault` on `view`'s target: the engine keeps streaming, `view` is failed with a
/// message naming the table and containing `says`, the other views stay exact; after `repair`
/// and `deltamv init`, every view is maintained and exact again.
async fn fails_alone_until_init(
    r: &mut Running,
    view: &str,
    fault: &str,
    says: &[&str],
    repair: &str,
) -> Result<()> {
    r.admin.batch_execute(fault).await?;
    run_txns(&r.admin, &mut r.w, 40).await?;
    // The engine catches up past the failing writes (it does not retry them forever).
    wait_caught_up(&r.admin, &mut r.engine, &r.env, Duration::from_secs(60)).await?;
    let (state, error) = view_state(&r.admin, view).await?;
    ensure!(
        state == "failed",
        "{view} is {state} after `{fault}`; log:\n{}",
        r.env.engine_log()
    );
    ensure!(error.contains(view), "the error names the table: {error}");
    for s in says.iter().chain(&["deltamv init"]) {
        ensure!(error.contains(s), "the error says {s:?}: {error}");
    }
    let (_, status, _) = r.env.run_cmd(&["status"])?;
    ensure!(
        status.contains("failed") && status.contains(view),
        "status shows it:\n{status}"
    );
    // The others go on, exact, through more writes.
    run_txns(&r.admin, &mut r.w, 40).await?;
    wait_caught_up(&r.admin, &mut r.engine, &r.env, Duration::from_secs(60)).await?;
    assert_converges_except(&r.env, Duration::from_secs(10), "the other views", &[view]).await?;
    ensure!(
        r.engine.try_wait()?.is_none(),
        "the engine keeps running; log:\n{}",
        r.env.engine_log()
    );

    // The repair: the operator's fix, then `deltamv init` with the engine stopped.
    terminate(&mut r.engine, Duration::from_secs(10))?;
    r.admin.batch_execute(repair).await?;
    run_txns(&r.admin, &mut r.w, 20).await?;
    let (code, out, err) = r.env.run_cmd(&["init"])?;
    ensure!(code == 0, "init after the repair:\n{out}\n{err}");
    for v in SEED_VIEWS {
        let (state, error) = view_state(&r.admin, v).await?;
        ensure!(state == "ok", "{v} is {state} after init: {error}");
    }
    r.engine = r.env.spawn_run()?;
    run_txns(&r.admin, &mut r.w, 40).await?;
    wait_caught_up(&r.admin, &mut r.engine, &r.env, Duration::from_secs(60)).await?;
    assert_converges(&r.env, Duration::from_secs(10), "after init").await?;
    terminate(&mut r.engine, Duration::from_secs(10))?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_insert_fails_only_that_view_until_init() -> Result<()> {
    let mut r = start(41).await?;
    fails_alone_until_init(
        &mut r,
        "analytics.mv_workspace_metrics",
        "REVOKE INSERT ON analytics.mv_workspace_metrics FROM deltamv_worker",
        &["permission denied", "42501", "grant"],
        "GRANT INSERT ON analytics.mv_workspace_metrics TO deltamv_worker",
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_target_fails_only_that_view_until_init() -> Result<()> {
    let mut r = start(42).await?;
    fails_alone_until_init(
        &mut r,
        "analytics.mv_active_users",
        "DROP TABLE analytics.mv_active_users",
        &["does not exist", "42P01", "dropped"],
        // Nothing to restore: init creates the table again.
        "SELECT 1",
    )
    .await
}
