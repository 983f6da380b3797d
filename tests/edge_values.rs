//! Values at the edges, inserted, updated and deleted while the engine streams, each step
//! compared with PostgreSQL's own evaluation of every seed view: NULLs in every nullable
//! column, NaN and +/-Infinity in double precision (sums and percentiles across them, and
//! retracted again), numeric at the limits of numeric(12,4), timestamps around a daylight-saving
//! change and far in the past and future, very long text, and one group with many distinct
//! values. A timestamp beyond what deltamv represents fails exactly the views reading it.

mod support;

use std::path::Path;
use std::time::Duration;

use anyhow::{ensure, Result};
use support::engine::{
    assert_converges, assert_converges_except, terminate, wait_caught_up, Fixture,
};

/// The day after the 2026 spring-forward in America/Chicago.
const NOW: &str = "2026-03-09T12:00:00Z";

const AGENT: &str = "'00000000-0000-0000-0000-0000000000a1'";
const WORKSPACE: &str = "'00000000-0000-0000-0000-0000000000b1'";

fn insert_runs(values: &[(&str, &str, &str, &str, &str)]) -> String {
    let rows: Vec<String> = values
        .iter()
        .map(|(user, status, started, runtime, credits)| {
            format!(
                "({AGENT}, {WORKSPACE}, {user}, {status}, {started}, {runtime}, {credits}, NULL)"
            )
        })
        .collect();
    format!(
        "INSERT INTO public.agent_runs (agent_id, workspace_id, user_id, status, started_at, runtime_seconds, credits_consumed, error_code) VALUES {};",
        rows.join(", ")
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn edge_values_are_maintained_exactly() -> Result<()> {
    let fx = Fixture::start(
        Some("America/Chicago"),
        Path::new("schema/views"),
        Some(NOW),
    )
    .await?;
    let (client, env) = (&fx.client, &fx.env);
    let user = "'00000000-0000-0000-0000-0000000000c1'";
    let (code, _, err) = env.run_cmd(&["init"])?;
    ensure!(code == 0, "init failed: {err}");
    let mut engine = env.spawn_run()?;

    let steps: Vec<(&str, String)> = vec![
        // ±1e150, not ±1e308: PostgreSQL's AVG(float8) also sums squares and fails with
        // "value out of range: overflow" beyond about 1e154, which deltamv does not reproduce
        // (it would show an average where REFRESH fails).
        (
            "NaN, infinities and extremes of double precision",
            insert_runs(&[
                (user, "'completed'", "'2026-03-08 01:59:59 America/Chicago'", "'NaN'", "1"),
                (user, "'completed'", "'2026-03-08 03:00:00 America/Chicago'", "'Infinity'", "2"),
                (user, "'failed'", "'2026-03-08 03:00:01 America/Chicago'", "'-Infinity'", "3"),
                (user, "'completed'", "'2026-03-08 12:00:00 America/Chicago'", "1e150", "4"),
                (user, "'completed'", "'2026-03-08 12:00:01 America/Chicago'", "-1e150", "5"),
                (user, "'completed'", "'2026-03-08 12:00:02 America/Chicago'", "5e-324", "6"),
                (user, "'running'", "'2026-03-08 12:00:03 America/Chicago'", "NULL", "NULL"),
            ]),
        ),
        (
            "numeric at the limits of numeric(12,4)",
            insert_runs(&[
                (user, "'completed'", "'2026-03-07 23:00:00 America/Chicago'", "1", "99999999.9999"),
                (user, "'completed'", "'2026-03-07 23:00:01 America/Chicago'", "1", "99999999.9999"),
                (user, "'completed'", "'2026-03-07 23:00:02 America/Chicago'", "1", "-99999999.9999"),
                (user, "'completed'", "'2026-03-07 23:00:03 America/Chicago'", "1", "0.0001"),
            ]),
        ),
        (
            "timestamps far in the past and future",
            insert_runs(&[
                (user, "'completed'", "'4713-01-01 00:00:00+00 BC'", "1", "1"),
                (user, "'completed'", "'0001-01-01 00:00:00+00'", "1", "1"),
                (user, "'completed'", "'9999-12-31 23:59:59.999999+00'", "2", "1"),
                (user, "'completed'", "'294247-01-01 00:00:00+00'", "3", "1"),
            ]),
        ),
        (
            "very long text and many distinct values in one group",
            format!(
                "INSERT INTO public.agent_runs (agent_id, workspace_id, user_id, status, started_at, runtime_seconds, credits_consumed, error_code)
                 SELECT {AGENT}, {WORKSPACE}, md5(g::text)::uuid, 'failed', '2026-03-09 08:00:00+00', g, g, repeat('x', 100000)
                   FROM generate_series(1, 3000) g;
                 INSERT INTO analytics.user_activity (workspace_id, user_id, activity_type, created_at)
                 SELECT {WORKSPACE}, md5(g::text)::uuid, repeat('y', 50000), '2026-03-08 02:30:00+00'::timestamptz + g * interval '1 second'
                   FROM generate_series(1, 3000) g;"
            ),
        ),
        (
            "the infinities retracted",
            "DELETE FROM public.agent_runs WHERE runtime_seconds = '-Infinity';
             UPDATE public.agent_runs SET runtime_seconds = 7 WHERE runtime_seconds = 'NaN';"
                .to_string(),
        ),
        (
            "extremes updated to NULL",
            "UPDATE public.agent_runs SET runtime_seconds = NULL, credits_consumed = NULL
              WHERE runtime_seconds IN (1e150, -1e150, 'Infinity');"
                .to_string(),
        ),
        (
            "everything of the group deleted",
            format!("DELETE FROM public.agent_runs WHERE agent_id = {AGENT};"),
        ),
    ];
    for (what, sql) in steps {
        client.batch_execute(&sql).await?;
        wait_caught_up(client, &mut engine, env, Duration::from_secs(60)).await?;
        assert_converges(env, Duration::from_secs(10), what).await?;
    }

    // PostgreSQL's timestamps reach 294276 AD; deltamv's end in 294247 (microseconds since
    // 1970 in 64 bits). Such a value fails exactly the views reading its column, by name.
    client
        .batch_execute(&insert_runs(&[(
            user,
            "'completed'",
            "'294276-12-31 23:59:59+00'",
            "1",
            "1",
        )]))
        .await?;
    client
        .batch_execute(
            "INSERT INTO analytics.user_activity (workspace_id, user_id, activity_type, created_at)
             VALUES (gen_random_uuid(), gen_random_uuid(), 'login', '2026-03-09 10:00:00+00')",
        )
        .await?;
    wait_caught_up(client, &mut engine, env, Duration::from_secs(60)).await?;
    let failed: Vec<(String, String)> = client
        .query(
            "SELECT view_name, coalesce(last_error, '') FROM deltamv.views WHERE state = 'failed' ORDER BY 1",
            &[],
        )
        .await?
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    let readers = [
        "analytics.mv_agent_performance",
        "analytics.mv_error_summary",
        "analytics.mv_top_agents",
        "analytics.mv_workspace_metrics",
    ];
    ensure!(
        failed.len() == readers.len()
            && failed
                .iter()
                .zip(readers)
                .all(|((name, why), reader)| name == reader
                    && why.contains("started_at")
                    && why.contains("294276")),
        "exactly the views reading started_at should fail, naming the column and value: {failed:?}"
    );
    assert_converges_except(
        env,
        Duration::from_secs(10),
        "after an unreadable value",
        &readers,
    )
    .await?;
    terminate(&mut engine, Duration::from_secs(10))?;
    Ok(())
}
