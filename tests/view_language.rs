//! The view language of the README ("The view language") on definitions other than the seed's.
//!
//! `language_views_are_maintained_exactly` writes a views directory covering every construct the
//! README lists (HAVING, queries without GROUP BY, aggregates over aggregates over aggregates,
//! MIN/MAX of timestamptz/numeric/text, COUNT(x) vs COUNT(*), percentiles at 0, 0.25 and 1, integer,
//! numeric and float SUM/AVG, arithmetic over aggregates, GROUP BY ordinals and output names,
//! date_trunc and ::date keys, COALESCE, IN, BETWEEN, IS [NOT] NULL, CASE with an operand,
//! CURRENT_DATE in WHERE/CASE/FILTER/GROUP BY, casts), runs seeded random workloads, a kill -9
//! restart, a midnight and a week-long jump, emptying a source, and after each phase compares every
//! target with PostgreSQL's own evaluation, twice: with the reconcile oracle and with a stricter
//! text comparison in which numerics must also have PostgreSQL's scale.
//!
//! `init_refuses_unsupported_views_before_creating_anything` puts one bad file next to good ones
//! for each construct the README refuses and checks the exit code, that the message names the
//! construct, the view and its file, and that no schema, target, slot or publication was created.

mod support;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use support::engine::{
    assert_converges, crash_during_writes, kill9, micros, run_txns, seed_rows, terminate,
    wait_caught_up, Database, EngineEnv, Fixture,
};
use support::workload::Workload;
use tokio_postgres::{Client, SimpleQueryMessage};

const CATCH_UP: Duration = Duration::from_secs(60);
const TXNS: usize = 100;
const SEEDS: [u64; 2] = [5, 42];

/// The views of the positive test: (file name, contents).
const VIEWS: &[(&str, &str)] = &[
    (
        "01_agent_outcomes.sql",
        "-- HAVING, CASE with an operand, IN, GROUP BY ordinal and output name, COUNT(x) vs COUNT(*)
CREATE MATERIALIZED VIEW reports.agent_outcomes AS
SELECT
    agent_id,
    CASE status WHEN 'completed' THEN 'ok' WHEN 'failed' THEN 'error' ELSE 'other' END AS outcome,
    COUNT(*) AS runs,
    COUNT(runtime_seconds) AS timed_runs,
    COUNT(error_code) AS runs_with_code,
    SUM(CASE WHEN status = 'failed' THEN 1 ELSE 0 END) AS failures,
    SUM(CASE WHEN error_code IS NOT NULL THEN 1 ELSE 0 END) AS coded,
    MIN(error_code) AS first_code,
    MAX(status) AS max_status
FROM public.agent_runs
WHERE status IN ('completed', 'failed', 'cancelled')
GROUP BY 1, outcome
HAVING COUNT(*) >= 3 AND SUM(credits_consumed) IS NOT NULL;

CREATE UNIQUE INDEX agent_outcomes_key ON reports.agent_outcomes (agent_id, outcome);
",
    ),
    (
        "02_run_totals.sql",
        "-- No GROUP BY: exactly one row. Extremes of timestamptz, numeric and text; percentiles.
CREATE MATERIALIZED VIEW reports.run_totals AS
SELECT
    COUNT(*) AS runs,
    COUNT(runtime_seconds) AS timed_runs,
    SUM(runtime_seconds) AS runtime_total,
    AVG(runtime_seconds) AS runtime_avg,
    SUM(credits_consumed) AS credits_total,
    AVG(credits_consumed) AS credits_avg,
    MIN(started_at) AS first_start,
    MAX(started_at) AS last_start,
    MIN(credits_consumed) AS min_credits,
    MAX(credits_consumed) AS max_credits,
    MIN(status) AS min_status,
    MAX(error_code) AS max_code,
    PERCENTILE_DISC(0) WITHIN GROUP (ORDER BY runtime_seconds) AS runtime_d0,
    PERCENTILE_DISC(0.25) WITHIN GROUP (ORDER BY credits_consumed) AS credits_d25,
    PERCENTILE_DISC(1) WITHIN GROUP (ORDER BY started_at) AS start_d100,
    PERCENTILE_DISC(0.25) WITHIN GROUP (ORDER BY status) AS status_d25,
    PERCENTILE_CONT(0) WITHIN GROUP (ORDER BY runtime_seconds) AS runtime_c0,
    PERCENTILE_CONT(0.25) WITHIN GROUP (ORDER BY runtime_seconds) AS runtime_c25,
    PERCENTILE_CONT(1) WITHIN GROUP (ORDER BY credits_consumed) AS credits_c100
FROM public.agent_runs;
",
    ),
    (
        "03_impossible_runs.sql",
        "-- No GROUP BY and a filter that matches nothing: one row of zeros and NULLs.
CREATE MATERIALIZED VIEW reports.impossible_runs AS
SELECT
    COUNT(*) AS runs,
    COUNT(error_code) AS coded,
    SUM(credits_consumed) AS credits,
    AVG(runtime_seconds) AS runtime_avg,
    MAX(started_at) AS last_start,
    MIN(status) AS min_status,
    PERCENTILE_CONT(0.25) WITHIN GROUP (ORDER BY runtime_seconds) AS runtime_c25,
    PERCENTILE_DISC(1) WITHIN GROUP (ORDER BY credits_consumed) AS credits_d100,
    SUM(CASE WHEN status = 'failed' THEN 1 ELSE 0 END) AS failures
FROM public.agent_runs
WHERE runtime_seconds < 0 OR (status = 'running' AND NOT status <> 'failed');
",
    ),
    (
        "04_activity_overall.sql",
        "-- No GROUP BY over a table the test empties; CURRENT_DATE in FILTERs.
CREATE MATERIALIZED VIEW reports.activity_overall AS
SELECT
    COUNT(*) AS events,
    COUNT(DISTINCT user_id) AS users,
    COUNT(*) FILTER (WHERE created_at >= CURRENT_DATE - 7) AS events_7d,
    COUNT(DISTINCT user_id) FILTER (WHERE DATE(created_at) = CURRENT_DATE - 1) AS users_yesterday,
    MAX(created_at) AS last_event,
    MIN(activity_type) AS first_type
FROM analytics.user_activity;
",
    ),
    (
        "05_activity_windows.sql",
        "-- CURRENT_DATE in a GROUP BY CASE (groups move at midnight), in FILTERs and BETWEEN.
CREATE MATERIALIZED VIEW reports.activity_windows AS
SELECT
    workspace_id,
    CASE WHEN created_at >= CURRENT_DATE - 7 THEN 'week'
         WHEN created_at >= CURRENT_DATE - INTERVAL '30 days' THEN 'month'
         ELSE 'older' END AS age,
    COUNT(*) AS events,
    COUNT(DISTINCT user_id) AS users,
    COUNT(*) FILTER (WHERE created_at < CURRENT_DATE) AS before_today,
    COUNT(*) FILTER (WHERE DATE(created_at) = CURRENT_DATE - 1) AS yesterday,
    COUNT(*) FILTER (WHERE created_at BETWEEN CURRENT_DATE - 3 AND CURRENT_DATE + 1) AS around_today,
    MIN(created_at) AS first_event,
    MAX(activity_type) AS max_type
FROM analytics.user_activity
WHERE activity_type IN ('login', 'chat') AND created_at >= DATE '2026-01-01'
GROUP BY workspace_id, 2;
",
    ),
    (
        "06_daily_runs.sql",
        "-- Rows enter the window later (started_at < CURRENT_DATE); ::date key, COALESCE key,
-- casts, integer/numeric/float sums and averages.
CREATE MATERIALIZED VIEW reports.daily_runs AS
SELECT
    started_at::date AS run_date,
    COALESCE(error_code, 'none') AS code,
    COUNT(*) AS runs,
    COUNT(DISTINCT agent_id) AS agents,
    SUM(runtime_seconds) AS runtime_total,
    SUM(CAST(runtime_seconds AS bigint)) AS runtime_total_int,
    AVG(CAST(runtime_seconds AS bigint)) AS runtime_avg_int,
    AVG(runtime_seconds::numeric) AS runtime_avg_exact,
    SUM(credits_consumed) AS credits,
    AVG(credits_consumed) AS credits_avg,
    SUM(credits_consumed) / COUNT(*) AS credits_per_run,
    MIN(runtime_seconds) AS fastest,
    MAX(credits_consumed) AS max_credits,
    MAX(started_at) AS last_start
FROM public.agent_runs
WHERE started_at < CURRENT_DATE
  AND started_at >= CURRENT_DATE - 10
  AND (runtime_seconds IS NULL OR runtime_seconds BETWEEN 1 AND 590)
GROUP BY run_date, code;
",
    ),
    (
        "07_weekly_workspace.sql",
        "-- date_trunc('week') key (across the end of daylight saving time), arithmetic over aggregates.
CREATE MATERIALIZED VIEW reports.weekly_workspace AS
SELECT
    date_trunc('week', started_at) AS week,
    workspace_id,
    COUNT(*) AS runs,
    COUNT(*) FILTER (WHERE status = 'completed') AS completed,
    100.0 * COUNT(*) FILTER (WHERE status = 'completed') / COUNT(*) AS success_pct,
    SUM(CASE WHEN status = 'failed' THEN 1 ELSE 0 END) * 100 / COUNT(*) AS failure_pct_int,
    SUM(credits_consumed) * 2 - 1 AS credits_expr,
    SUM(CASE WHEN status = 'failed' THEN credits_consumed ELSE 0.5 END) AS mixed_scale_sum,
    AVG(CASE WHEN status = 'failed' THEN credits_consumed ELSE 2 END) AS mixed_scale_avg,
    CAST(SUM(credits_consumed) AS bigint) AS credits_int,
    MAX(credits_consumed) - MIN(credits_consumed) AS credit_range,
    AVG(runtime_seconds) / 60 AS avg_minutes,
    PERCENTILE_CONT(0.25) WITHIN GROUP (ORDER BY runtime_seconds) AS runtime_c25,
    PERCENTILE_DISC(0.25) WITHIN GROUP (ORDER BY runtime_seconds) AS runtime_d25,
    PERCENTILE_CONT(0.25) WITHIN GROUP (ORDER BY credits_consumed) AS credits_c25
FROM public.agent_runs
WHERE started_at >= DATE '2026-07-01' AND user_id IS NOT NULL
GROUP BY date_trunc('week', started_at), workspace_id;
",
    ),
    (
        "08_workspace_day_spread.sql",
        "-- Aggregate over aggregate over aggregate, HAVING in the middle, CURRENT_DATE innermost.
CREATE MATERIALIZED VIEW reports.workspace_day_spread AS
SELECT
    workspace_id,
    COUNT(*) AS active_days,
    MAX(users) AS peak_users,
    MIN(users) AS low_users,
    SUM(runs) AS runs,
    AVG(users) AS avg_users,
    MAX(day) AS last_day,
    PERCENTILE_DISC(0.25) WITHIN GROUP (ORDER BY users) AS users_d25
FROM (
    SELECT workspace_id, day, COUNT(*) AS users, SUM(runs) AS runs
    FROM (
        SELECT workspace_id, user_id, started_at::date AS day, COUNT(*) AS runs
        FROM public.agent_runs
        WHERE started_at >= CURRENT_DATE - 14
        GROUP BY workspace_id, user_id, started_at::date
    ) per_user_day
    GROUP BY workspace_id, day
    HAVING SUM(runs) > 1
) per_day
GROUP BY workspace_id;
",
    ),
    (
        "10_error_codes.sql",
        "-- NULL group keys, boolean keys and outputs, untyped literals (text), a string that looks
-- like an aggregate call, COALESCE over an aggregate.
CREATE MATERIALIZED VIEW reports.error_codes AS
SELECT
    error_code,
    status = 'failed' AS failed,
    COALESCE(error_code, 'max(none)') AS label,
    'runs' AS unit,
    NULL AS note,
    COUNT(*) AS runs,
    COUNT(*) > 50 AS frequent,
    COALESCE(SUM(credits_consumed), 0) AS credits
FROM public.agent_runs
GROUP BY error_code, failed, label;
",
    ),
    (
        "11_deploy_alarm.sql",
        "-- HAVING without GROUP BY: one row or none.
CREATE MATERIALIZED VIEW reports.deploy_alarm AS
SELECT COUNT(*) AS deploys, MAX(created_at) AS last_deploy
FROM analytics.user_activity
WHERE activity_type = 'deploy'
HAVING COUNT(*) > 0;
",
    ),
    (
        "09_busy_agents.sql",
        "-- No GROUP BY over a grouped subquery with HAVING.
CREATE MATERIALIZED VIEW reports.busy_agents AS
SELECT
    COUNT(*) AS busy_agents,
    SUM(completed) AS completed,
    MAX(completed) AS most,
    AVG(completed) AS avg_completed,
    MIN(last_run) AS oldest_last_run
FROM (
    SELECT agent_id, COUNT(*) AS completed, MAX(started_at) AS last_run
    FROM public.agent_runs
    WHERE status = 'completed'
    GROUP BY agent_id
    HAVING COUNT(*) > 3
) a;
",
    ),
];

fn write_views(dir: &Path, files: &[(&str, &str)]) -> Result<()> {
    std::fs::create_dir_all(dir)?;
    for (name, text) in files {
        std::fs::write(dir.join(name), text).with_context(|| format!("writing {name}"))?;
    }
    Ok(())
}

type TextRow = Vec<Option<String>>;

async fn text_rows(client: &Client, sql: &str) -> Result<Vec<TextRow>> {
    let mut rows = Vec::new();
    for msg in client
        .simple_query(sql)
        .await
        .with_context(|| format!("running {sql}"))?
    {
        if let SimpleQueryMessage::Row(r) = msg {
            rows.push((0..r.len()).map(|i| r.get(i).map(str::to_string)).collect());
        }
    }
    Ok(rows)
}

fn same_float(a: &str, b: &str) -> bool {
    match (a.parse::<f64>(), b.parse::<f64>()) {
        (Ok(p), Ok(q)) => {
            (p.is_nan() && q.is_nan()) || p == q || (p - q).abs() <= 1e-9 * p.abs().max(q.abs())
        }
        _ => false,
    }
}

/// Every view compared with PostgreSQL's evaluation of its SQL (at the engine's date) as text:
/// exact for every type except double precision (relative 1e-9, PostgreSQL's float sums depend on
/// row order), so a numeric printed with another scale (12.5 for 12.50) is a difference too.
/// Also checks the engine's date against PostgreSQL's own date of the clock instant.
async fn strict_differences(env: &EngineEnv, clock: &str) -> Result<String> {
    let prepared = deltamv::setup::prepare(&env.config()).await?;
    let c = &prepared.client;
    let today = env.today(&prepared.tz);
    let pg_today = text_rows(c, &format!("SELECT (TIMESTAMPTZ '{clock}')::date::text")).await?;
    let mut out = String::new();
    if pg_today.first().and_then(|r| r[0].as_deref()) != Some(today.as_str()) {
        out.push_str(&format!(
            "the engine's CURRENT_DATE {today} is not PostgreSQL's date of {clock}: {pg_today:?}\n"
        ));
    }
    for plan in &prepared.plans {
        let query = deltamv::reconcile::replace_current_date(&plan.query_sql, &today);
        c.batch_execute(
            "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY; SET LOCAL extra_float_digits = 3",
        )
        .await?;
        let expected = text_rows(c, &format!("SELECT * FROM ({query}) q")).await;
        let actual = text_rows(c, &format!("SELECT * FROM {}", plan.name.quoted())).await;
        c.batch_execute("COMMIT").await?;
        let (expected, actual) = (expected?, actual?);
        let types = plan.output_types();
        let key =
            |r: &TextRow| -> TextRow { plan.key_columns.iter().map(|i| r[*i].clone()).collect() };
        let exp: BTreeMap<TextRow, TextRow> =
            expected.iter().map(|r| (key(r), r.clone())).collect();
        let mut act: BTreeMap<TextRow, TextRow> = BTreeMap::new();
        let mut diffs = Vec::new();
        for r in &actual {
            if act.insert(key(r), r.clone()).is_some() {
                diffs.push(format!("  duplicate target row {r:?}"));
            }
        }
        for (k, e) in &exp {
            let ok = act.get(k).is_some_and(|a| {
                e.iter().zip(a).zip(&types).all(|((x, y), t)| match (x, y) {
                    (Some(x), Some(y)) if *t == deltamv::value::SqlType::Float8 => same_float(x, y),
                    _ => x == y,
                })
            });
            if !ok {
                diffs.push(format!("  expected {e:?}\n  actual   {:?}", act.get(k)));
            }
        }
        for (k, a) in &act {
            if !exp.contains_key(k) {
                diffs.push(format!("  unexpected target row {a:?}"));
            }
        }
        if !diffs.is_empty() {
            out.push_str(&format!(
                "{} at {today}: {} rows differ (expected {}, target {})\n{}\n",
                plan.name,
                diffs.len(),
                expected.len(),
                actual.len(),
                diffs.iter().take(4).cloned().collect::<Vec<_>>().join("\n")
            ));
        }
    }
    Ok(out)
}

/// Both oracles: reconcile's (numbers by value, waits for convergence), then the strict one.
async fn check(env: &EngineEnv, clock: &str, limit: Duration, what: &str) -> Result<()> {
    assert_converges(env, limit, what).await?;
    let strict = strict_differences(env, clock).await?;
    if !strict.is_empty() {
        bail!("{what}: targets differ from PostgreSQL's evaluation as text:\n{strict}");
    }
    Ok(())
}

async fn count(client: &Client, sql: &str) -> Result<i64> {
    Ok(client
        .query_one(sql, &[])
        .await
        .with_context(|| sql.to_string())?
        .get(0))
}

async fn column_texts(client: &Client, sql: &str) -> Result<Vec<String>> {
    Ok(text_rows(client, sql)
        .await?
        .into_iter()
        .map(|r| {
            r.into_iter()
                .map(|v| v.unwrap_or_else(|| "NULL".into()))
                .collect::<Vec<_>>()
                .join("|")
        })
        .collect())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn language_views_are_maintained_exactly() -> Result<()> {
    for seed in SEEDS {
        eprintln!("seed {seed}");
        one_seed(seed)
            .await
            .with_context(|| format!("seed {seed}"))?;
    }
    Ok(())
}

async fn one_seed(seed: u64) -> Result<()> {
    // Early November in New York: weeks and 7-day windows cross the end of daylight saving time.
    let db = Database::start(Some("America/New_York")).await?;
    let dir = tempfile::tempdir()?;
    let views = dir.path().join("views");
    write_views(&views, VIEWS)?;
    let mut now = "2026-11-05T17:00:00Z".to_string();
    let Fixture {
        cluster: _cluster,
        url,
        client,
        env,
    } = db.engine(&views, Some(&now))?;
    let mut w = Workload::new(seed, micros(&now));
    // The source is emptied once, on purpose, below; random TRUNCATEs would leave the activity
    // views nearly empty for most of the run.
    w.allow_truncate = false;
    seed_rows(&client, &mut w, 400).await?;

    let (code, out, err) = env.run_cmd(&["init"])?;
    assert_eq!(code, 0, "init failed:\n{out}\n{err}");
    check(&env, &now, Duration::from_secs(5), "after init").await?;
    let mut engine = env.spawn_run()?;
    run_txns(&client, &mut w, TXNS).await?;
    wait_caught_up(&client, &mut engine, &env, CATCH_UP).await?;
    check(&env, &now, Duration::from_secs(10), "after a first phase").await?;

    // Every view has content worth comparing (a view that is always empty proves nothing),
    // the views without GROUP BY have exactly one row.
    for (view, min_rows) in [
        ("reports.agent_outcomes", 5),
        ("reports.run_totals", 1),
        ("reports.impossible_runs", 1),
        ("reports.activity_overall", 1),
        ("reports.activity_windows", 5),
        ("reports.daily_runs", 5),
        ("reports.weekly_workspace", 5),
        ("reports.workspace_day_spread", 2),
        ("reports.busy_agents", 1),
        ("reports.error_codes", 3),
        ("reports.deploy_alarm", 1),
    ] {
        let n = count(&client, &format!("SELECT count(*) FROM {view}")).await?;
        assert!(
            n >= min_rows,
            "{view} has {n} rows, expected at least {min_rows}"
        );
    }
    for view in [
        "run_totals",
        "impossible_runs",
        "activity_overall",
        "busy_agents",
    ] {
        let n = count(&client, &format!("SELECT count(*) FROM reports.{view}")).await?;
        assert_eq!(
            n, 1,
            "reports.{view} (no GROUP BY) must have exactly one row"
        );
    }
    assert_eq!(
        column_texts(
            &client,
            "SELECT runs, coded, credits, last_start FROM reports.impossible_runs"
        )
        .await?,
        vec!["0|0|NULL|NULL".to_string()],
        "a filter matching nothing gives COUNTs of 0 and NULLs"
    );

    // kill -9 in the middle of a stream of writes, then restart.
    let mut engine = crash_during_writes(
        &env,
        &mut engine,
        &url,
        seed ^ 0xbeef,
        micros(&now),
        TXNS,
        Duration::from_millis(500),
    )
    .await?;
    run_txns(&client, &mut w, TXNS / 2).await?;
    wait_caught_up(&client, &mut engine, &env, CATCH_UP).await?;
    check(
        &env,
        &now,
        Duration::from_secs(10),
        "after kill -9 and restart",
    )
    .await?;

    // Midnight in New York passes while the engine runs, without writes: today's rows enter
    // `started_at < CURRENT_DATE` and `DATE(created_at) = CURRENT_DATE - 1`, CASE groups move.
    // A few fixed rows make the expected movement known.
    let ws = "00000000-0000-4000-a000-0000000000aa";
    client
        .batch_execute(&format!(
            "INSERT INTO analytics.user_activity (workspace_id, user_id, activity_type, created_at)
             VALUES ('{ws}', '{ws}', 'login', '2026-11-05 09:00-05'),
                    ('{ws}', '{ws}', 'chat', '2026-11-05 23:59:59-05');
             INSERT INTO public.agent_runs (agent_id, workspace_id, user_id, status, started_at,
                 runtime_seconds, credits_consumed)
             VALUES ('{ws}', '{ws}', '{ws}', 'completed', '2026-11-05 12:00-05', 100, 1.5);"
        ))
        .await?;
    wait_caught_up(&client, &mut engine, &env, CATCH_UP).await?;
    check(&env, &now, Duration::from_secs(10), "before midnight").await?;
    let ws_windows = format!(
        "SELECT age, events, before_today, yesterday FROM reports.activity_windows
          WHERE workspace_id = '{ws}'"
    );
    let ws_runs =
        "SELECT run_date::text, runs FROM reports.daily_runs WHERE run_date = DATE '2026-11-05'";
    assert_eq!(column_texts(&client, &ws_windows).await?, ["week|2|0|0"]);
    assert_eq!(column_texts(&client, ws_runs).await?, Vec::<String>::new());

    now = "2026-11-06T05:00:30Z".to_string();
    env.set_clock(&now)?;
    w.set_now(micros(&now));
    check(&env, &now, Duration::from_secs(20), "after midnight").await?;
    assert_eq!(
        column_texts(&client, &ws_windows).await?,
        ["week|2|2|2"],
        "after midnight both rows are before today and from yesterday"
    );
    let entered = column_texts(&client, ws_runs).await?;
    assert!(
        !entered.is_empty(),
        "after midnight yesterday's runs must have entered daily_runs"
    );

    // Writes after midnight, a crash, and a restart a week later.
    run_txns(&client, &mut w, TXNS).await?;
    kill9(&mut engine);
    now = "2026-11-13T15:00:00Z".to_string();
    env.set_clock(&now)?;
    w.set_now(micros(&now));
    let mut engine = env.spawn_run()?;
    run_txns(&client, &mut w, TXNS / 2).await?;
    wait_caught_up(&client, &mut engine, &env, CATCH_UP).await?;
    check(
        &env,
        &now,
        Duration::from_secs(20),
        "a week later, after a crash",
    )
    .await?;

    // The strict oracle is not blind: the same number printed with another scale is a difference
    // to a reader (reconcile, comparing numbers by value, accepts it).
    let credits = column_texts(&client, "SELECT credits_total FROM reports.run_totals").await?;
    let [credits] = credits.as_slice() else {
        bail!("run_totals has {} rows", credits.len())
    };
    client
        .batch_execute(
            "UPDATE reports.run_totals SET credits_total = credits_total::numeric(30, 8)",
        )
        .await?;
    let strict = strict_differences(&env, &now).await?;
    assert!(
        strict.contains("reports.run_totals") && strict.contains(credits.as_str()),
        "a rescaled numeric must be reported: {strict}"
    );
    client
        .batch_execute(&format!(
            "UPDATE reports.run_totals SET credits_total = '{credits}'::numeric"
        ))
        .await?;
    check(
        &env,
        &now,
        Duration::from_secs(5),
        "after restoring the rescaled number",
    )
    .await?;

    // Both sources are truncated (one TRUNCATE of two tables): views without GROUP BY keep
    // exactly one row of zero counts and NULLs, grouped views and HAVING COUNT(*) > 0 have none.
    client
        .batch_execute("TRUNCATE analytics.user_activity, public.agent_runs")
        .await?;
    wait_caught_up(&client, &mut engine, &env, CATCH_UP).await?;
    check(
        &env,
        &now,
        Duration::from_secs(10),
        "after emptying both sources",
    )
    .await?;
    for (sql, expected) in [
        (
            "SELECT events, users, events_7d, users_yesterday, last_event FROM reports.activity_overall",
            "0|0|0|0|NULL",
        ),
        (
            "SELECT runs, timed_runs, runtime_total, credits_total, runtime_c25, min_status FROM reports.run_totals",
            "0|0|NULL|NULL|NULL|NULL",
        ),
        ("SELECT runs, coded, failures FROM reports.impossible_runs", "0|0|NULL"),
        ("SELECT busy_agents, completed, most FROM reports.busy_agents", "0|NULL|NULL"),
    ] {
        assert_eq!(column_texts(&client, sql).await?, [expected], "{sql}");
    }
    for view in [
        "agent_outcomes",
        "activity_windows",
        "daily_runs",
        "weekly_workspace",
        "workspace_day_spread",
        "error_codes",
        "deploy_alarm",
    ] {
        let n = count(&client, &format!("SELECT count(*) FROM reports.{view}")).await?;
        assert_eq!(n, 0, "reports.{view} must be empty when its source is");
    }
    run_txns(&client, &mut w, TXNS / 2).await?;
    wait_caught_up(&client, &mut engine, &env, CATCH_UP).await?;
    check(
        &env,
        &now,
        Duration::from_secs(10),
        "after refilling the sources",
    )
    .await?;

    let (code, status, err) = env.run_cmd(&["status", "--json"])?;
    assert_eq!(code, 0, "status failed: {err}");
    let views: serde_json::Value = serde_json::from_str(&status)?;
    let views = views.as_array().context("status is a list")?;
    assert_eq!(views.len(), VIEWS.len(), "{status}");
    for v in views {
        assert_eq!(v["state"], "ok", "view not healthy: {v}");
    }
    let (code, out, err) = env.run_cmd(&["reconcile"])?;
    assert_eq!(code, 0, "reconcile reported differences:\n{out}\n{err}");
    let exit = terminate(&mut engine, Duration::from_secs(10))?;
    assert_eq!(
        exit,
        Some(0),
        "deltamv run did not exit cleanly after SIGTERM"
    );
    Ok(())
}

/// Good views that sit next to each bad one.
const GOOD: &[(&str, &str)] = &[
    (
        "01_good.sql",
        "CREATE MATERIALIZED VIEW reports.good_one AS
SELECT workspace_id, COUNT(*) AS runs FROM public.agent_runs GROUP BY workspace_id;",
    ),
    (
        "09_good.sql",
        "CREATE MATERIALIZED VIEW reports.good_two AS
SELECT COUNT(*) AS events FROM analytics.user_activity WHERE created_at >= CURRENT_DATE - 7;",
    ),
];

/// (construct, words the error must contain, view name, SQL of the query).
const BAD: &[(&str, &[&str], &str, &str)] = &[
    (
        "join",
        &["join"],
        "reports.bad_join",
        "SELECT r.workspace_id, COUNT(*) AS n FROM public.agent_runs r
         JOIN analytics.user_activity a ON a.user_id = r.user_id GROUP BY r.workspace_id",
    ),
    (
        "comma join",
        &["join"],
        "reports.bad_comma_join",
        "SELECT r.workspace_id, COUNT(*) AS n FROM public.agent_runs r, analytics.user_activity a
         WHERE a.user_id = r.user_id GROUP BY r.workspace_id",
    ),
    (
        "window function",
        &["window", "rank"],
        "reports.bad_window",
        "SELECT workspace_id, COUNT(*) AS n, rank() OVER (ORDER BY COUNT(*)) AS r
         FROM public.agent_runs GROUP BY workspace_id",
    ),
    (
        "window aggregate",
        &["window", "count"],
        "reports.bad_window_agg",
        "SELECT workspace_id, COUNT(*) OVER (PARTITION BY workspace_id) AS n FROM public.agent_runs",
    ),
    (
        "distinct",
        &["distinct"],
        "reports.bad_distinct",
        "SELECT DISTINCT workspace_id, status FROM public.agent_runs",
    ),
    (
        "order by",
        &["order by"],
        "reports.bad_order",
        "SELECT workspace_id, COUNT(*) AS n FROM public.agent_runs GROUP BY workspace_id ORDER BY n DESC",
    ),
    (
        "limit",
        &["limit"],
        "reports.bad_limit",
        "SELECT workspace_id, COUNT(*) AS n FROM public.agent_runs GROUP BY workspace_id LIMIT 5",
    ),
    (
        "now()",
        &["now()"],
        "reports.bad_now",
        "SELECT workspace_id, COUNT(*) AS n FROM public.agent_runs
         WHERE started_at >= now() - INTERVAL '7 days' GROUP BY workspace_id",
    ),
    (
        "current_timestamp",
        &["current_timestamp"],
        "reports.bad_current_timestamp",
        "SELECT workspace_id, COUNT(*) AS n FROM public.agent_runs
         WHERE started_at >= CURRENT_TIMESTAMP - INTERVAL '7 days' GROUP BY workspace_id",
    ),
    (
        "unknown function",
        &["upper"],
        "reports.bad_function",
        "SELECT upper(status) AS s, COUNT(*) AS n FROM public.agent_runs GROUP BY upper(status)",
    ),
    (
        "string_agg",
        &["string_agg"],
        "reports.bad_string_agg",
        "SELECT workspace_id, string_agg(status, ',') AS statuses FROM public.agent_runs GROUP BY workspace_id",
    ),
    (
        "group by key not selected",
        &["group by", "workspace_id", "select list"],
        "reports.bad_hidden_key",
        "SELECT COUNT(*) AS n FROM public.agent_runs GROUP BY workspace_id",
    ),
    (
        "current_date in the select list",
        &["current_date"],
        "reports.bad_current_date_output",
        "SELECT workspace_id, CURRENT_DATE - 1 AS yesterday, COUNT(*) AS n FROM public.agent_runs
         GROUP BY workspace_id",
    ),
    (
        "union",
        &["union"],
        "reports.bad_union",
        "SELECT workspace_id, COUNT(*) AS n FROM public.agent_runs GROUP BY workspace_id
         UNION ALL SELECT workspace_id, COUNT(*) AS n FROM analytics.user_activity GROUP BY workspace_id",
    ),
    (
        "syntax error",
        &["syntax"],
        "reports.bad_syntax",
        "SELECT workspace_id, COUNT(* AS n FROM public.agent_runs GROUP BY workspace_id",
    ),
];

/// What `init` may have created: schemas, tables in them, slots, publications.
async fn created_objects(client: &Client) -> Result<Vec<String>> {
    column_texts(
        client,
        "SELECT 'schema ' || nspname FROM pg_namespace WHERE nspname IN ('deltamv', 'reports')
         UNION ALL SELECT 'table ' || n.nspname || '.' || c.relname FROM pg_class c
           JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname IN ('deltamv', 'reports')
         UNION ALL SELECT 'slot ' || slot_name FROM pg_replication_slots
         UNION ALL SELECT 'publication ' || pubname FROM pg_publication
         ORDER BY 1",
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn init_refuses_unsupported_views_before_creating_anything() -> Result<()> {
    let Database {
        cluster: _cluster,
        url,
        client,
    } = Database::start(Some("America/New_York")).await?;
    let dir = tempfile::tempdir()?;
    let mut failures = Vec::new();
    for (i, (construct, words, view, query)) in BAD.iter().enumerate() {
        let views = dir.path().join(format!("case{i}"));
        let file = format!("05_{}.sql", construct.replace([' ', '(', ')'], "_"));
        let text =
            format!("-- refused: {construct}\nCREATE MATERIALIZED VIEW {view} AS\n{query};\n");
        write_views(&views, GOOD)?;
        write_views(&views, &[(file.as_str(), text.as_str())])?;
        let env = EngineEnv::new(&url, &views)?;
        env.set_clock("2026-11-05T17:00:00Z")?;
        let (code, out, err) = env.run_cmd(&["init"])?;
        let message = format!("{out}{err}");
        let lower = message.to_lowercase();
        let mut problems = Vec::new();
        if code == 0 {
            problems.push("exit code 0".to_string());
        }
        for word in words
            .iter()
            .copied()
            .chain([view.to_owned(), file.as_str()])
        {
            if !lower.contains(&word.to_lowercase()) {
                problems.push(format!("message does not name {word:?}"));
            }
        }
        let created = created_objects(&client).await?;
        if !created.is_empty() {
            problems.push(format!("created {created:?}"));
        }
        if !problems.is_empty() {
            failures.push(format!(
                "{construct}: {}\n  output: {}",
                problems.join("; "),
                message.trim()
            ));
        }
    }
    assert!(failures.is_empty(), "refusals:\n{}", failures.join("\n"));

    // Control: without a bad file the same directory initializes and creates what was absent above.
    let views = dir.path().join("good");
    write_views(&views, GOOD)?;
    let env = EngineEnv::new(&url, &views)?;
    env.set_clock("2026-11-05T17:00:00Z")?;
    let (code, out, err) = env.run_cmd(&["init"])?;
    assert_eq!(code, 0, "good views must initialize:\n{out}\n{err}");
    let created = created_objects(&client).await?;
    for expected in [
        "schema deltamv",
        "schema reports",
        "table reports.good_one",
        "table reports.good_two",
        "slot deltamv",
        "publication deltamv_pub",
    ] {
        assert!(
            created.iter().any(|c| c == expected),
            "{expected} missing after a successful init: {created:?}"
        );
    }
    Ok(())
}
