//! The randomized differential test: seeded random workloads (every kind of change, concurrent
//! writers during `init`, kill -9 restarts, midnights) against a real PostgreSQL, and after each
//! phase every target compared with PostgreSQL's own evaluation of the view's SQL.
//!
//! Knobs: `DELTAMV_TEST_SEED` (default: fixed seeds), `DELTAMV_TEST_TXNS` (transactions per phase).

mod support;

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use support::engine::{assert_converges, kill9, terminate, wait_caught_up, EngineEnv};
use support::workload::Workload;
use support::{ClusterOptions, PgCluster};

const CATCH_UP: Duration = Duration::from_secs(90);

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

fn micros(rfc3339: &str) -> i64 {
    chrono::DateTime::parse_from_rfc3339(rfc3339)
        .map(|t| t.timestamp_micros())
        .unwrap_or(0)
}

async fn run_txns(client: &tokio_postgres::Client, w: &mut Workload, n: usize) -> Result<()> {
    for _ in 0..n {
        let sql = w.transaction();
        if let Err(e) = client.batch_execute(&sql).await {
            let _ = client.batch_execute("ROLLBACK").await;
            return Err(e).with_context(|| format!("workload transaction failed:\n{sql}"));
        }
    }
    Ok(())
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
    let cluster = PgCluster::start(ClusterOptions::default().timezone("America/New_York"))?;
    let url = cluster.create_database("app")?;
    let client = support::connect(&url).await?;
    client
        .batch_execute(&std::fs::read_to_string("schema/sources.sql")?)
        .await?;
    let env = EngineEnv::new(&url, Path::new("schema/views"))?;
    let mut now = "2026-11-05T17:00:00Z".to_string();
    env.set_clock(&now)?;
    let mut w = Workload::new(seed, micros(&now));
    for stmt in w.seed_rows(1500) {
        client.batch_execute(&stmt).await?;
    }
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
            for stmt in w2.seed_rows(300) {
                c.batch_execute(&stmt).await?;
            }
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
    let mid = tokio::spawn({
        let url = url.clone();
        let mut w3 = Workload::new(seed ^ 0xbeef, micros(&now));
        w3.allow_truncate = false;
        async move {
            let c = support::connect(&url).await?;
            run_txns(&c, &mut w3, n).await
        }
    });
    tokio::time::sleep(Duration::from_millis(700)).await;
    kill9(&mut engine);
    mid.await??;
    let mut engine = env.spawn_run()?;
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
    let exit = terminate(&mut engine, Duration::from_secs(10))?;
    assert_eq!(
        exit,
        Some(0),
        "deltamv run did not exit cleanly within 10 s of SIGTERM"
    );
    Ok(())
}
