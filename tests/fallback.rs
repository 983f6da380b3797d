//! Fallback views: definitions outside the incremental language (here a JOIN and a window
//! function) are kept as materialized views and refreshed concurrently by the engine after the
//! tables or views they read change (debounced), on a schedule, and in dependency order.

mod support;

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use support::engine::{terminate, wait_caught_up, Database, EngineEnv, Fixture};

const NAMES: &str = "CREATE MATERIALIZED VIEW analytics.f_names AS
SELECT w.id AS workspace_id, w.name, r.runs
  FROM public.workspaces w JOIN analytics.v_runs r ON r.workspace_id = w.id;
CREATE UNIQUE INDEX f_names_key ON analytics.f_names (workspace_id);";
const RANKED: &str = "CREATE MATERIALIZED VIEW analytics.f_ranked AS
SELECT name, runs, DENSE_RANK() OVER (ORDER BY runs DESC) AS place FROM analytics.f_names;
CREATE UNIQUE INDEX f_ranked_key ON analytics.f_ranked (name);";
const RUNS: &str = "CREATE MATERIALIZED VIEW analytics.v_runs AS
SELECT workspace_id, COUNT(*) AS runs FROM public.agent_runs GROUP BY workspace_id;";
const SETTINGS: &str = "[defaults]\nmin_interval_ms = 0\n
[views.\"analytics.f_names\"]\nmin_interval_ms = 60000\n
[views.\"analytics.f_ranked\"]\nschedule = \"every 1h\"\n";

fn run(ws: u8) -> String {
    format!(
        "INSERT INTO public.agent_runs (agent_id, workspace_id, user_id, status, started_at)
         VALUES ('00000000-0000-4000-a000-0000000000{ws:02}', '00000000-0000-4000-a000-0000000000{ws:02}',
                 '00000000-0000-4000-a000-000000000099', 'completed', now());"
    )
}

/// Rows in which the materialized view and its query disagree.
async fn stale_rows(client: &tokio_postgres::Client, view: &str, query: &str) -> Result<i64> {
    let q = query.split_once(" AS\n").map(|(_, q)| q).unwrap_or(query);
    let q = q.split(';').next().unwrap_or(q);
    let sql = format!("SELECT count(*) FROM ((({q}) EXCEPT (SELECT * FROM {view})) UNION ALL ((SELECT * FROM {view}) EXCEPT ({q}))) d");
    Ok(client.query_one(&sql, &[]).await?.get(0))
}

async fn wait_fresh(
    client: &tokio_postgres::Client,
    view: &str,
    query: &str,
    env: &EngineEnv,
) -> Result<()> {
    let start = Instant::now();
    while stale_rows(client, view, query).await? > 0 {
        if start.elapsed() > Duration::from_secs(20) {
            bail!(
                "{view} was not refreshed within 20 s; log:\n{}",
                support::engine::tail(&env.engine_log(), 30)
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Ok(())
}

async fn history(client: &tokio_postgres::Client, view: &str) -> Result<i64> {
    Ok(client
        .query_one("SELECT count(*) FROM deltamv.refresh_history WHERE view_name = $1 AND kind = 'fallback refresh' AND error IS NULL", &[&view])
        .await?
        .get(0))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fallback_views_refresh_after_changes_debounced_scheduled_and_in_order() -> Result<()> {
    let db = Database::start(None).await?;
    db.client
        .batch_execute(
            "CREATE TABLE public.workspaces (id uuid PRIMARY KEY, name text NOT NULL UNIQUE);
             INSERT INTO public.workspaces VALUES ('00000000-0000-4000-a000-000000000001', 'alpha'),
                                                  ('00000000-0000-4000-a000-000000000002', 'beta');",
        )
        .await?;
    db.client.batch_execute(&(run(1) + &run(2))).await?;
    let views = tempfile::tempdir()?;
    for (file, sql) in [
        ("names.sql", NAMES),
        ("ranked.sql", RANKED),
        ("runs.sql", RUNS),
    ] {
        std::fs::write(views.path().join(file), sql)?;
    }
    std::fs::write(views.path().join("deltamv.toml"), SETTINGS)?;
    let Fixture {
        cluster: _cluster,
        client,
        env,
        ..
    } = db.engine(views.path(), Some("2026-05-01T10:00:00Z"))?;
    let (code, _, err) = env.run_cmd(&["init"])?;
    assert_eq!(code, 0, "{err}");
    let (code, out, _) = env.run_cmd(&["explain", "--view", "analytics.f_names"])?;
    assert_eq!(code, 0);
    assert!(
        out.contains("fallback: materialized view") && out.contains("JOIN"),
        "the reason is shown:\n{out}"
    );
    let kind: String = client
        .query_one(
            "SELECT relkind::text FROM pg_class WHERE oid = 'analytics.f_ranked'::regclass",
            &[],
        )
        .await?
        .get(0);
    assert_eq!(kind, "m", "a real materialized view");
    let (_, status, _) = env.run_cmd(&["status"])?;
    assert!(status.contains("(fallback)"), "{status}");
    assert_eq!(
        stale_rows(&client, "analytics.f_names", NAMES).await?,
        0,
        "filled by init"
    );

    let before_start = history(&client, "analytics.f_names").await?;
    let mut engine = env.spawn_run()?;
    // The engine refreshes every fallback view once at start (changes may have happened while it
    // was down); that refresh opens f_names' one-minute debounce window, so let it pass.
    let start = Instant::now();
    while history(&client, "analytics.f_names").await? == before_start {
        if start.elapsed() > Duration::from_secs(20) {
            bail!("no refresh at start");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    env.set_clock("2026-05-01T10:01:01Z")?;
    // A change to the incremental input reaches the fallback view, then the one reading it.
    client.batch_execute(&(run(2) + &run(2))).await?;
    // Compare only once the engine has applied the change to the incremental input.
    wait_caught_up(&client, &mut engine, &env, Duration::from_secs(30)).await?;
    wait_fresh(&client, "analytics.f_names", NAMES, &env).await?;
    wait_fresh(&client, "analytics.f_ranked", RANKED, &env).await?;

    // Debounce: f_names refreshes at most once a minute (engine clock), however many changes.
    client.batch_execute(&run(1)).await?;
    client
        .batch_execute("UPDATE public.workspaces SET name = 'gamma' WHERE name = 'alpha'")
        .await?;
    wait_caught_up(&client, &mut engine, &env, Duration::from_secs(30)).await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(
        stale_rows(&client, "analytics.f_names", NAMES).await? > 0,
        "refreshed within its minimum interval"
    );
    env.set_clock("2026-05-01T10:02:05Z")?;
    wait_fresh(&client, "analytics.f_names", NAMES, &env).await?;
    wait_fresh(&client, "analytics.f_ranked", RANKED, &env).await?;

    // Schedule: with nothing changed, f_ranked refreshes when its hour comes.
    let before = history(&client, "analytics.f_ranked").await?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        history(&client, "analytics.f_ranked").await?,
        before,
        "no refresh without a change or a due schedule"
    );
    env.set_clock("2026-05-01T11:03:00Z")?;
    let start = Instant::now();
    while history(&client, "analytics.f_ranked").await? == before {
        if start.elapsed() > Duration::from_secs(10) {
            bail!("the scheduled refresh did not happen");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // Two manual refreshes at once: PostgreSQL serializes them, both succeed.
    let a = env.spawn(&["refresh", "--view", "analytics.f_names"], &[])?;
    let b = env.spawn(&["refresh", "--view", "analytics.f_names"], &[])?;
    for mut p in [a, b] {
        let status = tokio::task::spawn_blocking(move || p.wait()).await??;
        assert!(
            status.success(),
            "a concurrent refresh failed; log:\n{}",
            env.engine_log()
        );
    }
    assert_eq!(stale_rows(&client, "analytics.f_names", NAMES).await?, 0);
    terminate(&mut engine, Duration::from_secs(10))?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fallback_needs_a_unique_index() -> Result<()> {
    let db = Database::start(None).await?;
    let views = tempfile::tempdir()?;
    std::fs::write(
        views.path().join("j.sql"),
        "CREATE MATERIALIZED VIEW analytics.j AS SELECT a.id, b.id AS other FROM public.agent_runs a JOIN public.agent_runs b ON a.id = b.id;",
    )?;
    let Fixture {
        cluster: _cluster,
        env,
        ..
    } = db.engine(Path::new(views.path()), None)?;
    let (code, _, err) = env.run_cmd(&["init"])?;
    assert_ne!(code, 0);
    assert!(
        err.contains("JOIN") && err.contains("UNIQUE index") && err.contains("j.sql"),
        "{err}"
    );
    Ok(())
}
