//! Engine behaviour beyond plain equality: a view whose data violates its declared unique index
//! fails alone; unchanged TOASTed values are taken from the stored row image; an idle engine lets
//! the slot follow the server's WAL so nothing piles up; each batch finds its groups in the
//! targets through an index, never by scanning a whole target; changed groups are updated in
//! place, except where a unique index over other columns could trip mid-statement.

mod support;

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use support::engine::{
    assert_converges, differences, terminate, wait_caught_up, EngineEnv, Fixture, SLOT,
};
use support::workload::{run_row, A1, U1, W1, W2};
use support::PgCluster;

const NOW: &str = "2026-11-05T17:00:00Z";

async fn setup(views: &Path) -> Result<(PgCluster, tokio_postgres::Client, EngineEnv)> {
    let f = Fixture::start(Some("Europe/Berlin"), views, Some(NOW)).await?;
    Ok((f.cluster, f.client, f.env))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_unique_index_violation_fails_only_that_view() -> Result<()> {
    let (_cluster, client, env) = setup(Path::new("schema/views")).await?;
    client
        .batch_execute(&run_row(A1, W1, "completed", "2026-11-04 10:00:00+00"))
        .await?;
    let (code, _, err) = env.run_cmd(&["init"])?;
    assert_eq!(code, 0, "{err}");
    let mut engine = env.spawn_run()?;
    // The same agent in a second workspace on the same day: two rows of
    // mv_agent_performance share (agent_id, run_date), which its declared unique index forbids.
    client
        .batch_execute(&run_row(A1, W2, "failed", "2026-11-04 12:00:00+00"))
        .await?;
    client
        .batch_execute(
            "INSERT INTO analytics.user_activity (workspace_id, user_id, activity_type, created_at)
             VALUES ('22222222-2222-4222-a222-222222222222', '44444444-4444-4444-a444-444444444444', 'chat', '2026-11-05 09:00:00+00')",
        )
        .await?;
    wait_caught_up(&client, &mut engine, &env, Duration::from_secs(60)).await?;
    let row = client
        .query_one("SELECT state, coalesce(last_error, '') FROM deltamv.views WHERE view_name = 'analytics.mv_agent_performance'", &[])
        .await?;
    let (state, error): (String, String) = (row.get(0), row.get(1));
    assert_eq!(state, "failed", "engine log:\n{}", env.engine_log());
    assert!(
        error.contains("idx_mv_agent_performance"),
        "the error names the index: {error}"
    );
    let (_, status, _) = env.run_cmd(&["status"])?;
    assert!(
        status.contains("failed") && status.contains("idx_mv_agent_performance"),
        "status shows it:\n{status}"
    );
    // The other views keep running and stay exact.
    let diff = differences(&env).await?;
    let others: Vec<&str> = diff
        .lines()
        .filter(|l| l.starts_with("analytics.") && !l.contains("mv_agent_performance"))
        .collect();
    assert!(others.is_empty(), "other views differ:\n{diff}");
    client
        .batch_execute(&run_row(A1, W1, "completed", "2026-11-05 08:00:00+00"))
        .await?;
    wait_caught_up(&client, &mut engine, &env, Duration::from_secs(60)).await?;
    let diff = differences(&env).await?;
    assert!(
        diff.contains("mv_agent_performance"),
        "the failed view is stale, and reconcile says so:\n{diff}"
    );
    assert!(
        !diff.contains("mv_workspace_metrics") && !diff.contains("mv_active_users"),
        "{diff}"
    );
    terminate(&mut engine, Duration::from_secs(10))?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unchanged_toasted_values_come_from_the_row_image() -> Result<()> {
    let views = tempfile::tempdir()?;
    std::fs::write(
        views.path().join("codes.sql"),
        "CREATE MATERIALIZED VIEW analytics.mv_codes AS
         SELECT workspace_id, COUNT(DISTINCT error_code) AS codes, MAX(error_code) AS last_code,
                COUNT(*) FILTER (WHERE status = 'failed') AS failed
           FROM public.agent_runs GROUP BY workspace_id;",
    )?;
    let (_cluster, client, env) = setup(views.path()).await?;
    // Long, incompressible codes are stored out of line (TOAST); an UPDATE that does not touch
    // them sends them as "unchanged" on the replication stream.
    let big = |seed: u32| -> String {
        (0..4000u32)
            .map(|i| {
                format!(
                    "{:02x}",
                    (i.wrapping_mul(2654435761) ^ seed.wrapping_mul(0x9E37_79B9))
                        .wrapping_mul(0x85EB_CA6B)
                        >> 24
                )
            })
            .collect()
    };
    for (i, ws) in [W1, W2].iter().enumerate() {
        client
            .batch_execute(&format!(
                "INSERT INTO public.agent_runs (agent_id, workspace_id, user_id, status, started_at, error_code)
                 VALUES ('{A1}', '{ws}', '{U1}', 'running', now(), '{}'), ('{A1}', '{ws}', '{U1}', 'running', now(), '{}')",
                big(i as u32),
                big(i as u32 + 7)
            ))
            .await?;
    }
    let (code, _, err) = env.run_cmd(&["init"])?;
    assert_eq!(code, 0, "{err}");
    let mut engine = env.spawn_run()?;
    client
        .batch_execute("UPDATE public.agent_runs SET status = 'failed'")
        .await?;
    client.batch_execute("UPDATE public.agent_runs SET workspace_id = '22222222-2222-4222-a222-222222222222' WHERE id = 3").await?;
    wait_caught_up(&client, &mut engine, &env, Duration::from_secs(60)).await?;
    assert_converges(
        &env,
        Duration::from_secs(10),
        "after updates that leave TOASTed values unchanged",
    )
    .await?;
    let codes: i64 = client
        .query_one("SELECT sum(codes)::int8 FROM analytics.mv_codes", &[])
        .await?
        .get(0);
    assert_eq!(codes, 4, "all four long codes are still counted");
    terminate(&mut engine, Duration::from_secs(10))?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_engine_lets_the_slot_follow_the_wal() -> Result<()> {
    let (_cluster, client, env) = setup(Path::new("schema/views")).await?;
    let (code, _, err) = env.run_cmd(&["init"])?;
    assert_eq!(code, 0, "{err}");
    let mut engine = env.spawn_run()?;
    client
        .batch_execute("CREATE TABLE public.unrelated (id int); ")
        .await?;
    for i in 0..200 {
        client
            .batch_execute(&format!(
                "INSERT INTO public.unrelated SELECT g FROM generate_series(1, {}) g",
                100 + i
            ))
            .await?;
    }
    let start = Instant::now();
    let target: String = client
        .query_one("SELECT pg_current_wal_insert_lsn()::text", &[])
        .await?
        .get(0);
    loop {
        let ok: bool = client
            .query_one(
                "SELECT confirmed_flush_lsn >= $1::text::pg_lsn FROM pg_replication_slots WHERE slot_name = $2",
                &[&target, &SLOT],
            )
            .await
            .context("reading the slot")?
            .get(0);
        if ok {
            break;
        }
        if start.elapsed() > Duration::from_secs(10) {
            bail!(
                "the slot did not reach {target} within 10 s of the last write:\n{}",
                env.engine_log()
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let exit = terminate(&mut engine, Duration::from_secs(10))?;
    assert_eq!(exit, Some(0));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn explain_prints_the_maintenance_plan() -> Result<()> {
    let (_cluster, _client, env) = setup(Path::new("schema/views")).await?;
    let (code, out, err) = env.run_cmd(&["explain", "--view", "analytics.mv_agent_performance"])?;
    assert_eq!(code, 0, "{err}");
    eprintln!("{out}");
    for expected in [
        "view analytics.mv_agent_performance",
        "sink: upsert changed groups by (agent_id, workspace_id, run_date)",
        "PercentileCont(0.95)(runtime_seconds) -> double precision  keeps: counted multiset",
        "Sum(credits_consumed) -> numeric  keeps: exact sum and count",
        "time-dependent: started_at >= ",
        "scan public.agent_runs",
    ] {
        assert!(out.contains(expected), "explain lacks {expected:?}:\n{out}");
    }
    let (code, out, _) = env.run_cmd(&["explain", "--view", "analytics.mv_workspace_metrics"])?;
    assert_eq!(code, 0);
    let depth = |needle: &str| {
        out.lines()
            .find(|l| l.contains(needle))
            .map(|l| l.len() - l.trim_start().len())
    };
    assert!(
        depth("scan public.agent_runs") > depth("sink:"),
        "the inner aggregate is nested deeper:\n{out}"
    );
    let (code, _, err) = env.run_cmd(&["explain", "--view", "analytics.nope"])?;
    assert_ne!(code, 0);
    assert!(err.contains("no view named"), "{err}");
    Ok(())
}

/// Whole-table scans and index scans of the two targets so far.
async fn target_scans(client: &tokio_postgres::Client) -> Result<Vec<(String, i64, i64)>> {
    let rows = client
        .query(
            "SELECT relname::text, seq_scan, coalesce(idx_scan, 0) FROM pg_stat_user_tables
              WHERE schemaname = 'analytics' AND relname IN ('mv_top_agents', 'mv_runs_by_workspace')
              ORDER BY relname",
            &[],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect())
}

/// A view whose file declares no index: the engine indexes its target by the group key.
const RUNS_BY_WORKSPACE: &str = "CREATE MATERIALIZED VIEW analytics.mv_runs_by_workspace AS
SELECT workspace_id, COUNT(*) AS runs, SUM(credits_consumed) AS credits
FROM public.agent_runs GROUP BY workspace_id;";

/// Each batch deletes its changed groups by key: through an index, never by scanning a whole
/// target. A view file without an index gets one on the target's key (and again at the next
/// start if it was dropped); init analyzes the targets, so the planner knows how few rows a key
/// matches (unanalyzed, mv_top_agents was scanned whole by every batch of the benchmark).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batches_find_their_groups_through_an_index() -> Result<()> {
    let views = tempfile::tempdir()?;
    std::fs::write(
        views.path().join("mv_runs_by_workspace.sql"),
        RUNS_BY_WORKSPACE,
    )?;
    std::fs::copy(
        "schema/views/mv_top_agents.sql",
        views.path().join("mv_top_agents.sql"),
    )?;
    let (_cluster, client, env) = setup(views.path()).await?;
    // 2,000 workspaces of one agent each, three runs apiece.
    client
        .batch_execute(
            "INSERT INTO public.agent_runs (agent_id, workspace_id, user_id, status, started_at, runtime_seconds, credits_consumed)
             SELECT md5('a' || w)::uuid, md5('w' || w)::uuid, md5('u' || w)::uuid, 'completed',
                    timestamptz '2026-11-04 08:00:00+00' + r * interval '1 hour', 10 + r, 1.5
               FROM generate_series(1, 2000) w, generate_series(1, 3) r",
        )
        .await?;
    let (code, _, err) = env.run_cmd(&["init"])?;
    assert_eq!(code, 0, "{err}");
    let analyzed: i64 = client
        .query_one(
            "SELECT count(DISTINCT tablename) FROM pg_stats WHERE schemaname = 'analytics'
                AND tablename IN ('mv_top_agents', 'mv_runs_by_workspace')",
            &[],
        )
        .await?
        .get(0);
    assert_eq!(
        analyzed, 2,
        "init leaves the targets with planner statistics"
    );

    let mut engine = env.spawn_run()?;
    wait_caught_up(&client, &mut engine, &env, Duration::from_secs(60)).await?;
    // Statistics reach the views a moment after each transaction (PostgreSQL 15 flushes them
    // from idle backends at most once a second).
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let before = target_scans(&client).await?;
    let batches = 20;
    for w in 1..=batches {
        client
            .batch_execute(&format!(
                "INSERT INTO public.agent_runs (agent_id, workspace_id, user_id, status, started_at, runtime_seconds, credits_consumed)
                 VALUES (md5('a{w}')::uuid, md5('w{w}')::uuid, md5('u{w}')::uuid, 'completed', '2026-11-05 09:00:00+00', 3, 0.5)"
            ))
            .await?;
        wait_caught_up(&client, &mut engine, &env, Duration::from_secs(60)).await?;
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let after = target_scans(&client).await?;
    assert_eq!(before.len(), 2, "{before:?}");
    for ((table, seq0, idx0), (_, seq1, idx1)) in before.iter().zip(&after) {
        assert!(
            seq1 - seq0 <= 2 && idx1 - idx0 >= batches / 2,
            "{table}: {} whole scans and {} index scans over {batches} batches",
            seq1 - seq0,
            idx1 - idx0
        );
    }
    assert_eq!(differences(&env).await?, "", "the targets stay exact");

    terminate(&mut engine, Duration::from_secs(10))?;
    let key_index = "SELECT c.relname::text FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid
                      WHERE i.indrelid = 'analytics.mv_runs_by_workspace'::regclass";
    let index: String = client.query_one(key_index, &[]).await?.get(0);
    client
        .batch_execute(&format!("DROP INDEX analytics.{index}"))
        .await?;
    let mut engine = env.spawn_run()?;
    wait_caught_up(&client, &mut engine, &env, Duration::from_secs(60)).await?;
    let again = client.query(key_index, &[]).await?;
    assert_eq!(again.len(), 1, "a start puts the key index back");
    terminate(&mut engine, Duration::from_secs(10))?;
    Ok(())
}

/// The agent that takes over rank 1 of its workspace (a top-k swap).
const A2: &str = "55555555-5555-4555-a555-555555555555";

/// A target's row counters: updated, HOT-updated, deleted.
type Counters = (i64, i64, i64);

async fn target_counters(client: &tokio_postgres::Client, table: &str) -> Result<Counters> {
    let row = client
        .query_one(
            "SELECT n_tup_upd, n_tup_hot_upd, n_tup_del FROM pg_stat_user_tables
              WHERE schemaname = 'analytics' AND relname = $1",
            &[&table],
        )
        .await?;
    Ok((row.get(0), row.get(1), row.get(2)))
}

/// Waits until `table`'s counters satisfy `done`. PostgreSQL 15 flushes a backend's statistics
/// at most once a second, and an idle one's up to 10 s later.
async fn wait_counters(
    client: &tokio_postgres::Client,
    table: &str,
    done: impl Fn(Counters) -> bool,
) -> Result<Counters> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let now = target_counters(client, table).await?;
        if done(now) {
            return Ok(now);
        }
        if Instant::now() > deadline {
            bail!("{table}: counters (updated, HOT, deleted) stayed at {now:?}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// A changed group's row is updated in place, most often without touching the indexes (the
/// targets leave room in their pages). A top-k view whose file adds a unique index over agents
/// gets two agents trading ranks: there it deletes and inserts, as an update row by row would
/// collide with the other agent's old row.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changed_groups_are_updated_in_place_unless_an_index_forbids_it() -> Result<()> {
    let views = tempfile::tempdir()?;
    std::fs::copy(
        "schema/views/mv_agent_performance.sql",
        views.path().join("mv_agent_performance.sql"),
    )?;
    let top = std::fs::read_to_string("schema/views/mv_top_agents.sql")?;
    std::fs::write(
        views.path().join("mv_top_agents.sql"),
        format!("{top}\nCREATE UNIQUE INDEX idx_top_agents_agent ON analytics.mv_top_agents (workspace_id, agent_id);\n"),
    )?;
    let (_cluster, client, env) = setup(views.path()).await?;
    for at in ["2026-11-04 08:00:00+00", "2026-11-04 09:00:00+00"] {
        client
            .batch_execute(&run_row(A1, W1, "completed", at))
            .await?;
    }
    client
        .batch_execute(&run_row(A2, W1, "completed", "2026-11-04 10:00:00+00"))
        .await?;
    let (code, _, err) = env.run_cmd(&["init"])?;
    assert_eq!(code, 0, "{err}");
    let fillfactor: Vec<String> = client
        .query_one(
            "SELECT reloptions::text[] FROM pg_class WHERE oid = 'analytics.mv_agent_performance'::regclass",
            &[],
        )
        .await?
        .get(0);
    assert_eq!(fillfactor, ["fillfactor=80"]);

    let mut engine = env.spawn_run()?;
    let (updated0, hot0, _) = target_counters(&client, "mv_agent_performance").await?;
    for hour in 11..16 {
        client
            .batch_execute(&run_row(
                A1,
                W1,
                "failed",
                &format!("2026-11-04 {hour}:00:00+00"),
            ))
            .await?;
        wait_caught_up(&client, &mut engine, &env, Duration::from_secs(60)).await?;
    }
    // Five batches changed one group: five updates, HOT but perhaps the first.
    wait_counters(&client, "mv_agent_performance", |(updated, hot, _)| {
        updated - updated0 >= 5 && hot - hot0 >= 4
    })
    .await?;

    // A2 overtakes A1 in one transaction: ranks 1 and 2 trade agents.
    let (top_updated0, _, top_deleted0) = target_counters(&client, "mv_top_agents").await?;
    client
        .batch_execute(&format!(
            "BEGIN; {} {} COMMIT;",
            run_row(A2, W1, "completed", "2026-11-05 08:00:00+00"),
            run_row(A2, W1, "completed", "2026-11-05 09:00:00+00")
        ))
        .await?;
    wait_caught_up(&client, &mut engine, &env, Duration::from_secs(60)).await?;
    let state: String = client
        .query_one(
            "SELECT state FROM deltamv.views WHERE view_name = 'analytics.mv_top_agents'",
            &[],
        )
        .await?
        .get(0);
    assert_ne!(state, "failed", "engine log:\n{}", env.engine_log());
    let (top_updated, _, _) = wait_counters(&client, "mv_top_agents", |(_, _, deleted)| {
        deleted >= top_deleted0 + 2
    })
    .await?;
    assert_eq!(
        top_updated, top_updated0,
        "the two ranks were deleted and inserted, not updated"
    );
    let first: String = client
        .query_one(
            "SELECT agent_id::text FROM analytics.mv_top_agents WHERE rank = 1",
            &[],
        )
        .await?
        .get(0);
    assert_eq!(first, A2);
    assert_eq!(differences(&env).await?, "", "the targets stay exact");
    terminate(&mut engine, Duration::from_secs(10))?;
    Ok(())
}
