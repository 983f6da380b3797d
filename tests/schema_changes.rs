//! Schema changes on a source while the engine streams: ADD COLUMN is absorbed, DROP COLUMN
//! and a type change of a column a view reads fail exactly the views reading it (naming the
//! column) while the others stay exact, a dropped column's view stays failed across a restart,
//! TRUNCATE is applied, and a retyped view's target that no longer fits is named with its fix
//! (drop it, `init --resync`), after which the view is maintained with its new type.

mod support;

use std::path::Path;
use std::time::Duration;

use anyhow::{ensure, Result};
use support::engine::{
    assert_converges, assert_converges_except, run_txns, seed_and_init, terminate, view_state,
    wait_caught_up, Fixture,
};

const NOW: &str = "2026-03-07T12:00:00Z";

/// Writes to both tables with only the columns every step of this test keeps.
const PLAIN_WRITES: &str = "
    INSERT INTO public.agent_runs (agent_id, workspace_id, user_id, status, started_at, credits_consumed)
    SELECT agent_id, workspace_id, user_id, 'completed', started_at + interval '1 minute', 2.5
      FROM public.agent_runs ORDER BY id DESC LIMIT 40;
    UPDATE public.agent_runs SET status = 'failed' WHERE id % 7 = 0 AND status = 'running';
    DELETE FROM public.agent_runs WHERE id % 13 = 0;
    INSERT INTO analytics.user_activity (workspace_id, user_id, activity_type, created_at)
    SELECT workspace_id, user_id, 'login', created_at + interval '1 hour'
      FROM analytics.user_activity ORDER BY id DESC LIMIT 40;";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schema_changes_fail_only_the_views_reading_the_column() -> Result<()> {
    let fx = Fixture::start(None, Path::new("schema/views"), Some(NOW)).await?;
    let (client, env) = (&fx.client, &fx.env);
    let mut w = seed_and_init(client, env, 301, NOW).await?;
    let mut engine = env.spawn_run()?;
    let settle = |what: &'static str, skip: &'static [&'static str]| async move {
        assert_converges_except(env, Duration::from_secs(20), what, skip).await
    };

    // ADD COLUMN: absorbed, every view stays exact.
    client
        .batch_execute("ALTER TABLE public.agent_runs ADD COLUMN note text DEFAULT 'n'")
        .await?;
    run_txns(client, &mut w, 30).await?;
    wait_caught_up(client, &mut engine, env, Duration::from_secs(60)).await?;
    assert_converges(env, Duration::from_secs(20), "after ADD COLUMN").await?;

    // DROP COLUMN error_code: only mv_error_summary reads it.
    client
        .batch_execute("ALTER TABLE public.agent_runs DROP COLUMN error_code")
        .await?;
    client.batch_execute(PLAIN_WRITES).await?;
    wait_caught_up(client, &mut engine, env, Duration::from_secs(60)).await?;
    let (state, error) = view_state(client, "analytics.mv_error_summary").await?;
    ensure!(
        state == "failed" && error.contains("error_code"),
        "mv_error_summary should have failed naming error_code: {state} {error}"
    );
    const DROPPED: &[&str] = &["analytics.mv_error_summary"];
    settle("after DROP COLUMN", DROPPED).await?;

    // A restart: the view that no longer plans stays failed, the others go on.
    terminate(&mut engine, Duration::from_secs(10))?;
    let mut engine = env.spawn_run()?;
    client.batch_execute(PLAIN_WRITES).await?;
    wait_caught_up(client, &mut engine, env, Duration::from_secs(60)).await?;
    let (state, error) = view_state(client, "analytics.mv_error_summary").await?;
    ensure!(
        state == "failed" && error.contains("error_code"),
        "after a restart mv_error_summary should stay failed naming error_code: {state} {error}"
    );
    settle("after a restart", DROPPED).await?;

    // A type change of runtime_seconds: only mv_agent_performance reads it.
    client
        .batch_execute(
            "ALTER TABLE public.agent_runs ALTER COLUMN runtime_seconds TYPE numeric USING runtime_seconds::numeric",
        )
        .await?;
    client.batch_execute(PLAIN_WRITES).await?;
    wait_caught_up(client, &mut engine, env, Duration::from_secs(60)).await?;
    let (state, error) = view_state(client, "analytics.mv_agent_performance").await?;
    ensure!(
        state == "failed" && error.contains("runtime_seconds") && error.contains("changed type"),
        "mv_agent_performance should have failed naming runtime_seconds: {state} {error}"
    );
    const BOTH: &[&str] = &[
        "analytics.mv_error_summary",
        "analytics.mv_agent_performance",
    ];
    settle("after a type change", BOTH).await?;
    for view in [
        "analytics.mv_active_users",
        "analytics.mv_workspace_metrics",
    ] {
        ensure!(
            view_state(client, view).await?.0 == "ok",
            "{view} should still be ok"
        );
    }

    // TRUNCATE is applied.
    client
        .batch_execute("TRUNCATE analytics.user_activity")
        .await?;
    client.batch_execute(PLAIN_WRITES).await?;
    wait_caught_up(client, &mut engine, env, Duration::from_secs(60)).await?;
    settle("after TRUNCATE", BOTH).await?;
    terminate(&mut engine, Duration::from_secs(10))?;

    // The retyped view's target no longer fits its result: a restart says what to do, and
    // doing it brings the view back with the new type.
    let (code, _, err) = env.run_cmd(&["run"])?;
    ensure!(
        code == 2
            && err.contains("drop the table analytics.mv_agent_performance")
            && err.contains("init --resync"),
        "a restart should name the fix for the retyped view: {err}"
    );
    client
        .batch_execute("DROP TABLE analytics.mv_agent_performance")
        .await?;
    let (code, _, err) = env.run_cmd(&["init", "--resync"])?;
    ensure!(code == 0, "init --resync failed: {err}");
    let mut engine = env.spawn_run()?;
    client.batch_execute(PLAIN_WRITES).await?;
    wait_caught_up(client, &mut engine, env, Duration::from_secs(60)).await?;
    settle("after the resync", DROPPED).await?;
    ensure!(
        view_state(client, "analytics.mv_agent_performance")
            .await?
            .0
            == "ok",
        "the resync should bring mv_agent_performance back"
    );
    terminate(&mut engine, Duration::from_secs(10))?;
    Ok(())
}
