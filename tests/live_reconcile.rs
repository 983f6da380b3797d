//! Reconciling through the running engine: `deltamv reconcile` while writers commit continuously
//! reports no false differences (target and recomputation at the same LSN) and still finds and
//! repairs rows changed behind the engine's back; the scheduled reconcile follows the injected
//! clock and each view's policy; the SQL API (`deltamv.refresh_view` and friends) serves an
//! application role, queued while no engine runs, waiting with a timeout while one does.

mod support;

use std::path::Path;
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use support::engine::{
    assert_converges, differences, differences_except, free_local_addr, http_get, micros,
    open_write_transaction, run_txns, seed_and_init, seed_rows, seed_views_with, tail, terminate,
    wait_caught_up, wait_for, Database, EngineEnv, Fixture, SEED_VIEWS,
};
use support::workload::Workload;

const NOW: &str = "2026-06-15T09:00:00Z";
/// A workspace no workload writes: its activity rows (ids far above the workload's) stay put.
const QUIET_WS: &str = "77777777-7777-4777-a777-777777777777";
/// Agents no workload produces.
const BOGUS_AGENT: &str = "99999999-9999-4999-a999-999999999999";
const BOGUS_AGENT_2: &str = "88888888-8888-4888-a888-888888888888";

/// Runs a deltamv command to completion (at most 120 s), without blocking the runtime's threads
/// (the writer and its connection go on meanwhile); returns (exit code, stdout, stderr).
async fn cli(env: &EngineEnv, args: &[&str]) -> Result<(i32, String, String)> {
    let mut cmd = tokio::process::Command::from(env.command(args));
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let out = tokio::time::timeout(Duration::from_secs(120), cmd.output())
        .await
        .map_err(|_| {
            anyhow::anyhow!(
                "deltamv {args:?} did not finish within 120 s; engine log:\n{}",
                tail(&env.engine_log(), 40)
            )
        })?
        .context("running deltamv")?;
    Ok((
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    ))
}

/// The `analytics.…: N rows expected, M in target, K differing` line of each view, by view name.
fn view_lines(out: &str) -> Vec<(String, String)> {
    out.lines()
        .filter(|l| l.starts_with("analytics.") && l.contains(" differing"))
        .filter_map(|l| {
            l.split_once(": ")
                .map(|(v, _)| (v.to_string(), l.to_string()))
        })
        .collect()
}

/// Asserts one line per view, each ending in ` K differing` with K from `expect` (0 if absent).
fn assert_differing(out: &str, err: &str, expect: &[(&str, usize)]) {
    let lines = view_lines(out);
    assert_eq!(
        lines.len(),
        SEED_VIEWS.len(),
        "one line per view expected:\n{out}\nstderr:\n{err}"
    );
    for view in SEED_VIEWS {
        let n = expect
            .iter()
            .find(|(v, _)| *v == view)
            .map(|(_, n)| *n)
            .unwrap_or(0);
        let line = lines
            .iter()
            .find(|(v, _)| v == view)
            .map(|(_, l)| l.as_str())
            .unwrap_or_else(|| panic!("no line for {view}:\n{out}\nstderr:\n{err}"));
        assert!(
            line.ends_with(&format!(" {n} differing")),
            "{view}: {n} differing rows expected:\n{out}\nstderr:\n{err}"
        );
    }
}

/// Rows of `mv_agent_performance` for an agent.
async fn agent_rows(client: &tokio_postgres::Client, agent: &str) -> Result<i64> {
    Ok(client
        .query_one(
            "SELECT count(*) FROM analytics.mv_agent_performance WHERE agent_id = $1::text::uuid",
            &[&agent],
        )
        .await?
        .get(0))
}

/// The quiet workspace's daily active users on 2026-06-10, as its target row shows them.
async fn quiet_users(client: &tokio_postgres::Client) -> Result<i64> {
    Ok(client
        .query_one(
            "SELECT daily_active_users FROM analytics.mv_active_users WHERE workspace_id = $1::text::uuid AND activity_date = '2026-06-10'",
            &[&QUIET_WS],
        )
        .await?
        .get(0))
}

/// A writer committing small workload transactions every 5-20 ms on its own connection until
/// told to stop; returns how many it ran.
struct Writer {
    stop: Arc<AtomicBool>,
    done: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<Result<usize>>,
}

impl Writer {
    fn start(url: &str, mut w: Workload) -> Writer {
        let stop = Arc::new(AtomicBool::new(false));
        let done = Arc::new(AtomicUsize::new(0));
        let task = tokio::spawn({
            let (url, stop, done) = (url.to_string(), stop.clone(), done.clone());
            async move {
                let c = support::connect(&url).await?;
                let mut n = 0usize;
                while !stop.load(Ordering::SeqCst) {
                    run_txns(&c, &mut w, 1).await?;
                    n += 1;
                    done.store(n, Ordering::SeqCst);
                    tokio::time::sleep(Duration::from_millis(5 + (n as u64 * 7) % 16)).await;
                }
                Ok(n)
            }
        });
        Writer { stop, done, task }
    }

    fn count(&self) -> usize {
        self.done.load(Ordering::SeqCst)
    }

    /// Fails if the writer stopped early (a failed transaction).
    fn check_alive(&self) -> Result<()> {
        ensure!(
            !self.task.is_finished(),
            "the writer stopped early (after {} transactions)",
            self.count()
        );
        Ok(())
    }

    async fn stop(self) -> Result<usize> {
        self.stop.store(true, Ordering::SeqCst);
        self.task.await?
    }
}

/// The result row of `deltamv.refresh_view` and friends.
#[derive(Debug)]
struct Outcome {
    request_id: Option<uuid::Uuid>,
    status: Option<String>,
    rows_compared: Option<i64>,
    differences: Option<i64>,
    rows_changed: Option<i64>,
    duration_ms: Option<f64>,
    error: Option<String>,
}

impl Outcome {
    /// (status, differences, rows_changed, error): what most assertions look at.
    fn summary(&self) -> (Option<&str>, Option<i64>, Option<i64>, Option<&str>) {
        (
            self.status.as_deref(),
            self.differences,
            self.rows_changed,
            self.error.as_deref(),
        )
    }
}

async fn call(client: &tokio_postgres::Client, sql: &str) -> Result<Outcome> {
    let rows = client
        .query(sql, &[])
        .await
        .with_context(|| format!("{sql} failed"))?;
    ensure!(
        rows.len() == 1,
        "{sql}: one row expected, got {}",
        rows.len()
    );
    let r = &rows[0];
    Ok(Outcome {
        request_id: r.try_get("request_id")?,
        status: r.try_get("status")?,
        rows_compared: r.try_get("rows_compared")?,
        differences: r.try_get("differences")?,
        rows_changed: r.try_get("rows_changed")?,
        duration_ms: r.try_get("duration_ms")?,
        error: r.try_get("error")?,
    })
}

/// The message (and SQLSTATE) of a failed call.
fn db_error(e: &tokio_postgres::Error) -> (String, Option<String>) {
    match e.as_db_error() {
        Some(d) => (d.message().to_string(), Some(d.code().code().to_string())),
        None => (e.to_string(), e.code().map(|c| c.code().to_string())),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconcile_under_live_writes_is_exact_and_repairs_through_the_engine() -> Result<()> {
    let Fixture {
        cluster: _cluster,
        client,
        env,
        url,
    } = Fixture::start(None, Path::new("schema/views"), Some(NOW)).await?;
    let mut w = Workload::new(41, micros(NOW));
    w.allow_truncate = false;
    seed_rows(&client, &mut w, 300).await?;
    // Activity of a workspace the writer never touches: the writer updates and deletes rows by
    // ids up to its own highest, never 5 billion.
    client
        .batch_execute(&format!(
            "INSERT INTO analytics.user_activity (id, workspace_id, user_id, activity_type, created_at) VALUES
               (5000000001, '{QUIET_WS}', '00000000-0000-4000-a000-000000000001', 'login', '2026-06-10 10:00:00+00'),
               (5000000002, '{QUIET_WS}', '00000000-0000-4000-a000-000000000002', 'chat', '2026-06-10 11:00:00+00'),
               (5000000003, '{QUIET_WS}', '00000000-0000-4000-a000-000000000003', 'deploy', '2026-06-10 12:00:00+00');"
        ))
        .await?;
    let mut engine = env.spawn_run()?;
    wait_caught_up(&client, &mut engine, &env, Duration::from_secs(90)).await?;
    let quiet: i64 = quiet_users(&client).await?;
    assert_eq!(quiet, 3, "the quiet workspace's row was loaded");

    let writer = Writer::start(&url, w);
    // Let the writer get going before the first reconcile.
    let start = Instant::now();
    while writer.count() < 20 {
        writer.check_alive()?;
        ensure!(
            start.elapsed() < Duration::from_secs(30),
            "the writer did not start"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // With writers committing all the time, a correct engine never reports a difference.
    let before = writer.count();
    for round in 1..=3 {
        let (code, out, err) = cli(&env, &["reconcile"]).await?;
        assert_eq!(
            code, 0,
            "round {round}: a correct engine reconciles clean under writes:\n{out}\nstderr:\n{err}\nlog:\n{}",
            tail(&env.engine_log(), 30)
        );
        assert_differing(&out, &err, &[]);
        writer.check_alive()?;
    }
    assert!(
        writer.count() > before,
        "the writer committed while the reconciles ran ({before} -> {})",
        writer.count()
    );
    // They went through the engine: one request each.
    let cli_requests: i64 = client
        .query_one(
            "SELECT count(*) FROM deltamv.requests WHERE kind IN ('reconcile', 'reconcile all') AND finished_at IS NOT NULL",
            &[],
        )
        .await?
        .get(0);
    assert_eq!(
        cli_requests, 3,
        "each `deltamv reconcile` made a request the engine served"
    );

    // Behind the engine's back: a row no source row produces, and a wrong count in the quiet
    // workspace.
    client
        .batch_execute(&format!(
            "INSERT INTO analytics.mv_agent_performance (agent_id, workspace_id, run_date, total_runs)
             VALUES ('{BOGUS_AGENT}', '{QUIET_WS}', '2026-06-14', 42);
             UPDATE analytics.mv_active_users SET daily_active_users = daily_active_users + 5
              WHERE workspace_id = '{QUIET_WS}' AND activity_date = '2026-06-10';"
        ))
        .await?;
    let (code, out, err) = cli(&env, &["reconcile"]).await?;
    assert_eq!(
        code, 1,
        "differences make reconcile exit 1:\n{out}\nstderr:\n{err}"
    );
    assert_differing(
        &out,
        &err,
        &[
            ("analytics.mv_agent_performance", 1),
            ("analytics.mv_active_users", 1),
        ],
    );
    assert!(
        out.contains(BOGUS_AGENT) && out.contains(QUIET_WS),
        "the tampered rows' keys are printed:\n{out}"
    );
    assert!(
        !out.contains("repaired"),
        "nothing repaired unasked:\n{out}"
    );

    let (code, out, err) = cli(&env, &["reconcile", "--repair"]).await?;
    assert_eq!(code, 0, "repair succeeds:\n{out}\nstderr:\n{err}");
    assert_differing(
        &out,
        &err,
        &[
            ("analytics.mv_agent_performance", 1),
            ("analytics.mv_active_users", 1),
        ],
    );
    assert_eq!(
        out.matches("repaired 1 rows").count(),
        2,
        "one row repaired in each of the two views:\n{out}"
    );
    assert_eq!(out.matches("repaired").count(), 2, "{out}");
    let (code, out, err) = cli(&env, &["reconcile"]).await?;
    assert_eq!(code, 0, "clean after repair:\n{out}\nstderr:\n{err}");
    assert_differing(&out, &err, &[]);
    let bogus: i64 = agent_rows(&client, BOGUS_AGENT).await?;
    assert_eq!(bogus, 0, "the bogus row is gone");
    let quiet: i64 = quiet_users(&client).await?;
    assert_eq!(quiet, 3, "the wrong count is fixed");

    // The same through SQL, waiting for the result.
    client
        .batch_execute(&format!(
            "INSERT INTO analytics.mv_agent_performance (agent_id, workspace_id, run_date, total_runs)
             VALUES ('{BOGUS_AGENT_2}', '{QUIET_WS}', '2026-06-13', 7);"
        ))
        .await?;
    let o = call(
        &client,
        "SELECT * FROM deltamv.reconcile_view('analytics.mv_agent_performance', repair => true, timeout => '120 s')",
    )
    .await?;
    assert_eq!(
        o.status.as_deref(),
        Some("done"),
        "{o:?}\nlog:\n{}",
        tail(&env.engine_log(), 30)
    );
    assert_eq!(o.differences, Some(1), "{o:?}");
    assert_eq!(o.rows_changed, Some(1), "{o:?}");
    assert!(o.request_id.is_some() && o.error.is_none(), "{o:?}");
    assert!(
        o.rows_compared.is_some_and(|n| n > 0) && o.duration_ms.is_some(),
        "{o:?}"
    );
    let bogus: i64 = agent_rows(&client, BOGUS_AGENT_2).await?;
    assert_eq!(bogus, 0, "repaired through SQL");
    writer.check_alive()?;

    // History: one 'reconcile' row per view per reconcile (6 from the command line for every
    // view, one more from SQL for mv_agent_performance), with what each found and changed.
    let hist = |view: &'static str| {
        let client = &client;
        async move {
            let r = client
                .query_one(
                    "SELECT count(*),
                            count(*) FILTER (WHERE differences = 1),
                            count(*) FILTER (WHERE differences = 1 AND rows_changed = 1),
                            count(*) FILTER (WHERE rows_compared IS NULL OR differences IS NULL)
                       FROM deltamv.refresh_history WHERE view_name = $1 AND kind = 'reconcile'",
                    &[&view],
                )
                .await?;
            Ok::<_, anyhow::Error>((
                r.get::<_, i64>(0),
                r.get::<_, i64>(1),
                r.get::<_, i64>(2),
                r.get::<_, i64>(3),
            ))
        }
    };
    assert_eq!(
        hist("analytics.mv_agent_performance").await?,
        (7, 3, 2, 0),
        "(reconciles, with a difference, repaired, without counts) of mv_agent_performance"
    );
    assert_eq!(
        hist("analytics.mv_active_users").await?,
        (6, 2, 1, 0),
        "(reconciles, with a difference, repaired, without counts) of mv_active_users"
    );
    assert_eq!(
        hist("analytics.mv_top_agents").await?,
        (6, 0, 0, 0),
        "(reconciles, with a difference, repaired, without counts) of mv_top_agents"
    );

    // The writer ran all along; the engine is still exact.
    writer.check_alive()?;
    let n = writer.stop().await?;
    assert!(n > 100, "the writer ran throughout ({n} transactions)");
    wait_caught_up(&client, &mut engine, &env, Duration::from_secs(90)).await?;
    assert_converges(
        &env,
        Duration::from_secs(15),
        "after live reconciles and repairs",
    )
    .await?;
    terminate(&mut engine, Duration::from_secs(10))?;
    Ok(())
}

/// The sum of a metric's series in Prometheus text (None when absent).
fn metric(text: &str, name: &str) -> Option<f64> {
    let values: Vec<f64> = text
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| {
            l.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with(' ') || rest.starts_with('{'))
        })
        .filter_map(|l| l.rsplit_once(' ').and_then(|(_, v)| v.trim().parse().ok()))
        .collect();
    (!values.is_empty()).then(|| values.iter().sum())
}

async fn scheduled_rows(client: &tokio_postgres::Client) -> Result<i64> {
    Ok(client
        .query_one(
            "SELECT count(*) FROM deltamv.requests WHERE kind = 'scheduled reconcile'",
            &[],
        )
        .await?
        .get(0))
}

const SCHEDULE_SETTINGS: &str = "[defaults]\nreconcile = \"0 4 * * *\"\n
[views.\"analytics.mv_workspace_metrics\"]\nreconcile_policy = \"report\"\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scheduled_reconcile_follows_the_injected_clock() -> Result<()> {
    const BEFORE: &str = "2026-06-15T03:59:30Z";
    let views = seed_views_with(SCHEDULE_SETTINGS)?;
    let Fixture {
        cluster: _cluster,
        client,
        env,
        ..
    } = Fixture::start(None, views.path(), Some(BEFORE)).await?;
    let mut w = Workload::new(23, micros(BEFORE));
    seed_rows(&client, &mut w, 300).await?;
    let (port, addr) = free_local_addr()?;
    let mut engine = env.spawn(&["run"], &[("DELTAMV_HTTP", &addr)])?;
    wait_caught_up(&client, &mut engine, &env, Duration::from_secs(90)).await?;
    assert_converges(&env, Duration::from_secs(10), "after the initial load").await?;

    // One row wrong in a repair-policy view, one in the report-policy view.
    let r = client
        .query_one(
            "SELECT workspace_id::text, activity_date::text FROM analytics.mv_active_users ORDER BY 1, 2 LIMIT 1",
            &[],
        )
        .await?;
    let (au_ws, au_date): (String, String) = (r.get(0), r.get(1));
    let wm_ws: String = client
        .query_one(
            "SELECT workspace_id::text FROM analytics.mv_workspace_metrics ORDER BY 1 LIMIT 1",
            &[],
        )
        .await?
        .get(0);
    client
        .batch_execute(&format!(
            "UPDATE analytics.mv_active_users SET daily_active_users = daily_active_users + 1
              WHERE workspace_id = '{au_ws}' AND activity_date = '{au_date}';
             UPDATE analytics.mv_workspace_metrics SET total_users = total_users + 1
              WHERE workspace_id = '{wm_ws}';"
        ))
        .await?;

    // 03:59:30: not due yet.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        scheduled_rows(&client).await?,
        0,
        "nothing scheduled runs before 04:00"
    );
    let diff = differences(&env).await?;
    assert!(
        diff.contains("analytics.mv_active_users: 1 differing")
            && diff.contains("analytics.mv_workspace_metrics: 1 differing"),
        "both tampered rows still differ:\n{diff}"
    );

    env.set_clock("2026-06-15T04:00:05Z")?;
    let row = wait_for(
        &mut engine,
        &env,
        Duration::from_secs(60),
        "no scheduled reconcile finished within 60 s of 04:00",
        async || {
            Ok(client
                .query_opt(
                    "SELECT status, requested_by, differences, rows_changed, error
                       FROM deltamv.requests
                      WHERE kind = 'scheduled reconcile' AND finished_at IS NOT NULL",
                    &[],
                )
                .await?)
        },
    )
    .await?;
    let status: String = row.get(0);
    let by: Option<String> = row.get(1);
    let found: Option<i64> = row.get(2);
    let changed: Option<i64> = row.get(3);
    let error: Option<String> = row.get(4);
    assert_eq!(
        (
            status.as_str(),
            by.as_deref(),
            found,
            changed,
            error.as_deref()
        ),
        ("differences", Some("schedule"), Some(2), Some(1), None),
        "(status, requested_by, differences, rows_changed, error): two found, the \
         repair-policy one repaired, the report-policy one left"
    );

    // Per view history: every view was due, each found what was tampered with.
    let hist: Vec<(String, Option<i64>, Option<i64>)> = client
        .query(
            "SELECT view_name, differences, coalesce(rows_changed, 0) FROM deltamv.refresh_history
              WHERE kind = 'scheduled reconcile' ORDER BY view_name",
            &[],
        )
        .await?
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    let expected: Vec<(String, Option<i64>, Option<i64>)> = SEED_VIEWS
        .iter()
        .map(|v| {
            let (d, c) = match *v {
                "analytics.mv_active_users" => (1, 1),
                "analytics.mv_workspace_metrics" => (1, 0),
                _ => (0, 0),
            };
            (v.to_string(), Some(d), Some(c))
        })
        .collect();
    assert_eq!(hist, expected, "scheduled reconcile history rows");

    // The repair-policy view is exact again, the report-policy one still differs.
    let rest = differences_except(&env, &["analytics.mv_workspace_metrics"]).await?;
    assert!(rest.is_empty(), "repaired by the schedule:\n{rest}");
    let diff = differences(&env).await?;
    assert!(
        diff.contains("analytics.mv_workspace_metrics: 1 differing"),
        "the report policy leaves the row:\n{diff}"
    );

    // Reported: an ERROR log line per view and the differences counter.
    let start = Instant::now();
    loop {
        let log = env.engine_log();
        let reported = |view: &str| {
            log.lines().any(|l| {
                l.contains("ERROR") && l.contains("scheduled reconcile found") && l.contains(view)
            })
        };
        let logged =
            reported("analytics.mv_active_users") && reported("analytics.mv_workspace_metrics");
        let (code, body) = http_get(port, "/metrics").await?;
        let counted = code == 200
            && metric(&body, "deltamv_reconcile_differences_total").is_some_and(|v| v >= 2.0);
        if logged && counted {
            break;
        }
        if start.elapsed() > Duration::from_secs(10) {
            bail!(
                "scheduled reconcile not reported (ERROR lines naming both views: {logged}, \
                 deltamv_reconcile_differences_total >= 2: {counted}); metrics:\n{}\nlog:\n{}",
                body.lines()
                    .filter(|l| l.contains("reconcile"))
                    .collect::<Vec<_>>()
                    .join("\n"),
                tail(&log, 40)
            );
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }

    // Later the same day: not due again until tomorrow 04:00.
    env.set_clock("2026-06-15T05:00:00Z")?;
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(
        scheduled_rows(&client).await?,
        1,
        "one scheduled reconcile a day"
    );
    assert!(engine.try_wait()?.is_none(), "the engine still runs");
    terminate(&mut engine, Duration::from_secs(10))?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sql_api_as_an_application() -> Result<()> {
    let db = Database::start(None).await?;
    db.client
        .batch_execute(&std::fs::read_to_string("schema/roles.sql")?)
        .await?;
    let can_login: bool = db
        .client
        .query_opt(
            "SELECT rolcanlogin FROM pg_roles WHERE rolname = 'analytics_refresher'",
            &[],
        )
        .await?
        .context("schema/roles.sql creates analytics_refresher")?
        .get(0);
    assert!(!can_login, "analytics_refresher is NOLOGIN");
    db.client
        .batch_execute(
            "CREATE ROLE app LOGIN IN ROLE analytics_refresher; CREATE ROLE nobody LOGIN;",
        )
        .await?;
    let Fixture {
        cluster: _cluster,
        client,
        env,
        url,
    } = db.engine(Path::new("schema/views"), Some(NOW))?;
    seed_and_init(&client, &env, 31, NOW).await?;
    let app = support::connect(&url.replacen("postgres@", "app@", 1)).await?;

    // (1) No engine runs: the call waits out its timeout and returns 'queued'; without a
    // timeout it returns at once.
    let start = Instant::now();
    let queued = call(
        &app,
        "SELECT * FROM deltamv.refresh_view('analytics.mv_active_users', timeout => '1 s')",
    )
    .await?;
    let waited = start.elapsed();
    assert!(
        waited >= Duration::from_secs(1) && waited < Duration::from_secs(10),
        "waited its 1 s timeout: {waited:?}"
    );
    assert_eq!(queued.status.as_deref(), Some("queued"), "{queued:?}");
    assert!(queued.request_id.is_some(), "{queued:?}");
    let start = Instant::now();
    let all = call(&app, "SELECT * FROM deltamv.refresh_all()").await?;
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "no timeout, no wait: {:?}",
        start.elapsed()
    );
    assert_eq!(all.status.as_deref(), Some("queued"), "{all:?}");
    assert!(
        all.rows_compared.is_none()
            && all.differences.is_none()
            && all.rows_changed.is_none()
            && all.duration_ms.is_none()
            && all.error.is_none(),
        "a queued request has no result yet: {all:?}"
    );
    let ids = [
        queued.request_id.context("request_id")?,
        all.request_id.context("request_id")?,
    ];
    assert_ne!(ids[0], ids[1], "two requests");

    // (2) The engine starts and serves both; the application sees their results.
    let mut engine = env.spawn_run()?;
    let served = wait_for(
        &mut engine,
        &env,
        Duration::from_secs(60),
        "the queued requests were not served within 60 s of the engine's start",
        async || {
            let rows = app
                .query(
                    "SELECT request_id, kind, view_name, status FROM deltamv.requests
                      WHERE request_id = ANY($1) AND finished_at IS NOT NULL ORDER BY requested_at",
                    &[&ids.to_vec()],
                )
                .await?;
            Ok((rows.len() == 2).then_some(rows))
        },
    )
    .await?;
    let served: Vec<(uuid::Uuid, String, Option<String>, String)> = served
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3)))
        .collect();
    assert_eq!(
        served,
        vec![
            (
                ids[0],
                "refresh".to_string(),
                Some("analytics.mv_active_users".to_string()),
                "done".to_string()
            ),
            (ids[1], "refresh all".to_string(), None, "done".to_string()),
        ],
        "both queued requests served"
    );
    let recomputes: Vec<(String, i64)> = client
        .query(
            "SELECT view_name, count(*) FROM deltamv.refresh_history
              WHERE kind = 'full recompute' GROUP BY 1 ORDER BY 1",
            &[],
        )
        .await?
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    let expected: Vec<(String, i64)> = SEED_VIEWS
        .iter()
        .map(|v| {
            (
                v.to_string(),
                if *v == "analytics.mv_active_users" {
                    2
                } else {
                    1
                },
            )
        })
        .collect();
    assert_eq!(recomputes, expected, "a full recompute per view refreshed");

    // (3) Waiting while the engine runs: a refresh fixes a tampered row.
    let r = client
        .query_one(
            "SELECT workspace_id::text, activity_date::text FROM analytics.mv_active_users ORDER BY 1, 2 LIMIT 1",
            &[],
        )
        .await?;
    let (ws, day): (String, String) = (r.get(0), r.get(1));
    let tamper = format!(
        "UPDATE analytics.mv_active_users SET daily_active_users = daily_active_users + 1
          WHERE workspace_id = '{ws}' AND activity_date = '{day}'"
    );
    client.batch_execute(&tamper).await?;
    let o = call(
        &app,
        "SELECT * FROM deltamv.refresh_view('analytics.mv_active_users', timeout => '60 s')",
    )
    .await?;
    assert_eq!(
        (o.status.as_deref(), o.rows_changed, o.error.as_deref()),
        (Some("done"), Some(1), None),
        "(status, rows_changed, error) of the refresh: {o:?}\nlog:\n{}",
        tail(&env.engine_log(), 30)
    );
    let diff = differences(&env).await?;
    assert!(diff.is_empty(), "the refresh fixed the row:\n{diff}");

    // A reconcile without repair reports and leaves the row.
    client.batch_execute(&tamper).await?;
    let o = call(
        &app,
        "SELECT * FROM deltamv.reconcile_view('analytics.mv_active_users', timeout => '60 s')",
    )
    .await?;
    assert_eq!(
        o.summary(),
        (Some("differences"), Some(1), Some(0), None),
        "(status, differences, rows_changed, error) of the reconcile: {o:?}"
    );
    let diff = differences(&env).await?;
    assert!(
        diff.contains("analytics.mv_active_users: 1 differing"),
        "not repaired unasked:\n{diff}"
    );
    let o = call(
        &app,
        "SELECT * FROM deltamv.reconcile_view('analytics.mv_active_users', repair => true, timeout => '60 s')",
    )
    .await?;
    assert_eq!(
        o.summary(),
        (Some("done"), Some(1), Some(1), None),
        "(status, differences, rows_changed, error) of the repair: {o:?}"
    );

    // (4) An unknown view is an error naming it.
    for sql in [
        "SELECT * FROM deltamv.refresh_view('analytics.no_such_view')",
        "SELECT * FROM deltamv.reconcile_view('analytics.no_such_view', timeout => '5 s')",
    ] {
        let e = app
            .query(sql, &[])
            .await
            .expect_err("an unknown view is refused");
        let (msg, _) = db_error(&e);
        assert!(msg.contains("analytics.no_such_view"), "{sql}: {msg}");
    }

    // (5) A role without analytics_refresher may not call the functions.
    client
        .batch_execute("GRANT USAGE ON SCHEMA deltamv TO nobody")
        .await?;
    let nobody = support::connect(&url.replacen("postgres@", "nobody@", 1)).await?;
    for sql in [
        "SELECT * FROM deltamv.refresh_view('analytics.mv_active_users')",
        "SELECT * FROM deltamv.reconcile_all(repair => true)",
    ] {
        let e = nobody.query(sql, &[]).await.expect_err("nobody is refused");
        let (msg, code) = db_error(&e);
        assert_eq!(code.as_deref(), Some("42501"), "{sql}: {msg}");
    }

    // (6) What was committed before the call is part of the reconcile.
    const NEW_AGENT: &str = "12121212-1212-4212-a212-121212121212";
    client
        .batch_execute(&format!(
            "INSERT INTO public.agent_runs (agent_id, workspace_id, user_id, status, started_at, runtime_seconds, credits_consumed)
             VALUES ('{NEW_AGENT}', '{QUIET_WS}', '00000000-0000-4000-a000-000000000001', 'completed', '2026-06-14 08:00:00+00', 12.5, 3.25);
             INSERT INTO analytics.user_activity (workspace_id, user_id, activity_type, created_at)
             VALUES ('{QUIET_WS}', '00000000-0000-4000-a000-000000000001', 'login', '2026-06-14 08:00:00+00');"
        ))
        .await?;
    let o = call(
        &app,
        "SELECT * FROM deltamv.reconcile_all(timeout => '60 s')",
    )
    .await?;
    assert_eq!(
        o.summary(),
        (Some("done"), Some(0), Some(0), None),
        "(status, differences, rows_changed, error) right after a write: {o:?}\nlog:\n{}",
        tail(&env.engine_log(), 30)
    );
    assert!(o.rows_compared.is_some_and(|n| n > 0), "{o:?}");
    let applied: i64 = agent_rows(&client, NEW_AGENT).await?;
    assert_eq!(
        applied, 1,
        "the write committed before the call is in the target when it returns"
    );
    terminate(&mut engine, Duration::from_secs(10))?;
    Ok(())
}

/// A view over a maintained view reconciles clean under live writes: the recomputation in the
/// snapshot reads the source tables, not the inner view's target, which still lags the
/// snapshot when it is taken (reading it reported differences on a correct engine).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_view_over_a_view_reconciles_clean_under_live_writes() -> Result<()> {
    let views = seed_views_with("")?;
    std::fs::write(
        views.path().join("mv_workspace_days.sql"),
        "CREATE MATERIALIZED VIEW analytics.mv_workspace_days AS
         SELECT workspace_id, SUM(total_runs) AS runs, SUM(total_credits) AS credits,
                COUNT(*) AS agent_days, MAX(run_date) AS last_day
           FROM analytics.mv_agent_performance GROUP BY workspace_id;",
    )?;
    let Fixture {
        cluster: _cluster,
        client,
        env,
        url,
    } = Fixture::start(None, views.path(), Some(NOW)).await?;
    let mut w = Workload::new(43, micros(NOW));
    w.allow_truncate = false;
    seed_rows(&client, &mut w, 300).await?;
    let mut engine = env.spawn_run()?;
    wait_caught_up(&client, &mut engine, &env, Duration::from_secs(90)).await?;
    let writer = Writer::start(&url, w);
    for round in 1..=3 {
        let (code, out, err) = cli(
            &env,
            &["reconcile", "--view", "analytics.mv_workspace_days"],
        )
        .await?;
        assert_eq!(
            code, 0,
            "round {round}: a correct engine reconciles clean under writes:\n{out}\nstderr:\n{err}"
        );
        writer.check_alive()?;
    }
    writer.stop().await?;
    terminate(&mut engine, Duration::from_secs(10))?;
    Ok(())
}

/// A reconcile does not pause the views: while it waits for a write transaction open since
/// before it (4 s here) and then compares, rows written meanwhile become visible as usual, and
/// the engine's own measure of the pause it caused stays far below the wait. A reconcile that
/// held the engine from its request on showed each of those rows only after the wait.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reconcile_does_not_pause_the_views() -> Result<()> {
    const PROBE_WS: &str = "66666666-6666-4666-a666-666666666666";
    const PROBE_AGENT: &str = "55555555-5555-4555-a555-555555555555";
    let Fixture {
        cluster: _cluster,
        client,
        env,
        url,
    } = Fixture::start(None, Path::new("schema/views"), Some(NOW)).await?;
    let mut w = Workload::new(43, micros(NOW));
    seed_rows(&client, &mut w, 300).await?;
    let (port, addr) = free_local_addr()?;
    let mut engine = env.spawn(
        &["run"],
        &[
            ("DELTAMV_HTTP", &addr),
            ("DELTAMV_RECONCILE_WAIT_MS", "30000"),
        ],
    )?;
    wait_caught_up(&client, &mut engine, &env, Duration::from_secs(60)).await?;
    let open = open_write_transaction(&url).await?;
    let id: uuid::Uuid = client
        .query_one("SELECT request_id FROM deltamv.reconcile_all()", &[])
        .await?
        .get(0);
    let probes = async |n: usize, client: &tokio_postgres::Client| -> Result<Duration> {
        let mut slowest = Duration::ZERO;
        for i in 1..=n {
            let started = Instant::now();
            client
                .batch_execute(&support::workload::run_row(
                    PROBE_AGENT,
                    PROBE_WS,
                    "completed",
                    "2026-06-15 08:00:00+00",
                ))
                .await?;
            loop {
                let shown: i64 = client
                    .query_one(
                        "SELECT coalesce((SELECT total_executions::bigint FROM analytics.mv_workspace_metrics
                                           WHERE workspace_id = $1::text::uuid), 0)",
                        &[&PROBE_WS],
                    )
                    .await?
                    .get(0);
                if shown == i as i64 {
                    break;
                }
                ensure!(
                    started.elapsed() < Duration::from_secs(30),
                    "probe {i} not visible after 30 s"
                );
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            slowest = slowest.max(started.elapsed());
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        Ok(slowest)
    };
    let while_waiting = probes(16, &client).await?;
    let status: Option<String> = client
        .query_one(
            "SELECT status FROM deltamv.requests WHERE request_id = $1",
            &[&id],
        )
        .await?
        .get(0);
    assert_eq!(
        status.as_deref(),
        Some("running"),
        "the reconcile waits for the open transaction"
    );
    open.batch_execute("COMMIT").await?;
    let (status, _) = wait_for(
        &mut engine,
        &env,
        Duration::from_secs(60),
        "the reconcile did not finish",
        async || {
            let row = client
                .query_opt(
                    "SELECT status, differences FROM deltamv.requests WHERE request_id = $1 AND finished_at IS NOT NULL",
                    &[&id],
                )
                .await?;
            Ok(row.map(|r| (r.get::<_, String>(0), r.get::<_, i64>(1))))
        },
    )
    .await?;
    assert_eq!(status, "done", "{}", tail(&env.engine_log(), 30));
    assert!(
        while_waiting < Duration::from_secs(2),
        "rows written while the reconcile waited became visible after up to {while_waiting:?}"
    );
    let (code, body) = http_get(port, "/metrics").await?;
    ensure!(code == 200, "metrics: {code}");
    let pause = metric(&body, "deltamv_reconcile_pause_max_microseconds")
        .context("the pause metric is exported")?;
    assert!(
        pause > 0.0 && pause < 2e6,
        "the engine's pause for the reconcile: {pause} µs\n{}",
        tail(&env.engine_log(), 30)
    );
    terminate(&mut engine, Duration::from_secs(10))?;
    Ok(())
}

/// A request that waits behind a reconcile in progress is not lost to a crash: while it waits,
/// writes go on and the engine checkpoints every 50 ms, yet the slot stays before its message,
/// so when the engine is killed during its own comparison it is served after the restart, once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_queued_behind_a_reconcile_survives_a_crash() -> Result<()> {
    let Fixture {
        cluster: _cluster,
        client,
        env,
        url,
    } = Fixture::start(None, Path::new("schema/views"), Some(NOW)).await?;
    let mut w = Workload::new(44, micros(NOW));
    w.allow_truncate = false;
    seed_rows(&client, &mut w, 300).await?;
    let mut engine = env.spawn(
        &["run"],
        &[
            // The second comparison is the queued request's.
            ("DELTAMV_FAILPOINT", "reconcile_comparing:2"),
            ("DELTAMV_CHECKPOINT_MS", "50"),
        ],
    )?;
    wait_caught_up(&client, &mut engine, &env, Duration::from_secs(60)).await?;
    let writer = Writer::start(&url, w);
    let open = open_write_transaction(&url).await?;
    let request =
        async |sql: &str| -> Result<uuid::Uuid> { Ok(client.query_one(sql, &[]).await?.get(0)) };
    let first =
        request("SELECT request_id FROM deltamv.reconcile_view('analytics.mv_active_users')")
            .await?;
    let queued =
        request("SELECT request_id FROM deltamv.reconcile_view('analytics.mv_top_agents')").await?;
    // Both wait (the first for `open`, the second for the first) while writes are applied.
    tokio::time::sleep(Duration::from_secs(2)).await;
    writer.check_alive()?;
    ensure!(
        engine.try_wait()?.is_none(),
        "the first reconcile did not wait for the open transaction"
    );
    open.batch_execute("COMMIT").await?;
    let deadline = Instant::now() + Duration::from_secs(60);
    while engine.try_wait()?.is_none() {
        ensure!(
            Instant::now() < deadline,
            "the failpoint was not reached:\n{}",
            tail(&env.engine_log(), 30)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    writer.stop().await?;
    let mut engine = env.spawn_run()?;
    let status = |id: uuid::Uuid| {
        let client = &client;
        async move {
            let row = client
                .query_opt(
                    "SELECT status FROM deltamv.requests WHERE request_id = $1 AND finished_at IS NOT NULL",
                    &[&id],
                )
                .await?;
            Ok::<_, anyhow::Error>(row.map(|r| r.get::<_, String>(0)))
        }
    };
    let served = wait_for(
        &mut engine,
        &env,
        Duration::from_secs(60),
        "the queued request was not served after the restart",
        async || status(queued).await,
    )
    .await?;
    assert_eq!(served, "done", "{}", tail(&env.engine_log(), 30));
    assert_eq!(
        status(first).await?.as_deref(),
        Some("done"),
        "the first request ended before the crash"
    );
    // The engine logs a request after recording it: count once the stream is caught up, which
    // is after the line was written.
    wait_caught_up(&client, &mut engine, &env, Duration::from_secs(60)).await?;
    assert_eq!(
        env.engine_log()
            .matches(&format!("id={queued} status="))
            .count(),
        1,
        "the queued request is served once"
    );
    terminate(&mut engine, Duration::from_secs(10))?;
    Ok(())
}
