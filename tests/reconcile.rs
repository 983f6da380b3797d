//! `deltamv reconcile`: no difference for a correct engine; exactly the tampered rows after a
//! target is changed behind the engine's back (exit 1, rows printed); `--repair` fixes them in one
//! transaction and the engine stays exact afterwards.

mod support;

use std::path::Path;
use std::time::Duration;

use anyhow::Result;
use support::engine::{
    assert_converges, micros, open_write_transaction, run_txns, seed_rows, terminate,
    wait_caught_up, wait_for, Fixture,
};
use support::workload::Workload;

const NOW: &str = "2026-06-15T09:00:00Z";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconcile_finds_exactly_the_tampered_rows_and_repairs_them() -> Result<()> {
    let Fixture {
        cluster: _cluster,
        client,
        env,
        ..
    } = Fixture::start(Some("Asia/Kolkata"), Path::new("schema/views"), Some(NOW)).await?;
    let mut w = Workload::new(5, micros(NOW));
    seed_rows(&client, &mut w, 600).await?;
    let mut engine = env.spawn_run()?;
    run_txns(&client, &mut w, 60).await?;
    wait_caught_up(&client, &mut engine, &env, Duration::from_secs(60)).await?;
    let (code, out, err) = env.run_cmd(&["reconcile"])?;
    assert_eq!(code, 0, "a correct engine reconciles clean:\n{out}\n{err}");
    assert!(out.contains("0 differing"), "{out}");

    // Tamper with one row of each view, behind the engine's back.
    let ws: String = client
        .query_one(
            "SELECT workspace_id::text FROM analytics.mv_workspace_metrics ORDER BY 1 LIMIT 1",
            &[],
        )
        .await?
        .get(0);
    client
        .batch_execute(&format!(
            "UPDATE analytics.mv_workspace_metrics SET total_users = total_users + 1 WHERE workspace_id = '{ws}';
             DELETE FROM analytics.mv_active_users WHERE ctid = (SELECT min(ctid) FROM analytics.mv_active_users);
             INSERT INTO analytics.mv_agent_performance (agent_id, workspace_id, run_date, total_runs)
             VALUES ('99999999-9999-4999-a999-999999999999', '{ws}', '2026-06-14', 42);"
        ))
        .await?;
    let (code, out, _) = env.run_cmd(&["reconcile"])?;
    assert_eq!(code, 1, "differences make reconcile exit 1:\n{out}");
    for view in [
        "mv_workspace_metrics",
        "mv_active_users",
        "mv_agent_performance",
    ] {
        let line = out
            .lines()
            .find(|l| l.starts_with(&format!("analytics.{view}:")))
            .unwrap_or_default();
        assert!(
            line.ends_with(" 1 differing"),
            "exactly one row of {view} differs:\n{out}"
        );
    }
    assert!(
        out.contains(&ws) && out.contains("99999999-9999-4999-a999-999999999999"),
        "the rows are printed:\n{out}"
    );
    let (code, out, err) =
        env.run_cmd(&["reconcile", "--view", "analytics.mv_workspace_metrics"])?;
    assert_eq!(code, 1, "{out}{err}");
    assert_eq!(
        out.lines().filter(|l| l.starts_with("analytics.")).count(),
        1,
        "--view limits the check:\n{out}"
    );

    let (code, out, err) = env.run_cmd(&["reconcile", "--repair"])?;
    assert_eq!(code, 0, "repair succeeds:\n{out}\n{err}");
    assert!(out.contains("repaired 1 rows"), "{out}");
    let (code, out, _) = env.run_cmd(&["reconcile"])?;
    assert_eq!(code, 0, "clean after repair:\n{out}");

    // The engine keeps the repaired targets exact under more writes.
    run_txns(&client, &mut w, 60).await?;
    wait_caught_up(&client, &mut engine, &env, Duration::from_secs(60)).await?;
    assert_converges(
        &env,
        Duration::from_secs(10),
        "after repair and more writes",
    )
    .await?;
    terminate(&mut engine, Duration::from_secs(10))?;
    Ok(())
}

/// Every row of a view differs from its recomputation by PostgreSQL's equality, yet all but two
/// within the float tolerance: the comparison streams those rows key by key and reports exactly
/// the two, as it would holding them all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rows_within_the_float_tolerance_are_matched_key_by_key() -> Result<()> {
    let Fixture {
        cluster: _cluster,
        client,
        env,
        ..
    } = Fixture::start(None, Path::new("schema/views"), Some(NOW)).await?;
    let mut w = Workload::new(5, micros(NOW));
    seed_rows(&client, &mut w, 600).await?;
    let mut engine = env.spawn_run()?;
    run_txns(&client, &mut w, 40).await?;
    wait_caught_up(&client, &mut engine, &env, Duration::from_secs(60)).await?;
    terminate(&mut engine, Duration::from_secs(10))?;

    let perf = "analytics.mv_agent_performance";
    let nudged = client
        .execute(
            &format!("UPDATE {perf} SET median_runtime = median_runtime * (1 + 1e-12) WHERE median_runtime <> 0"),
            &[],
        )
        .await?;
    assert!(nudged > 20, "enough keys to stream: {nudged}");
    let far: Vec<String> = client
        .query(
            &format!(
                "UPDATE {perf} SET p95_runtime = p95_runtime + 1
                  WHERE (agent_id, run_date) IN (
                        (SELECT agent_id, run_date FROM {perf} ORDER BY 1, 2 LIMIT 1)
                        UNION ALL (SELECT agent_id, run_date FROM {perf} ORDER BY 1 DESC, 2 DESC LIMIT 1))
                 RETURNING agent_id::text"
            ),
            &[],
        )
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(far.len(), 2);

    let (code, out, err) = env.run_cmd(&["reconcile", "--view", perf])?;
    assert_eq!(code, 1, "{out}{err}");
    let line = out
        .lines()
        .find(|l| l.starts_with(&format!("{perf}:")))
        .unwrap_or_default();
    assert!(
        line.ends_with(" 2 differing"),
        "exactly the two rows:\n{out}"
    );
    for agent in &far {
        assert!(out.contains(agent.as_str()), "{agent} is printed:\n{out}");
    }
    let (code, out, err) = env.run_cmd(&["reconcile", "--view", "analytics.mv_top_agents"])?;
    assert_eq!(code, 0, "the other views are untouched:\n{out}{err}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refresh_recomputes_and_records_history() -> Result<()> {
    let Fixture {
        cluster: _cluster,
        client,
        env,
        ..
    } = Fixture::start(None, Path::new("schema/views"), Some(NOW)).await?;
    let mut w = Workload::new(9, micros(NOW));
    seed_rows(&client, &mut w, 300).await?;
    let (code, _, err) = env.run_cmd(&["init"])?;
    assert_eq!(code, 0, "{err}");
    client.batch_execute("DELETE FROM analytics.mv_active_users WHERE ctid IN (SELECT ctid FROM analytics.mv_active_users LIMIT 2)").await?;
    let (code, _, err) = env.run_cmd(&["refresh"])?;
    assert_ne!(code, 0, "refresh needs --view or --all");
    assert!(err.contains("--view NAME or --all"), "{err}");
    let (code, out, err) = env.run_cmd(&["refresh", "--view", "analytics.mv_active_users"])?;
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("analytics.mv_active_users: recomputed") && out.contains("2 rows changed"),
        "{out}"
    );
    let views = std::fs::read_dir("schema/views")?.count();
    let (code, out, err) = env.run_cmd(&["refresh", "--all"])?;
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(
        out.matches(" 0 rows changed").count(),
        views,
        "all views, nothing left to change:\n{out}"
    );
    let kinds: Vec<(String, String)> = client
        .query(
            "SELECT view_name, kind FROM deltamv.refresh_history ORDER BY id",
            &[],
        )
        .await?
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    assert_eq!(
        kinds.iter().filter(|(_, k)| k == "initial load").count(),
        views,
        "{kinds:?}"
    );
    assert_eq!(
        kinds.iter().filter(|(_, k)| k == "full recompute").count(),
        views + 1,
        "{kinds:?}"
    );
    let (_, status, _) = env.run_cmd(&["status"])?;
    assert!(
        status.contains("full recompute"),
        "status shows the last refresh:\n{status}"
    );
    Ok(())
}

/// A change the engine never saw (written while its table was out of the publication) leaves
/// its state wrong, not only a target. A reconcile through the running engine says so, and
/// `--repair` does not patch the target alone (state and target would disagree); `init
/// --resync` is the fix it names, and after it the view is exact again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_state_is_reported_and_left_for_resync() -> Result<()> {
    let Fixture {
        cluster: _cluster,
        client,
        env,
        ..
    } = Fixture::start(None, Path::new("schema/views"), Some(NOW)).await?;
    let mut w = Workload::new(11, micros(NOW));
    seed_rows(&client, &mut w, 300).await?;
    let mut engine = env.spawn_run()?;
    wait_caught_up(&client, &mut engine, &env, Duration::from_secs(60)).await?;
    // Each statement its own transaction (a multi-statement simple query is one).
    for sql in [
        "ALTER PUBLICATION deltamv_pub DROP TABLE public.agent_runs",
        "CREATE TEMP TABLE hidden AS SELECT * FROM public.agent_runs ORDER BY id LIMIT 1",
        "UPDATE hidden SET id = id + 100000000, started_at = TIMESTAMPTZ '2026-06-14 10:00+00'",
        "INSERT INTO public.agent_runs SELECT * FROM hidden",
        "ALTER PUBLICATION deltamv_pub ADD TABLE public.agent_runs",
    ] {
        client.batch_execute(sql).await?;
    }
    run_txns(&client, &mut w, 10).await?;
    wait_caught_up(&client, &mut engine, &env, Duration::from_secs(60)).await?;

    let (code, out, err) = env.run_cmd(&[
        "reconcile",
        "--repair",
        "--view",
        "analytics.mv_workspace_metrics",
    ])?;
    assert_eq!(code, 1, "a wrong state is not repaired:\n{out}\n{err}");
    assert!(
        out.contains(" 1 differing") && out.contains("state differs too, in 1 rows"),
        "the result names the state:\n{out}"
    );
    assert!(out.contains("deltamv init --resync"), "and the fix:\n{out}");
    assert!(!out.contains("repaired"), "{out}");
    assert!(
        err.contains("through the running engine"),
        "it went through the engine:\n{err}"
    );
    let log = env.engine_log();
    assert!(
        log.lines().any(|l| l.contains("ERROR")
            && l.contains("found rows that differ")
            && l.contains("state_differing=1")),
        "an error-level log line names the rows:\n{}",
        support::engine::tail(&log, 20)
    );

    terminate(&mut engine, Duration::from_secs(10))?;
    let (code, _, err) = env.run_cmd(&["init", "--resync"])?;
    assert_eq!(code, 0, "{err}");
    let mut engine = env.spawn_run()?;
    wait_caught_up(&client, &mut engine, &env, Duration::from_secs(60)).await?;
    let (code, out, err) = env.run_cmd(&["reconcile"])?;
    assert_eq!(code, 0, "exact after the resync:\n{out}\n{err}");
    terminate(&mut engine, Duration::from_secs(10))?;
    Ok(())
}

/// `init --resync` over targets that were changed behind the engine's back rewrites exactly the
/// rows that differ from its fresh state, a number printed differently included (1.2345 and
/// 1.234500000 are equal, but a reader sees two texts), and leaves every other row as it was:
/// the refill is a difference, not a delete and copy of everything. Compared in the engine (a
/// target that fits in `--resync-memory-mb`), any column type compares, and values whose text
/// PostgreSQL and Rust could print apart (floats, reals, escaped text, timestamps, an enum)
/// are told unchanged; compared in PostgreSQL (`--resync-memory-mb 0`), a target with a column
/// type that comparison does not know (the enum) is refilled whole, as exactly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resync_rewrites_only_the_target_rows_that_differ() -> Result<()> {
    let views = support::engine::seed_views_with("")?;
    std::fs::write(
        views.path().join("mv_moods.sql"),
        "CREATE MATERIALIZED VIEW analytics.mv_moods AS
         SELECT mood, count(*) AS notes, sum(n) AS total, max(f) AS top, min(f) AS bottom,
                min(t) AS first_text, max(ts) AS last_at, max(r) AS top_real
           FROM public.notes GROUP BY mood;
         CREATE UNIQUE INDEX idx_mv_moods ON analytics.mv_moods (mood);",
    )?;
    let Fixture {
        cluster: _cluster,
        client,
        env,
        ..
    } = Fixture::start(None, views.path(), Some(NOW)).await?;
    client
        .batch_execute(
            "CREATE TYPE public.mood AS ENUM ('calm', 'busy', 'late');
             CREATE TABLE public.notes (id int PRIMARY KEY, mood public.mood, n int, f float8,
               t text, ts timestamptz, r real);
             INSERT INTO public.notes SELECT g, (ARRAY['calm', 'busy', 'late'])[g % 3 + 1]::public.mood, g,
                 (ARRAY[1234, 1e20, 1.5e-7])[g % 3 + 1]::float8 * (CASE WHEN g < 4 THEN -1 ELSE 1 END),
                 (ARRAY[E'tab\there', E'back\\\\slash', E'bs\\b ff\\f vt\\x0b nl\\n'])[g % 3 + 1] || g,
                 timestamptz '2026-06-14 10:30:00.5+02' + g * interval '1 hour',
                 0.1 * (g % 3 + 1)
               FROM generate_series(1, 30) g;",
        )
        .await?;
    let mut w = Workload::new(13, micros(NOW));
    seed_rows(&client, &mut w, 400).await?;
    let mut engine = env.spawn_run()?;
    wait_caught_up(&client, &mut engine, &env, Duration::from_secs(60)).await?;
    terminate(&mut engine, Duration::from_secs(10))?;

    let text_of = |sql: &'static str| {
        let client = &client;
        async move { Ok::<String, anyhow::Error>(client.query_one(sql, &[]).await?.get(0)) }
    };
    const PERF_ROW: &str = "SELECT t::text FROM analytics.mv_agent_performance t
         WHERE total_credits IS NOT NULL ORDER BY agent_id, run_date LIMIT 1";
    let perf_before = text_of(PERF_ROW).await?;
    let moods: i64 = client
        .query_one("SELECT count(*) FROM analytics.mv_moods", &[])
        .await?
        .get(0);
    assert_eq!(moods, 3, "the enum view has rows to refill");

    for (memory_mb, moods_written, moods_changed) in [("256", 1, 2), ("0", moods, 2 * moods)] {
        client
            .batch_execute(
                "UPDATE analytics.mv_workspace_metrics SET total_users = total_users + 1
                   WHERE workspace_id = (SELECT workspace_id FROM analytics.mv_workspace_metrics ORDER BY 1 LIMIT 1);
                 DELETE FROM analytics.mv_active_users WHERE ctid = (SELECT min(ctid) FROM analytics.mv_active_users);
                 INSERT INTO analytics.mv_agent_performance (agent_id, workspace_id, run_date, total_runs)
                   VALUES ('99999999-9999-4999-a999-999999999999', '99999999-9999-4999-a999-999999999999', '2026-06-14', 42);
                 UPDATE analytics.mv_agent_performance SET total_credits = total_credits + 0.00000
                   WHERE (agent_id, run_date) = (SELECT agent_id, run_date FROM analytics.mv_agent_performance
                     WHERE total_credits IS NOT NULL ORDER BY agent_id, run_date LIMIT 1);
                 UPDATE analytics.mv_moods SET total = total + 1 WHERE mood = 'busy';",
            )
            .await?;
        assert_ne!(
            text_of(PERF_ROW).await?,
            perf_before,
            "the tamper changed the text"
        );

        let (code, _, err) = env.run_cmd(&["init", "--resync", "--resync-memory-mb", memory_mb])?;
        assert_eq!(code, 0, "{err}");
        assert_eq!(
            text_of(PERF_ROW).await?,
            perf_before,
            "the state's text is back"
        );
        let (code, out, err) = env.run_cmd(&["reconcile"])?;
        assert_eq!(code, 0, "exact after the resync:\n{out}\n{err}");

        // Rows the resync's transaction wrote carry its transaction id, as does the progress row
        // it updated; the history records the rows deleted plus the rows inserted.
        for (view, written, changed) in [
            ("mv_workspace_metrics", 1, 2),
            ("mv_active_users", 1, 1),
            ("mv_agent_performance", 1, 3),
            ("mv_top_agents", 0, 0),
            ("mv_error_summary", 0, 0),
            ("mv_moods", moods_written, moods_changed),
        ] {
            let row = client
                .query_one(
                    &format!(
                        "SELECT (SELECT count(*) FROM analytics.{view} t, deltamv.progress p WHERE t.xmin = p.xmin),
                                (SELECT rows_changed FROM deltamv.refresh_history
                                  WHERE view_name = 'analytics.{view}' AND kind = 'initial load' ORDER BY id DESC LIMIT 1)"
                    ),
                    &[],
                )
                .await?;
            let (got_written, got_changed): (i64, Option<i64>) = (row.get(0), row.get(1));
            assert_eq!(
                (got_written, got_changed),
                (written, Some(changed)),
                "{view}, compared with {memory_mb} MB: rows written by the resync, and rows changed in its history"
            );
        }
    }
    Ok(())
}

/// A request interrupted by a crash is served after the restart (the slot was not acknowledged
/// past its message), exactly once: killed while the engine's targets' snapshot is exported for
/// a live reconcile, while the live comparison runs, and while the engine holds at the LSN of
/// the held reconcile that a differing target leads to.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_interrupted_while_its_snapshot_is_exported_is_served_after_the_restart(
) -> Result<()> {
    interrupted_request_is_served_once("reconcile_exported", false).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_interrupted_while_comparing_is_served_after_the_restart() -> Result<()> {
    interrupted_request_is_served_once("reconcile_comparing", false).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_interrupted_while_held_is_served_after_the_restart() -> Result<()> {
    interrupted_request_is_served_once("reconcile_held", true).await
}

/// Kills the engine at `failpoint` while it serves a repairing reconcile of mv_active_users
/// (with one of its target rows changed behind its back when `tamper`), restarts it, and checks
/// the request is served once, and the views exact. The reconcile first waits for a write
/// transaction open since before it, while the engine applies and checkpoints other writes:
/// the slot must not be acknowledged past the request meanwhile.
async fn interrupted_request_is_served_once(failpoint: &str, tamper: bool) -> Result<()> {
    let Fixture {
        cluster: _cluster,
        client,
        env,
        url,
    } = Fixture::start(None, Path::new("schema/views"), Some(NOW)).await?;
    let mut w = Workload::new(12, micros(NOW));
    seed_rows(&client, &mut w, 300).await?;
    let mut engine = env.spawn(&["run"], &[("DELTAMV_FAILPOINT", failpoint)])?;
    wait_caught_up(&client, &mut engine, &env, Duration::from_secs(60)).await?;
    run_txns(&client, &mut w, 20).await?;
    let open = open_write_transaction(&url).await?;
    let id: uuid::Uuid = client
        .query_one(
            "SELECT request_id FROM deltamv.reconcile_view('analytics.mv_active_users', repair => true)",
            &[],
        )
        .await?
        .get(0);
    // The engine applies and acknowledges what it can while the reconcile waits for `open`.
    for _ in 0..6 {
        run_txns(&client, &mut w, 3).await?;
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    anyhow::ensure!(
        engine.try_wait()?.is_none(),
        "the reconcile did not wait for the open transaction"
    );
    // After the writes above, which could rewrite the row.
    if tamper {
        let changed = client
            .execute(
                "UPDATE analytics.mv_active_users SET daily_active_users = daily_active_users + 5
                  WHERE ctid = (SELECT ctid FROM analytics.mv_active_users LIMIT 1)",
                &[],
            )
            .await?;
        anyhow::ensure!(changed == 1, "a target row to change");
    }
    open.batch_execute("COMMIT").await?;
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while engine.try_wait()?.is_none() {
        anyhow::ensure!(
            std::time::Instant::now() < deadline,
            "the failpoint was not reached"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    run_txns(&client, &mut w, 20).await?;
    let mut engine = env.spawn_run()?;
    let (status, claims) = wait_for(
        &mut engine,
        &env,
        Duration::from_secs(60),
        "the interrupted request was not served again",
        async || {
            let row = client
                .query_opt(
                    "SELECT status, phase FROM deltamv.requests WHERE request_id = $1 AND finished_at IS NOT NULL",
                    &[&id],
                )
                .await?;
            Ok(row.map(|r| (r.get::<_, String>(0), r.get::<_, Option<String>>(1))))
        },
    )
    .await?;
    let detail: serde_json::Value = client
        .query_one(
            "SELECT detail FROM deltamv.requests WHERE request_id = $1",
            &[&id],
        )
        .await?
        .get(0);
    assert_eq!(
        status,
        "done",
        "phase {claims:?}, detail {detail}\n{}",
        support::engine::tail(&env.engine_log(), 40)
    );
    // The engine logs a request after recording it: count once the stream is caught up, which
    // is after the line was written.
    wait_caught_up(&client, &mut engine, &env, Duration::from_secs(60)).await?;
    let served = env
        .engine_log()
        .matches(&format!("id={id} status="))
        .count();
    assert_eq!(served, 1, "served once after the restart");
    assert_converges(
        &env,
        Duration::from_secs(10),
        "after the interrupted request",
    )
    .await?;
    terminate(&mut engine, Duration::from_secs(10))?;
    Ok(())
}

/// A reconcile's snapshot waits for write transactions open since before it: the wait is
/// bounded, the request fails naming the transaction, and the engine goes on; once the
/// transaction ends a reconcile succeeds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reconcile_waits_only_so_long_for_an_open_write_transaction() -> Result<()> {
    let Fixture {
        cluster: _cluster,
        client,
        env,
        url,
        ..
    } = Fixture::start(None, Path::new("schema/views"), Some(NOW)).await?;
    let mut w = Workload::new(13, micros(NOW));
    seed_rows(&client, &mut w, 300).await?;
    let mut engine = env.spawn(&["run"], &[("DELTAMV_RECONCILE_WAIT_MS", "2000")])?;
    wait_caught_up(&client, &mut engine, &env, Duration::from_secs(60)).await?;
    let open = open_write_transaction(&url).await?;
    let (code, out, err) = env.run_cmd(&["reconcile"])?;
    assert_ne!(code, 0, "the reconcile gives up:\n{out}\n{err}");
    assert!(
        err.contains("waited 2000 ms for write transactions") && err.contains("open for"),
        "and names the transaction it waited for:\n{err}"
    );
    // The engine went on meanwhile.
    run_txns(&client, &mut w, 10).await?;
    wait_caught_up(&client, &mut engine, &env, Duration::from_secs(60)).await?;
    open.batch_execute("COMMIT").await?;
    let (code, out, err) = env.run_cmd(&["reconcile"])?;
    assert_eq!(code, 0, "once it ended:\n{out}\n{err}");
    assert_converges(&env, Duration::from_secs(10), "after the refused reconcile").await?;
    terminate(&mut engine, Duration::from_secs(10))?;
    Ok(())
}
