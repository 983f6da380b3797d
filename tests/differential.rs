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
use support::engine::{
    assert_converges, crash_during_writes, kill9, micros, run_txns, seed_rows, terminate,
    wait_caught_up, Fixture,
};
use support::workload::Workload;

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
    let Fixture {
        cluster: _cluster,
        url,
        client,
        env,
    } = Fixture::start(
        Some("America/New_York"),
        Path::new("schema/views"),
        Some(&now),
    )
    .await?;
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
    let exit = terminate(&mut engine, Duration::from_secs(10))?;
    assert_eq!(
        exit,
        Some(0),
        "deltamv run did not exit cleanly within 10 s of SIGTERM"
    );
    Ok(())
}
