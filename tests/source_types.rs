//! Source-schema variants real applications use, each either maintained exactly and
//! incrementally or refused by `init` with a message naming the column and the reason — never
//! silently wrong, never silently degraded to a full refresh.
//!
//! Incremental variants retype or extend the source tables of `schema/sources.sql` (an enum
//! `status`, domains over numeric and text, `real` runtimes, a stored generated column), load the
//! seed views plus views exercising the type, run the random workload with a kill -9 of the engine
//! in the middle of it, and compare every target with PostgreSQL's own result of its SQL.
//! Refused variants check `init`'s message. The last tests cover the loud fallback: `init`
//! prints why a view is not incremental and what that costs, and `require_incremental` makes it
//! fail instead.

mod support;

use std::time::Duration;

use anyhow::{ensure, Result};
use support::engine::{
    assert_converges, crash_during_writes, micros, run_txns, seed_rows, terminate, wait_caught_up,
    Database, Fixture,
};
use support::workload::Workload;

const NOW: &str = "2026-03-07T12:00:00Z";

/// `status` as an enum (the seed views compare it with string literals), `credits_consumed` as a
/// domain over numeric(12,4) (itself under a second domain), `error_code` and `activity_type` as
/// domains over text and an enum.
const ENUM_AND_DOMAINS: &str = "
ALTER TABLE public.agent_runs DROP CONSTRAINT agent_runs_status_check;
CREATE TYPE public.run_status AS ENUM ('running', 'completed', 'failed', 'cancelled');
ALTER TABLE public.agent_runs ALTER COLUMN status TYPE public.run_status USING status::public.run_status;
CREATE DOMAIN public.credits AS numeric(12,4) CHECK (VALUE >= 0);
CREATE DOMAIN public.run_credits AS public.credits;
ALTER TABLE public.agent_runs ALTER COLUMN credits_consumed TYPE public.run_credits;
CREATE DOMAIN public.error_code AS text;
ALTER TABLE public.agent_runs ALTER COLUMN error_code TYPE public.error_code;
CREATE TYPE analytics.activity_kind AS ENUM ('deploy', 'chat', 'login');
ALTER TABLE analytics.user_activity ALTER COLUMN activity_type TYPE analytics.activity_kind
    USING activity_type::analytics.activity_kind;";

const ENUM_VIEWS: &[(&str, &str)] = &[
    (
        "by_status.sql",
        "CREATE MATERIALIZED VIEW analytics.t_by_status AS
SELECT workspace_id, status,
       COUNT(*) AS runs,
       COUNT(*) FILTER (WHERE status IN ('failed', 'cancelled')) AS unsuccessful,
       COUNT(*) FILTER (WHERE status <> 'running') AS finished,
       SUM(credits_consumed) AS credits,
       MAX(credits_consumed) AS max_credits,
       MIN(status::text) AS first_label,
       COUNT(DISTINCT error_code) AS error_codes,
       MAX(error_code) AS last_error_code
FROM public.agent_runs
GROUP BY workspace_id, status;",
    ),
    (
        "by_kind.sql",
        "CREATE MATERIALIZED VIEW analytics.t_by_kind AS
SELECT activity_type, COUNT(*) AS events, COUNT(DISTINCT user_id) AS users,
       COUNT(DISTINCT activity_type) AS kinds
FROM analytics.user_activity
WHERE activity_type = 'deploy' OR activity_type IN ('chat')
GROUP BY activity_type;",
    ),
];

/// `status` and `error_code` as `character(n)`: PostgreSQL pads them and compares them
/// ignoring the padding (`status = 'completed'` holds for `'completed   '`).
const CHARACTER: &str = "
ALTER TABLE public.agent_runs ALTER COLUMN status TYPE character(12);
ALTER TABLE public.agent_runs ALTER COLUMN error_code TYPE char(5);";

const CHARACTER_VIEWS: &[(&str, &str)] = &[(
    "padded.sql",
    "CREATE MATERIALIZED VIEW analytics.t_padded AS
SELECT status, COALESCE(error_code, 'none') AS code,
       COUNT(*) AS runs,
       COUNT(*) FILTER (WHERE status IN ('failed', 'cancelled  ')) AS unsuccessful,
       COUNT(*) FILTER (WHERE status::text = 'completed') AS completed_as_text,
       MAX(error_code) AS last_code, MIN(status) AS first_status,
       COUNT(DISTINCT error_code) AS codes
FROM public.agent_runs
GROUP BY status, COALESCE(error_code, 'none');",
)];

/// The other spellings schemas use for the same data: varchar, timestamp without time zone,
/// unconstrained numeric, integer seconds, smallint and bigint.
const PLAIN_ALTERNATIVES: &str = "
ALTER TABLE public.agent_runs ALTER COLUMN status TYPE varchar(16);
ALTER TABLE public.agent_runs ALTER COLUMN started_at TYPE timestamp without time zone;
ALTER TABLE public.agent_runs ALTER COLUMN credits_consumed TYPE numeric;
ALTER TABLE public.agent_runs ALTER COLUMN runtime_seconds TYPE integer;
ALTER TABLE public.agent_runs ALTER COLUMN error_code TYPE varchar(8);
ALTER TABLE analytics.user_activity ALTER COLUMN created_at TYPE timestamp;";

/// `runtime_seconds` as `real`: the seed views average it and take percentiles of it.
const REAL_RUNTIME: &str = "ALTER TABLE public.agent_runs ALTER COLUMN runtime_seconds TYPE real;";

const REAL_VIEWS: &[(&str, &str)] = &[(
    "runtimes.sql",
    "CREATE MATERIALIZED VIEW analytics.t_runtimes AS
SELECT workspace_id,
       MIN(runtime_seconds) AS fastest,
       MAX(runtime_seconds) AS slowest,
       PERCENTILE_DISC(0.5) WITHIN GROUP (ORDER BY runtime_seconds) AS median_disc,
       AVG(runtime_seconds) AS mean,
       AVG(runtime_seconds * 2) AS mean_doubled,
       SUM(runtime_seconds::numeric) AS total_6_digits,
       SUM(runtime_seconds::double precision) AS total,
       COUNT(*) FILTER (WHERE runtime_seconds > 300.1) AS slow_runs,
       COUNT(*) FILTER (WHERE runtime_seconds::numeric > 300.1) AS slow_runs_numeric,
       COUNT(DISTINCT runtime_seconds) AS distinct_runtimes,
       MAX(runtime_seconds::numeric::real) AS slowest_6_digits,
       MIN((runtime_seconds * 1.5)::real) AS fastest_scaled,
       COUNT(*) FILTER (WHERE runtime_seconds IN (0.5, 1, runtime_seconds * 1)) AS listed
FROM public.agent_runs
GROUP BY workspace_id;",
)];

/// A stored generated column the planner computes from its expression (PostgreSQL 15 does not
/// publish it): numeric(14,2) rounds the doubled credits.
const GENERATED: &str = "ALTER TABLE public.agent_runs ADD COLUMN credits_doubled numeric(14,2)
    GENERATED ALWAYS AS (credits_consumed * 2.005) STORED;";

const GENERATED_VIEWS: &[(&str, &str)] = &[(
    "doubled.sql",
    "CREATE MATERIALIZED VIEW analytics.t_doubled AS
SELECT workspace_id, credits_doubled > 500 AS big,
       SUM(credits_doubled) AS doubled, MAX(credits_doubled) AS max_doubled, COUNT(*) AS runs
FROM public.agent_runs
GROUP BY workspace_id, credits_doubled > 500;",
)];

/// Seed views plus `extra` in a temp dir.
fn views_dir(extra: &[(&str, &str)], settings: &str) -> Result<tempfile::TempDir> {
    let dir = support::engine::seed_views_with(settings)?;
    for (file, sql) in extra {
        std::fs::write(dir.path().join(file), sql)?;
    }
    Ok(dir)
}

/// Applies `ddl`, loads the seed views and `extra`: every view must be incremental, and stay
/// exact through the workload, a kill -9 in the middle of it and a restart.
async fn exact_and_incremental(ddl: &str, extra: &[(&str, &str)], seed: u64) -> Result<()> {
    let db = Database::start(Some("America/Chicago")).await?;
    db.client.batch_execute(ddl).await?;
    let views = views_dir(extra, "")?;
    let Fixture {
        cluster: _cluster,
        client,
        env,
        url,
    } = db.engine(views.path(), Some(NOW))?;
    let mut w = Workload::new(seed, micros(NOW));
    w.allow_truncate = false;
    seed_rows(&client, &mut w, 400).await?;
    let (code, out, err) = env.run_cmd(&["init", "--require-incremental"])?;
    ensure!(code == 0, "init failed:\n{out}\n{err}");
    let total = 5 + extra.len();
    ensure!(
        out.contains(&format!("({total} incremental, 0 fallback)")) && !out.contains("fallback:"),
        "every view is incremental:\n{out}"
    );
    assert_converges(&env, Duration::from_secs(10), "after init").await?;

    let mut engine = env.spawn_run()?;
    run_txns(&client, &mut w, 30).await?;
    let mut engine = crash_during_writes(
        &env,
        &mut engine,
        &url,
        seed + 1,
        micros(NOW),
        60,
        Duration::from_millis(700),
    )
    .await?;
    run_txns(&client, &mut w, 30).await?;
    wait_caught_up(&client, &mut engine, &env, Duration::from_secs(60)).await?;
    assert_converges(
        &env,
        Duration::from_secs(10),
        "after a kill -9 and a restart",
    )
    .await?;
    terminate(&mut engine, Duration::from_secs(10))?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enum_and_domain_columns_stay_incremental_and_exact() -> Result<()> {
    exact_and_incremental(ENUM_AND_DOMAINS, ENUM_VIEWS, 7101).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn character_columns_compare_ignoring_their_padding() -> Result<()> {
    exact_and_incremental(CHARACTER, CHARACTER_VIEWS, 7501).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_alternative_types_stay_incremental_and_exact() -> Result<()> {
    exact_and_incremental(PLAIN_ALTERNATIVES, &[], 7701).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_columns_are_exact_as_postgres_computes_them() -> Result<()> {
    exact_and_incremental(REAL_RUNTIME, REAL_VIEWS, 7201).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_generated_column_is_computed_from_its_expression() -> Result<()> {
    exact_and_incremental(GENERATED, GENERATED_VIEWS, 7301).await
}

/// A variant `init` must refuse: `ddl` on the sources, one view, and what the error must say.
struct Refused {
    ddl: &'static str,
    view: &'static str,
    says: &'static [&'static str],
}

const REFUSED: &[Refused] = &[
    Refused {
        ddl: ENUM_AND_DOMAINS,
        view: "SELECT workspace_id, MAX(status) AS last_status FROM public.agent_runs GROUP BY workspace_id",
        says: &["MAX(status)", "column \"status\" of table public.agent_runs", "run_status", "declared order"],
    },
    Refused {
        ddl: ENUM_AND_DOMAINS,
        view: "SELECT workspace_id, COUNT(*) AS runs FROM public.agent_runs WHERE status > 'running' GROUP BY workspace_id",
        says: &["comparison", "\"status\"", "declared order"],
    },
    Refused {
        ddl: ENUM_AND_DOMAINS,
        view: "SELECT workspace_id, PERCENTILE_DISC(0.5) WITHIN GROUP (ORDER BY status) AS typical FROM public.agent_runs GROUP BY workspace_id",
        says: &["percentile_disc", "\"status\"", "declared order"],
    },
    Refused {
        ddl: "ALTER TABLE public.agent_runs ALTER COLUMN error_code TYPE text COLLATE \"en-x-icu\";",
        view: "SELECT workspace_id, MAX(error_code) AS last_code FROM public.agent_runs GROUP BY workspace_id",
        says: &["MAX(error_code)", "collation \"en-x-icu\""],
    },
    Refused {
        ddl: "ALTER TABLE public.agent_runs ALTER COLUMN error_code TYPE text COLLATE \"en-x-icu\";",
        view: "SELECT workspace_id, COUNT(*) AS runs FROM public.agent_runs WHERE error_code < 'E2' GROUP BY workspace_id",
        says: &["comparison", "collation \"en-x-icu\""],
    },
    Refused {
        ddl: "CREATE COLLATION public.ci (provider = icu, locale = 'und-u-ks-level2', deterministic = false);
              ALTER TABLE public.agent_runs ALTER COLUMN error_code TYPE text COLLATE public.ci;",
        view: "SELECT error_code, COUNT(*) AS runs FROM public.agent_runs GROUP BY error_code",
        says: &["\"error_code\"", "nondeterministic"],
    },
    Refused {
        ddl: "ALTER TABLE public.agent_runs ADD COLUMN code_lower text GENERATED ALWAYS AS (lower(error_code)) STORED;",
        view: "SELECT code_lower, COUNT(*) AS runs FROM public.agent_runs GROUP BY code_lower",
        says: &["\"code_lower\"", "generated column", "does not publish", "lower"],
    },
    Refused {
        ddl: "ALTER TABLE public.agent_runs ALTER COLUMN runtime_seconds TYPE real;",
        view: "SELECT workspace_id, SUM(runtime_seconds) AS total FROM public.agent_runs GROUP BY workspace_id",
        says: &["SUM of real", "runtime_seconds", "double precision"],
    },
    Refused {
        ddl: "ALTER TABLE public.agent_runs ADD COLUMN meta jsonb;",
        view: "SELECT meta, COUNT(*) AS runs FROM public.agent_runs GROUP BY meta",
        says: &["\"meta\"", "jsonb"],
    },
    Refused {
        ddl: "ALTER TABLE public.agent_runs ADD COLUMN tags text[];",
        view: "SELECT workspace_id, COUNT(DISTINCT tags) AS tag_sets FROM public.agent_runs GROUP BY workspace_id",
        says: &["\"tags\"", "text[]"],
    },
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn variants_outside_the_engine_are_refused_naming_column_and_reason() -> Result<()> {
    let mut failures = Vec::new();
    for (i, case) in REFUSED.iter().enumerate() {
        let db = Database::start(None).await?;
        db.client.batch_execute(case.ddl).await?;
        let views = tempfile::tempdir()?;
        std::fs::write(
            views.path().join("v.sql"),
            format!(
                "CREATE MATERIALIZED VIEW analytics.t_case_{i} AS\n{};",
                case.view
            ),
        )?;
        let Fixture {
            cluster: _cluster,
            client,
            env,
            ..
        } = db.engine(views.path(), Some(NOW))?;
        let (code, out, err) = env.run_cmd(&["init"])?;
        let missing: Vec<&&str> = case.says.iter().filter(|s| !err.contains(**s)).collect();
        if code == 0 || !missing.is_empty() || !err.contains(&format!("analytics.t_case_{i}")) {
            failures.push(format!(
                "{}\n  exit {code}, missing {missing:?}\n  stdout: {out}\n  stderr: {err}",
                case.view
            ));
        }
        // Refused before anything is created.
        let created: bool = client
            .query_one("SELECT to_regclass('deltamv.views') IS NOT NULL", &[])
            .await?
            .get(0);
        if created {
            failures.push(format!("{}: init created its bookkeeping", case.view));
        }
    }
    ensure!(failures.is_empty(), "{}", failures.join("\n\n"));
    Ok(())
}

/// A view outside the language with a unique index: `init` says it falls back, why and what it
/// costs; with `require_incremental` (in deltamv.toml or `--require-incremental`) it fails
/// instead, naming the view and the reason, and creates nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fallback_is_loud_and_can_be_refused() -> Result<()> {
    let db = Database::start(None).await?;
    db.client.batch_execute(ENUM_AND_DOMAINS).await?;
    let extra = [(
        "latest.sql",
        "CREATE MATERIALIZED VIEW analytics.t_latest_status AS
SELECT workspace_id, MAX(status) AS last_status FROM public.agent_runs GROUP BY workspace_id;
CREATE UNIQUE INDEX t_latest_status_key ON analytics.t_latest_status (workspace_id);",
    )];
    let strict = views_dir(&extra, "[defaults]\nrequire_incremental = true\n")?;
    let Fixture {
        cluster: _cluster,
        client,
        env,
        url,
    } = db.engine(strict.path(), Some(NOW))?;
    let mut w = Workload::new(7401, micros(NOW));
    w.allow_truncate = false;
    seed_rows(&client, &mut w, 100).await?;

    let (code, out, err) = env.run_cmd(&["init"])?;
    ensure!(
        code != 0,
        "require_incremental refuses the fallback:\n{out}\n{err}"
    );
    for needle in [
        "require_incremental",
        "analytics.t_latest_status",
        "MAX(status)",
        "declared order",
    ] {
        ensure!(err.contains(needle), "the error names {needle:?}:\n{err}");
    }
    let created: bool = client
        .query_one("SELECT to_regclass('deltamv.views') IS NOT NULL", &[])
        .await?
        .get(0);
    ensure!(!created, "nothing is created when init refuses");

    // Without the setting the view falls back, loudly; the flag refuses it again.
    let lenient = views_dir(&extra, "")?;
    let env = support::engine::EngineEnv::new(&url, lenient.path())?;
    env.set_clock(NOW)?;
    let (code, out, err) = env.run_cmd(&["init", "--require-incremental"])?;
    ensure!(
        code != 0 && err.contains("analytics.t_latest_status"),
        "--require-incremental refuses it:\n{out}\n{err}"
    );
    let (code, out, err) = env.run_cmd(&["init"])?;
    ensure!(code == 0, "init falls back:\n{out}\n{err}");
    for needle in [
        "fallback: view analytics.t_latest_status",
        "is not incremental",
        "MAX(status)",
        "declared order",
        "REFRESH MATERIALIZED VIEW CONCURRENTLY",
        "full recompute",
        "require_incremental",
        "(5 incremental, 1 fallback)",
    ] {
        ensure!(out.contains(needle), "init says {needle:?}:\n{out}");
    }
    let kind: String = client
        .query_one(
            "SELECT relkind::text FROM pg_class WHERE oid = 'analytics.t_latest_status'::regclass",
            &[],
        )
        .await?
        .get(0);
    ensure!(kind == "m", "kept as a materialized view");
    Ok(())
}

/// A database whose default collation is ICU's "en": views ordering text by that default are
/// refused naming it; grouping text stays incremental, and a column declared `COLLATE "C"`
/// orders by bytes again, exactly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_database_default_collation_decides_text_order() -> Result<()> {
    let cluster = support::PgCluster::start(support::ClusterOptions::default())?;
    cluster.psql(
        "postgres",
        "CREATE DATABASE app_icu TEMPLATE template0 LOCALE_PROVIDER icu ICU_LOCALE 'en' LOCALE 'C'",
    )?;
    let url = cluster.url("app_icu");
    let client = support::connect(&url).await?;
    client
        .batch_execute(&std::fs::read_to_string("schema/sources.sql")?)
        .await?;
    let views = tempfile::tempdir()?;
    std::fs::write(
        views.path().join("kinds.sql"),
        "CREATE MATERIALIZED VIEW analytics.t_kinds AS
SELECT workspace_id, MAX(activity_type) AS last_kind, COUNT(DISTINCT activity_type) AS kinds
FROM analytics.user_activity GROUP BY workspace_id;",
    )?;
    std::fs::write(
        views.path().join("grouped.sql"),
        "CREATE MATERIALIZED VIEW analytics.t_grouped AS
SELECT activity_type, COUNT(*) AS events FROM analytics.user_activity GROUP BY activity_type;",
    )?;
    let env = support::engine::EngineEnv::new(&url, views.path())?;
    env.set_clock(NOW)?;
    let mut w = Workload::new(7601, micros(NOW));
    w.allow_truncate = false;
    seed_rows(&client, &mut w, 200).await?;

    let (code, out, err) = env.run_cmd(&["init"])?;
    ensure!(
        code != 0,
        "ordering text under ICU is refused:\n{out}\n{err}"
    );
    for needle in [
        "analytics.t_kinds",
        "MAX(activity_type)",
        "the database's default collation (ICU locale \"en\")",
    ] {
        ensure!(err.contains(needle), "the error names {needle:?}:\n{err}");
    }

    // The column's own collation beats the database default (PostgreSQL's derivation).
    client
        .batch_execute(
            "ALTER TABLE analytics.user_activity ALTER COLUMN activity_type TYPE text COLLATE \"C\"",
        )
        .await?;
    let (code, out, err) = env.run_cmd(&["init", "--require-incremental"])?;
    ensure!(code == 0, "byte order again:\n{out}\n{err}");
    let mut engine = env.spawn_run()?;
    run_txns(&client, &mut w, 40).await?;
    wait_caught_up(&client, &mut engine, &env, Duration::from_secs(60)).await?;
    assert_converges(&env, Duration::from_secs(10), "ICU database, C column").await?;
    terminate(&mut engine, Duration::from_secs(10))?;
    Ok(())
}
