//! Operability: `deltamv.view_status`, `deltamv check` and the HTTP endpoints go stale while the
//! engine cannot apply (a reader holds a lock on a target) and fresh again afterwards; `/metrics`
//! is valid Prometheus text whose lag rises and falls with it. The signals tell the truth: the
//! state size is the state directory's, and status's row counts, kept by the engine instead of
//! counted on each read, equal `count(*)` after writes, a refresh and a reconcile repair.

mod support;

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use support::engine::{
    crash_during_writes, free_local_addr, http_get, micros, run_txns, seed_rows, seed_views_with,
    terminate, wait_caught_up, wait_for, Fixture,
};
use support::workload::{run_row, Workload, A1, W1};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const NOW: &str = "2026-11-05T17:00:00Z";

/// Parses Prometheus text format strictly: `name{labels} value` or `# HELP|TYPE` lines.
fn parse_metrics(text: &str) -> Result<BTreeMap<String, f64>> {
    let mut out = BTreeMap::new();
    for line in text.lines().filter(|l| !l.is_empty()) {
        if let Some(rest) = line.strip_prefix("# ") {
            let kind = rest.split_whitespace().next().unwrap_or("");
            if kind != "HELP" && kind != "TYPE" {
                bail!("bad comment line: {line}");
            }
            continue;
        }
        let (series, value) = line
            .rsplit_once(' ')
            .with_context(|| format!("no value: {line}"))?;
        let name_end = series.find('{').unwrap_or(series.len());
        let name = &series[..name_end];
        if name.is_empty()
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
        {
            bail!("bad metric name in {line}");
        }
        if name_end < series.len() && !series.ends_with('}') {
            bail!("bad labels in {line}");
        }
        let v: f64 = value
            .parse()
            .with_context(|| format!("bad value in {line}"))?;
        out.insert(series.to_string(), v);
    }
    Ok(out)
}

fn lag_of(metrics: &BTreeMap<String, f64>, view: &str) -> Option<f64> {
    metrics
        .iter()
        .find(|(k, _)| k.starts_with("deltamv_view_lag_seconds{") && k.contains(view))
        .map(|(_, v)| *v)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_and_fresh_again_in_sql_cli_and_http() -> Result<()> {
    let views = seed_views_with("[defaults]\nfreshness_target_s = 2\n")?;
    let Fixture {
        cluster: _cluster,
        client,
        env,
        url,
    } = Fixture::start(None, views.path(), Some(NOW)).await?;
    let mut w = Workload::new(3, micros(NOW));
    seed_rows(&client, &mut w, 300).await?;
    let (port, addr) = free_local_addr()?;
    let mut engine = env.spawn(&["run"], &[("DELTAMV_HTTP", &addr)])?;
    wait_caught_up(&client, &mut engine, &env, Duration::from_secs(60)).await?;
    run_txns(&client, &mut w, 30).await?;
    wait_caught_up(&client, &mut engine, &env, Duration::from_secs(60)).await?;
    tokio::time::sleep(Duration::from_millis(1500)).await;

    let (code, out, err) = env.run_cmd(&["check", "--max-lag", "5s"])?;
    assert_eq!(code, 0, "fresh while running:\n{out}{err}");
    let (code, body) = http_get(port, "/healthz").await?;
    assert_eq!(code, 200, "{body}");
    let m = parse_metrics(&http_get(port, "/metrics").await?.1)?;
    let fresh_lag = lag_of(&m, "analytics.mv_active_users").context("lag metric")?;
    assert!(
        m.keys()
            .any(|k| k.starts_with("deltamv_apply_latency_seconds_bucket")),
        "latency histogram"
    );
    assert!(
        m.get("deltamv_changes_applied_total")
            .copied()
            .unwrap_or(0.0)
            > 0.0,
        "{m:?}"
    );
    // The fold's time, and of it the row-level pass (the part on one thread).
    let fold = m
        .get("deltamv_stage_microseconds_total{stage=\"fold\"}")
        .copied();
    let row_pass = m.get("deltamv_fold_row_pass_microseconds_total").copied();
    assert!(
        matches!((fold, row_pass), (Some(f), Some(r)) if r > 0.0 && r <= f),
        "fold {fold:?}, row pass {row_pass:?}"
    );
    let readers: i64 = client
        .query_one(
            "SELECT count(*) FROM deltamv.view_status WHERE state = 'ok'",
            &[],
        )
        .await?
        .get(0);
    assert_eq!(readers, 5, "the SQL view lists every view");

    // A reader holds a lock on one target: the engine cannot apply anything.
    let blocker = support::connect(&url).await?;
    blocker
        .batch_execute("BEGIN; LOCK TABLE analytics.mv_active_users IN ACCESS EXCLUSIVE MODE")
        .await?;
    run_txns(&client, &mut w, 10).await?;
    tokio::time::sleep(Duration::from_secs(4)).await;
    let (code, out, _) = env.run_cmd(&["check", "--max-lag", "2s"])?;
    assert_eq!(code, 1, "stale while blocked:\n{out}");
    assert!(
        out.contains("stale analytics.mv_agent_performance"),
        "{out}"
    );
    let (code, body) = http_get(port, "/healthz").await?;
    assert_eq!(code, 503, "{body}");
    assert!(
        body.contains("analytics.mv_top_agents"),
        "the stale views are named: {body}"
    );
    let blocked_lag = async || {
        lag_of(
            &parse_metrics(&http_get(port, "/metrics").await?.1)?,
            "analytics.mv_agent_performance",
        )
        .context("lag")
    };
    // Past the 2 s target, and still rising while blocked (how far past depends on when the
    // last batch before the block was applied, or the last heartbeat recorded).
    let stale_lag = blocked_lag().await?;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let later = blocked_lag().await?;
    assert!(
        stale_lag > 2.0 && stale_lag > fresh_lag && later > stale_lag + 1.0,
        "lag rises: {fresh_lag} -> {stale_lag} -> {later} (1.5 s later)"
    );
    let stale_lag = later;

    blocker.batch_execute("COMMIT").await?;
    wait_for(
        &mut engine,
        &env,
        Duration::from_secs(20),
        "did not become fresh again",
        async || {
            let (code, _, _) = env.run_cmd(&["check", "--max-lag", "2s"])?;
            let (http, _) = http_get(port, "/readyz").await?;
            Ok((code == 0 && http == 200).then_some(()))
        },
    )
    .await?;
    let after = lag_of(
        &parse_metrics(&http_get(port, "/metrics").await?.1)?,
        "analytics.mv_agent_performance",
    )
    .context("lag")?;
    assert!(after < stale_lag, "lag falls: {stale_lag} -> {after}");
    // An idle engine stays fresh: its heartbeat follows the server's keepalives, often enough
    // that the lag it shows stays well inside the 2 s target.
    tokio::time::sleep(Duration::from_secs(4)).await;
    let mut idle_lag: f64 = 0.0;
    for _ in 0..30 {
        let lag: Option<f64> = client
            .query_one("SELECT max(lag_seconds) FROM deltamv.view_status", &[])
            .await?
            .get(0);
        idle_lag = idle_lag.max(lag.context("lag_seconds")?);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(idle_lag < 1.6, "an idle engine showed {idle_lag} s of lag");
    let (code, out, _) = env.run_cmd(&["check", "--max-lag", "2s"])?;
    assert_eq!(code, 0, "idle is not stale:\n{out}");
    let (code, body) = http_get(port, "/nope").await?;
    assert_eq!(code, 404, "{body}");
    terminate(&mut engine, Duration::from_secs(10))?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_can_require_a_bearer_token() -> Result<()> {
    let Fixture {
        cluster: _cluster,
        client,
        env,
        ..
    } = Fixture::start(None, std::path::Path::new("schema/views"), Some(NOW)).await?;
    let (port, addr) = free_local_addr()?;
    let mut engine = env.spawn(
        &["run"],
        &[("DELTAMV_HTTP", &addr), ("DELTAMV_HTTP_TOKEN", "s3cret")],
    )?;
    wait_caught_up(&client, &mut engine, &env, Duration::from_secs(60)).await?;
    let (code, _) = http_get(port, "/metrics").await?;
    assert_eq!(code, 401);
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
    s.write_all(b"GET /metrics HTTP/1.1\r\nAuthorization: Bearer s3cret\r\n\r\n")
        .await?;
    let mut out = String::new();
    s.read_to_string(&mut out).await?;
    assert!(out.starts_with("HTTP/1.1 200"), "{out}");
    terminate(&mut engine, Duration::from_secs(10))?;
    Ok(())
}

/// Bytes of every file under `dir`.
fn dir_size(dir: &std::path::Path) -> Result<u64> {
    let mut total = 0;
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let meta = entry.metadata()?;
        total += if meta.is_dir() {
            dir_size(&entry.path())?
        } else {
            meta.len()
        };
    }
    Ok(total)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_state_size_metric_is_the_state_directorys_size() -> Result<()> {
    let Fixture {
        cluster: _cluster,
        client,
        env,
        ..
    } = Fixture::start(None, std::path::Path::new("schema/views"), Some(NOW)).await?;
    let mut w = Workload::new(11, micros(NOW));
    w.allow_truncate = false;
    seed_rows(&client, &mut w, 60_000).await?;
    let (port, addr) = free_local_addr()?;
    let mut engine = env.spawn(&["run"], &[("DELTAMV_HTTP", &addr)])?;
    wait_caught_up(&client, &mut engine, &env, Duration::from_secs(120)).await?;
    // The metric is taken after each batch and each checkpoint (every second, which flushes
    // the memtables); the last batches are small, so the memtables hold little at the end.
    for n in [40, 5] {
        run_txns(&client, &mut w, n).await?;
        wait_caught_up(&client, &mut engine, &env, Duration::from_secs(60)).await?;
        tokio::time::sleep(Duration::from_millis(1500)).await;
    }
    let m = parse_metrics(&http_get(port, "/metrics").await?.1)?;
    let reported = *m
        .get("deltamv_state_size_bytes")
        .context("deltamv_state_size_bytes")?;
    let on_disk = dir_size(&env.state_dir)? as f64;
    eprintln!("deltamv_state_size_bytes {reported}, state directory {on_disk} bytes");
    assert!(
        on_disk > 2e6,
        "the test loads enough data to matter: {on_disk} bytes"
    );
    assert!(
        (0.5 * on_disk..=2.0 * on_disk).contains(&reported),
        "deltamv_state_size_bytes = {reported}, the state directory holds {on_disk} bytes"
    );
    terminate(&mut engine, Duration::from_secs(10))?;
    Ok(())
}

/// Each view's `rows` in `deltamv.view_status` next to `count(*)` of its target, read in one
/// snapshot; the views whose two differ.
async fn row_count_mismatches(client: &tokio_postgres::Client) -> Result<Vec<String>> {
    client
        .batch_execute("BEGIN ISOLATION LEVEL REPEATABLE READ")
        .await?;
    let status = client
        .query(
            "SELECT view_name, rows FROM deltamv.view_status ORDER BY view_name",
            &[],
        )
        .await?;
    let mut out = Vec::new();
    for r in &status {
        let (view, rows): (String, Option<i64>) = (r.get(0), r.get(1));
        let (schema, name) = view.split_once('.').context("schema.name")?;
        let counted: i64 = client
            .query_one(
                &format!(
                    "SELECT count(*) FROM {}.{}",
                    support::quote_ident(schema),
                    support::quote_ident(name)
                ),
                &[],
            )
            .await?
            .get(0);
        if rows != Some(counted) {
            out.push(format!(
                "{view}: status says {rows:?}, count(*) is {counted}"
            ));
        }
    }
    client.batch_execute("COMMIT").await?;
    anyhow::ensure!(status.len() == 5, "five views: {}", status.len());
    Ok(out)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_row_counts_are_kept_exact_without_counting() -> Result<()> {
    // One view kept as a fallback view: the refresher keeps its count.
    let views = seed_views_with("[views.\"analytics.mv_top_agents\"]\nmode = \"fallback\"\n")?;
    let Fixture {
        cluster: _cluster,
        client,
        env,
        url,
    } = Fixture::start(None, views.path(), Some(NOW)).await?;
    let mut w = Workload::new(21, micros(NOW));
    seed_rows(&client, &mut w, 300).await?;
    let mut engine = env.spawn_run()?;
    wait_caught_up(&client, &mut engine, &env, Duration::from_secs(60)).await?;
    let exact = async |what: &str| -> Result<()> {
        let wrong = row_count_mismatches(&client).await?;
        anyhow::ensure!(
            wrong.is_empty(),
            "{what}:\n{}\nengine log:\n{}",
            wrong.join("\n"),
            support::engine::tail(&env.engine_log(), 30)
        );
        Ok(())
    };
    exact("after the initial load").await?;
    // Inserts, updates, deletes and TRUNCATEs, in and out of groups.
    run_txns(&client, &mut w, 150).await?;
    wait_caught_up(&client, &mut engine, &env, Duration::from_secs(60)).await?;
    exact("after writes").await?;

    // Rows the engine does not know of: deleted behind its back, and one moved to a group that
    // does not exist. A refresh and a reconcile repair put them back, and the counts follow.
    let tamper = |view: &str| {
        format!(
            "DELETE FROM {view} WHERE ctid IN (SELECT ctid FROM {view} ORDER BY ctid LIMIT 2);
             UPDATE {view} SET workspace_id = gen_random_uuid()
              WHERE ctid = (SELECT ctid FROM {view} ORDER BY ctid LIMIT 1);"
        )
    };
    client
        .batch_execute(&tamper("analytics.mv_agent_performance"))
        .await?;
    let (code, out, err) = env.run_cmd(&["refresh", "--view", "analytics.mv_agent_performance"])?;
    assert_eq!(code, 0, "refresh:\n{out}\n{err}");
    exact("after a refresh that repaired rows").await?;
    client
        .batch_execute(&tamper("analytics.mv_active_users"))
        .await?;
    let (_, out, err) = env.run_cmd(&[
        "reconcile",
        "--view",
        "analytics.mv_active_users",
        "--repair",
    ])?;
    assert!(
        out.contains("repaired"),
        "the reconcile repaired rows:\n{out}\n{err}"
    );
    exact("after a reconcile repair").await?;
    run_txns(&client, &mut w, 60).await?;
    wait_caught_up(&client, &mut engine, &env, Duration::from_secs(60)).await?;
    exact("after more writes").await?;
    // A crash in the middle of writes: batches replayed after the restart count once.
    let mut engine = crash_during_writes(
        &env,
        &mut engine,
        &url,
        22,
        micros(NOW),
        120,
        Duration::from_millis(400),
    )
    .await?;
    wait_caught_up(&client, &mut engine, &env, Duration::from_secs(60)).await?;
    exact("after a crash during writes and a restart").await?;

    // Reading status does not touch the targets: it answers while one is locked.
    let blocker = support::connect(&url).await?;
    blocker
        .batch_execute("BEGIN; LOCK TABLE analytics.mv_workspace_metrics IN ACCESS EXCLUSIVE MODE")
        .await?;
    let rows: Option<i64> = client
        .query_one(
            "SELECT rows FROM deltamv.view_status WHERE view_name = 'analytics.mv_workspace_metrics'",
            &[],
        )
        .await?
        .get(0);
    assert!(rows.is_some_and(|r| r > 0), "{rows:?}");
    blocker.batch_execute("COMMIT").await?;
    terminate(&mut engine, Duration::from_secs(10))?;
    Ok(())
}

/// A midnight's write counts in `/metrics` like any batch's: a run that leaves the top agents'
/// 30-day window at midnight changes its workspace's ranks, and the rows written are counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_midnights_target_rows_are_counted() -> Result<()> {
    let Fixture {
        cluster: _cluster,
        client,
        env,
        ..
    } = Fixture::start(None, std::path::Path::new("schema/views"), Some(NOW)).await?;
    // 30 days before NOW's date, at noon: in mv_top_agents' window today, out of it tomorrow.
    client
        .batch_execute(&run_row(A1, W1, "completed", "2026-10-06 12:00:00+00"))
        .await?;
    let (code, _, err) = env.run_cmd(&["init"])?;
    assert_eq!(code, 0, "init failed:\n{err}");
    let (port, addr) = free_local_addr()?;
    let mut engine = env.spawn(&["run"], &[("DELTAMV_HTTP", &addr)])?;
    wait_caught_up(&client, &mut engine, &env, Duration::from_secs(60)).await?;
    let written = async || -> Result<f64> {
        let m = parse_metrics(&http_get(port, "/metrics").await?.1)?;
        m.get("deltamv_target_rows_written_total")
            .copied()
            .context("deltamv_target_rows_written_total")
    };
    let before = written().await?;
    let top = "SELECT count(*) FROM analytics.mv_top_agents";
    let rows: i64 = client.query_one(top, &[]).await?.get(0);
    assert_eq!(rows, 1, "the run is in the window before midnight");
    env.set_clock("2026-11-06T00:00:30Z")?;
    let after = wait_for(
        &mut engine,
        &env,
        Duration::from_secs(30),
        "midnight's write was not counted",
        async || {
            let rows: i64 = client.query_one(top, &[]).await?.get(0);
            let now = written().await?;
            Ok((rows == 0 && now > before).then_some(now))
        },
    )
    .await?;
    assert!(after > before, "{before} -> {after}");
    terminate(&mut engine, Duration::from_secs(10))?;
    Ok(())
}
