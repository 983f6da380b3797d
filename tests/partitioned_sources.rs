//! Partitioned source tables, as production event tables are: `agent_runs` range-partitioned by
//! month on `started_at` (primary key `(id, started_at)`, a default partition), and
//! `user_activity` hash-partitioned. Under the random workload (rows moving between partitions
//! when an UPDATE changes `started_at`), a kill -9, and every way rows join or leave a partition
//! tree without a row change in the stream (ATTACH, DETACH, TRUNCATE of one partition, DROP of an
//! attached partition), every view either equals PostgreSQL's own result or is failed loudly,
//! naming the partition and the fix. And a change the engine cannot attribute to a source stops
//! the stream instead of being dropped.

mod support;

use std::path::Path;
use std::time::Duration;

use anyhow::{ensure, Result};
use support::engine::{
    assert_converges, assert_converges_except, crash_during_writes, micros, run_txns,
    seed_and_init, seed_rows, tail, view_state, wait_caught_up, wait_for, write_and_converge,
    EngineEnv,
};
use support::workload::Workload;
use support::{ClusterOptions, PgCluster};

const NOW: &str = "2026-11-05T17:00:00Z";
const CATCH_UP: Duration = Duration::from_secs(90);

/// The sources of `schema/sources.sql`, partitioned. The workload writes `started_at` from about
/// 100 days before [`NOW`] to 2 days after: months August to November have partitions of their
/// own, everything else lands in the default partition.
const PARTITIONED_SOURCES: &str = "
CREATE SCHEMA analytics;
CREATE TABLE public.agent_runs (
    id bigserial,
    agent_id uuid NOT NULL,
    workspace_id uuid NOT NULL,
    user_id uuid NOT NULL,
    status text NOT NULL,
    started_at timestamptz NOT NULL,
    runtime_seconds double precision NULL,
    credits_consumed numeric(12,4) NULL,
    error_code text NULL,
    PRIMARY KEY (id, started_at)
) PARTITION BY RANGE (started_at);
CREATE TABLE public.agent_runs_2026_08 PARTITION OF public.agent_runs FOR VALUES FROM ('2026-08-01 00:00+00') TO ('2026-09-01 00:00+00');
CREATE TABLE public.agent_runs_2026_09 PARTITION OF public.agent_runs FOR VALUES FROM ('2026-09-01 00:00+00') TO ('2026-10-01 00:00+00');
CREATE TABLE public.agent_runs_2026_10 PARTITION OF public.agent_runs FOR VALUES FROM ('2026-10-01 00:00+00') TO ('2026-11-01 00:00+00');
CREATE TABLE public.agent_runs_2026_11 PARTITION OF public.agent_runs FOR VALUES FROM ('2026-11-01 00:00+00') TO ('2026-12-01 00:00+00');
CREATE TABLE public.agent_runs_default PARTITION OF public.agent_runs DEFAULT;
CREATE TABLE analytics.user_activity (
    id bigserial PRIMARY KEY,
    workspace_id uuid NOT NULL,
    user_id uuid NOT NULL,
    activity_type text NOT NULL,
    created_at timestamptz NOT NULL
) PARTITION BY HASH (id);
CREATE TABLE analytics.user_activity_0 PARTITION OF analytics.user_activity FOR VALUES WITH (MODULUS 3, REMAINDER 0);
CREATE TABLE analytics.user_activity_1 PARTITION OF analytics.user_activity FOR VALUES WITH (MODULUS 3, REMAINDER 1);
CREATE TABLE analytics.user_activity_2 PARTITION OF analytics.user_activity FOR VALUES WITH (MODULUS 3, REMAINDER 2);
";

const AGENT_RUN_VIEWS: [&str; 4] = [
    "analytics.mv_agent_performance",
    "analytics.mv_workspace_metrics",
    "analytics.mv_top_agents",
    "analytics.mv_error_summary",
];

struct Setup {
    _cluster: PgCluster,
    url: String,
    client: tokio_postgres::Client,
    env: EngineEnv,
}

async fn partitioned_database() -> Result<Setup> {
    let cluster = PgCluster::start(ClusterOptions::default().timezone("America/New_York"))?;
    let url = cluster.create_database("app")?;
    let client = support::connect(&url).await?;
    client.batch_execute(PARTITIONED_SOURCES).await?;
    let env = EngineEnv::new(&url, Path::new("schema/views"))?;
    env.set_clock(NOW)?;
    Ok(Setup {
        _cluster: cluster,
        url,
        client,
        env,
    })
}

async fn count(client: &tokio_postgres::Client, sql: &str) -> Result<i64> {
    Ok(client.query_one(sql, &[]).await?.get(0))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partitioned_sources_stay_exact_through_moves_attach_detach_and_truncate() -> Result<()> {
    let Setup {
        _cluster,
        url,
        client,
        env,
    } = partitioned_database().await?;
    let mut w = Workload::new(31, micros(NOW));
    w.allow_truncate = false;
    seed_rows(&client, &mut w, 800).await?;
    let (code, out, err) = env.run_cmd(&["init"])?;
    ensure!(code == 0, "init failed:\n{out}\n{err}");
    // Every seed view stays incremental: partitioning is no reason to fall back.
    let fallbacks = count(
        &client,
        "SELECT count(*) FROM deltamv.views WHERE mode <> 'incremental'",
    )
    .await?;
    assert_eq!(fallbacks, 0, "init output:\n{out}\n{err}");
    let via_root: bool = client
        .query_one(
            "SELECT pubviaroot FROM pg_publication WHERE pubname = 'deltamv_pub'",
            &[],
        )
        .await?
        .get(0);
    assert!(via_root, "the publication must publish through the root");

    let mut engine = env.spawn_run()?;
    run_txns(&client, &mut w, 200).await?;
    let moved = count(
        &client,
        "SELECT count(*) FROM public.agent_runs_default WHERE started_at < '2026-08-01'",
    )
    .await?;
    assert!(moved > 0, "the workload puts rows in the default partition");
    wait_caught_up(&client, &mut engine, &env, CATCH_UP).await?;
    assert_converges(&env, Duration::from_secs(10), "after writes that move rows").await?;

    let mut engine = crash_during_writes(
        &env,
        &mut engine,
        &url,
        77,
        micros(NOW),
        150,
        Duration::from_millis(600),
    )
    .await?;
    wait_caught_up(&client, &mut engine, &env, CATCH_UP).await?;
    assert_converges(&env, Duration::from_secs(10), "after kill -9 and restart").await?;

    // Expiring a month the way pg_partman does: detach (its rows leave the views), then drop the
    // detached table (nothing more to do).
    let august = count(&client, "SELECT count(*) FROM public.agent_runs_2026_08").await?;
    assert!(august > 0, "August has rows to expire");
    client
        .batch_execute("ALTER TABLE public.agent_runs DETACH PARTITION public.agent_runs_2026_08")
        .await?;
    write_and_converge(
        &client,
        &env,
        &mut w,
        &mut engine,
        30,
        "after DETACH PARTITION",
    )
    .await?;
    client
        .batch_execute("DROP TABLE public.agent_runs_2026_08")
        .await?;

    // A table filled elsewhere and attached: its rows join (inside a transaction that also
    // writes through the root before and after).
    client
        .batch_execute(
            "CREATE TABLE public.agent_runs_2026_06 (LIKE public.agent_runs INCLUDING DEFAULTS);
             INSERT INTO public.agent_runs_2026_06 (agent_id, workspace_id, user_id, status, started_at, runtime_seconds, credits_consumed, error_code)
             SELECT agent_id, workspace_id, user_id, status, '2026-06-01 00:00+00'::timestamptz + (id % 29) * interval '1 day' + interval '90 minutes',
                    runtime_seconds, credits_consumed, error_code
               FROM public.agent_runs ORDER BY id LIMIT 50;
             BEGIN;
             UPDATE public.agent_runs SET status = 'failed', error_code = 'E9' WHERE id IN (SELECT id FROM public.agent_runs ORDER BY id LIMIT 5);
             ALTER TABLE public.agent_runs ATTACH PARTITION public.agent_runs_2026_06 FOR VALUES FROM ('2026-06-01 00:00+00') TO ('2026-07-01 00:00+00');
             UPDATE public.agent_runs SET runtime_seconds = 1.5 WHERE started_at < '2026-07-01 00:00+00';
             COMMIT;",
        )
        .await?;
    assert_eq!(
        count(&client, "SELECT count(*) FROM public.agent_runs WHERE started_at >= '2026-06-01 00:00+00' AND started_at < '2026-07-01 00:00+00'").await?,
        50
    );
    write_and_converge(
        &client,
        &env,
        &mut w,
        &mut engine,
        30,
        "after ATTACH PARTITION",
    )
    .await?;

    // TRUNCATE of one partition (not published via the root) and of a hash partition.
    client
        .batch_execute("TRUNCATE public.agent_runs_2026_09; TRUNCATE analytics.user_activity_1;")
        .await?;
    run_txns(&client, &mut w, 30).await?;
    wait_caught_up(&client, &mut engine, &env, CATCH_UP).await?;
    assert_converges(
        &env,
        Duration::from_secs(10),
        "after TRUNCATE of a partition",
    )
    .await?;

    // A partition created empty, then written through the root: an ordinary insert.
    client
        .batch_execute(
            "CREATE TABLE public.agent_runs_2026_05 PARTITION OF public.agent_runs FOR VALUES FROM ('2026-05-01 00:00+00') TO ('2026-06-01 00:00+00');
             UPDATE public.agent_runs SET started_at = started_at - interval '20 days' WHERE started_at >= '2026-06-01 00:00+00' AND started_at < '2026-06-15 00:00+00';",
        )
        .await?;
    ensure!(
        count(&client, "SELECT count(*) FROM public.agent_runs_2026_05").await? > 0,
        "rows moved into the new partition"
    );
    wait_caught_up(&client, &mut engine, &env, CATCH_UP).await?;
    assert_converges(&env, Duration::from_secs(10), "after a new partition").await?;

    // A restart after all this resumes exactly (the triggers' record is what the stream said).
    support::engine::kill9(&mut engine);
    let mut engine = env.spawn_run()?;
    write_and_converge(
        &client,
        &env,
        &mut w,
        &mut engine,
        50,
        "after a second restart",
    )
    .await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_an_attached_partition_fails_its_views_loudly() -> Result<()> {
    let Setup {
        _cluster,
        url: _,
        client,
        env,
    } = partitioned_database().await?;
    let mut w = seed_and_init(&client, &env, 5, NOW).await?;
    let mut engine = env.spawn_run()?;
    run_txns(&client, &mut w, 40).await?;
    wait_caught_up(&client, &mut engine, &env, CATCH_UP).await?;

    client
        .batch_execute("DROP TABLE public.agent_runs_2026_10")
        .await?;
    run_txns(&client, &mut w, 20).await?;
    for view in AGENT_RUN_VIEWS {
        let error = wait_for(
            &mut engine,
            &env,
            Duration::from_secs(30),
            &format!("{view} never failed"),
            async || {
                let (state, error) = view_state(&client, view).await?;
                Ok((state == "failed").then_some(error))
            },
        )
        .await?;
        assert!(
            error.contains("agent_runs_2026_10") && error.contains("init --resync"),
            "{view}: the error names the partition and the fix: {error}"
        );
    }
    // The view over the other source goes on, exact.
    assert_eq!(
        view_state(&client, "analytics.mv_active_users").await?.0,
        "ok"
    );
    run_txns(&client, &mut w, 20).await?;
    wait_caught_up(&client, &mut engine, &env, CATCH_UP).await?;
    assert_converges_except(
        &env,
        Duration::from_secs(10),
        "the other source's view after a lost partition",
        &AGENT_RUN_VIEWS,
    )
    .await?;
    // The fix the message names brings every view back, exact.
    support::engine::kill9(&mut engine);
    let (code, out, err) = env.run_cmd(&["init", "--resync"])?;
    ensure!(code == 0, "init --resync failed:\n{out}\n{err}");
    let mut engine = env.spawn_run()?;
    write_and_converge(
        &client,
        &env,
        &mut w,
        &mut engine,
        20,
        "after init --resync",
    )
    .await?;
    for view in AGENT_RUN_VIEWS {
        assert_eq!(view_state(&client, view).await?.0, "ok", "{view}");
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_no_source_accounts_for_stops_the_stream() -> Result<()> {
    let Setup {
        _cluster,
        url: _,
        client,
        env,
    } = partitioned_database().await?;
    seed_and_init(&client, &env, 9, NOW).await?;
    let mut engine = env.spawn_run()?;
    wait_caught_up(&client, &mut engine, &env, CATCH_UP).await?;
    // Someone turns publishing through the root off: changes now arrive under the leaves' names.
    client
        .batch_execute(
            "ALTER PUBLICATION deltamv_pub SET (publish_via_partition_root = false);
             UPDATE public.agent_runs SET status = 'cancelled' WHERE id = 1;",
        )
        .await?;
    let started = std::time::Instant::now();
    let exit = loop {
        if let Some(status) = engine.try_wait()? {
            break status;
        }
        ensure!(
            started.elapsed() < Duration::from_secs(30),
            "the engine went on streaming changes it cannot attribute; log:\n{}",
            tail(&env.engine_log(), 20)
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(!exit.success(), "the engine must stop with an error");
    let log = env.engine_log();
    assert!(
        log.contains("is not a source of any view") && log.contains("publish_via_partition_root"),
        "the error names the table and the fix:\n{}",
        tail(&log, 20)
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_superuser_a_partitioned_source_is_refused_with_the_fix() -> Result<()> {
    let Setup {
        _cluster,
        url,
        client,
        env: _,
    } = partitioned_database().await?;
    client
        .batch_execute(&std::fs::read_to_string("schema/roles.sql")?)
        .await?;
    let worker = EngineEnv::new(
        &url.replacen("postgres@", "deltamv_worker@", 1),
        Path::new("schema/views"),
    )?;
    worker.set_clock(NOW)?;
    let (code, out, err) = worker.run_cmd(&["init"])?;
    assert_ne!(code, 0, "init must refuse:\n{out}\n{err}");
    assert!(
        err.contains("public.agent_runs")
            && err.contains("partitioned")
            && err.contains("superuser"),
        "the refusal names the table, the reason and the fix:\n{err}"
    );
    // Nothing was half-written: the bookkeeping schema's creation was rolled back with it.
    let created: bool = client
        .query_one("SELECT to_regclass('deltamv.views') IS NOT NULL", &[])
        .await?
        .get(0);
    assert!(!created, "a refused init leaves no deltamv schema behind");
    Ok(())
}
