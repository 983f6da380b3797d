//! Large transactions are folded part by part with bounded memory: 300k rows inserted in one
//! transaction, then one UPDATE touching every row (and so every group), each applied exactly
//! with the engine's peak RSS reported and bounded; a crash in the middle of such a
//! transaction ends, after a plain restart, in targets equal to PostgreSQL's evaluation; and a
//! midnight that comes while one is folded waits for its end.

mod support;

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Result};
use support::engine::{
    assert_converges, seed_and_init, tail, terminate, wait_caught_up, wait_for, Fixture,
};

const NOW: &str = "2026-03-07T12:00:00Z";

const BIG_INSERT: &str = "
    INSERT INTO public.agent_runs (agent_id, workspace_id, user_id, status, started_at, runtime_seconds, credits_consumed, error_code)
    SELECT md5((g % 2000)::text)::uuid, md5((g % 200)::text || 'w')::uuid, md5((g % 5000)::text || 'u')::uuid,
           CASE WHEN g % 5 = 0 THEN 'failed' ELSE 'completed' END,
           '2026-03-07 10:00:00+00'::timestamptz - (g % 40) * interval '1 day',
           g % 300, (g % 1000) / 100.0, CASE WHEN g % 5 = 0 THEN 'timeout' END
      FROM generate_series(1, 300000) g";

const TOUCH_ALL: &str =
    "UPDATE public.agent_runs SET runtime_seconds = coalesce(runtime_seconds, 0) + 1, credits_consumed = credits_consumed * 2";

/// The engine's peak resident set (VmHWM) in MB.
fn peak_rss_mb(pid: u32) -> Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0);
    Ok(kb / 1024)
}

/// Peak RSS allowed while applying: the 300k-row transaction held whole took about 1 GB.
const RSS_LIMIT_MB: u64 = 600;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_transactions_apply_with_bounded_memory() -> Result<()> {
    let fx = Fixture::start(None, Path::new("schema/views"), Some(NOW)).await?;
    let (client, env) = (&fx.client, &fx.env);
    let _w = seed_and_init(client, env, 501, NOW).await?;
    let mut engine = env.spawn_run()?;
    for (what, sql) in [
        ("a 300k-row insert", BIG_INSERT),
        ("an update of every row", TOUCH_ALL),
    ] {
        client.batch_execute(sql).await?;
        wait_caught_up(client, &mut engine, env, Duration::from_secs(300)).await?;
        assert_converges(env, Duration::from_secs(20), what).await?;
        let peak = peak_rss_mb(engine.id())?;
        eprintln!("peak RSS after {what}: {peak} MB");
        ensure!(
            peak < RSS_LIMIT_MB,
            "peak RSS {peak} MB after {what}: the transaction was not applied in bounded memory"
        );
    }
    terminate(&mut engine, Duration::from_secs(10))?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_inside_a_large_transaction_converges_after_restart() -> Result<()> {
    let fx = Fixture::start(None, Path::new("schema/views"), Some(NOW)).await?;
    let (client, env) = (&fx.client, &fx.env);
    let _w = seed_and_init(client, env, 502, NOW).await?;
    let mut crashing = env.spawn(&["run"], &[("DELTAMV_FAILPOINT", "after_part:3")])?;
    client.batch_execute(BIG_INSERT).await?;
    let start = Instant::now();
    loop {
        if let Some(status) = crashing.try_wait()? {
            ensure!(
                !status.success(),
                "the engine exited cleanly instead of crashing"
            );
            break;
        }
        if start.elapsed() > Duration::from_secs(120) {
            bail!(
                "the failpoint was not reached:\n{}",
                tail(&env.engine_log(), 30)
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut engine = env.spawn_run()?;
    client.batch_execute(TOUCH_ALL).await?;
    wait_caught_up(client, &mut engine, env, Duration::from_secs(300)).await?;
    assert_converges(
        env,
        Duration::from_secs(20),
        "after a crash inside a large transaction",
    )
    .await?;
    terminate(&mut engine, Duration::from_secs(10))?;
    Ok(())
}

/// The clock crosses midnight while a large transaction is folded part by part: the date moves
/// only after the transaction committed. Between its parts, the date change would write targets
/// showing part of the transaction, and its commit would clear the partial mark under the
/// transaction's first parts. The targets then converge at the new date.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_midnight_during_a_large_transaction_waits_for_its_end() -> Result<()> {
    let fx = Fixture::start(None, Path::new("schema/views"), Some(NOW)).await?;
    let (client, env) = (&fx.client, &fx.env);
    let _w = seed_and_init(client, env, 503, NOW).await?;
    let mut engine = env.spawn(&["run"], &[("DELTAMV_LOG", "info,deltamv::engine=debug")])?;
    client.batch_execute(BIG_INSERT).await?;
    wait_for(
        &mut engine,
        env,
        Duration::from_secs(120),
        "no part was folded",
        async || {
            let log = env.engine_log();
            Ok(log
                .contains("folded a part of a large transaction")
                .then_some(()))
        },
    )
    .await?;
    env.set_clock("2026-03-08T12:00:00Z")?;
    wait_caught_up(client, &mut engine, env, Duration::from_secs(300)).await?;
    assert_converges(
        env,
        Duration::from_secs(20),
        "a midnight during a large transaction",
    )
    .await?;
    let log = env.engine_log();
    let (Some(last_part), Some(date_changed)) = (
        log.rfind("folded a part of a large transaction"),
        log.find("date changed"),
    ) else {
        bail!(
            "the log shows no part or no date change:\n{}",
            tail(&log, 30)
        );
    };
    ensure!(
        last_part < date_changed,
        "the date changed between the transaction's parts:\n{}",
        tail(&log, 40)
    );
    terminate(&mut engine, Duration::from_secs(10))?;
    Ok(())
}
