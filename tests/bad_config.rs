//! Bad configuration gets a one-line diagnosis that names the fix, before anything is created:
//! an unreachable server, wal_level not logical, a missing database, a wrong password, a role
//! without REPLICATION, a views directory with a syntax error, and no free replication slot.
//! The right password over SCRAM-SHA-256 works.

mod support;

use std::path::Path;

use anyhow::{ensure, Result};
use support::engine::{free_local_addr, EngineEnv};
use support::{ClusterOptions, PgCluster};

/// Runs `deltamv init` against `url` (and `views`), expecting exit code 2 and, as the last line
/// of stderr, one `error:` line containing every part of `expect`.
fn diagnosis(url: &str, views: &Path, extra: &[&str], expect: &[&str]) -> Result<()> {
    let env = EngineEnv::new(url, views)?;
    let mut args = extra.to_vec();
    args.push("init");
    let (code, _, err) = env.run_cmd(&args)?;
    let last = err.trim_end().lines().last().unwrap_or("");
    ensure!(
        code == 2 && last.starts_with("error: "),
        "expected exit 2 with a final error line, got {code}: {err}"
    );
    for part in expect {
        ensure!(
            last.contains(part),
            "the diagnosis should say {part:?}: {last}"
        );
    }
    Ok(())
}

fn url(cluster: &PgCluster, user: &str, db: &str) -> String {
    format!("postgresql://{user}@127.0.0.1:{}/{db}", cluster.port())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_configuration_gets_a_one_line_diagnosis() -> Result<()> {
    let views = Path::new("schema/views");
    let (port, _) = free_local_addr()?;
    diagnosis(
        &format!("postgresql://postgres@127.0.0.1:{port}/app"),
        views,
        &[],
        &[
            "cannot connect",
            "accepting TCP connections",
            "DATABASE_URL",
        ],
    )?;

    let replica = PgCluster::start(ClusterOptions::default().conf("wal_level", "replica"))?;
    diagnosis(
        &url(&replica, "postgres", "postgres"),
        views,
        &[],
        &["wal_level is 'replica'", "wal_level = logical"],
    )?;
    drop(replica);

    let cluster = PgCluster::start(ClusterOptions::default().conf("max_replication_slots", "2"))?;
    let app = cluster.create_database("app")?;
    let client = support::connect(&app).await?;
    client
        .batch_execute(&std::fs::read_to_string("schema/sources.sql")?)
        .await?;
    client
        .batch_execute(
            "CREATE ROLE pw LOGIN SUPERUSER PASSWORD 'right';
             CREATE ROLE plain LOGIN;",
        )
        .await?;
    // Password authentication (SCRAM-SHA-256) for `pw` only, ahead of the harness's trust lines.
    cluster.prepend_hba(
        "host all pw 127.0.0.1/32 scram-sha-256\nhost replication pw 127.0.0.1/32 scram-sha-256",
    )?;
    client.batch_execute("SELECT pg_reload_conf()").await?;

    diagnosis(
        &url(&cluster, "postgres", "nosuchdb"),
        views,
        &[],
        &["database nosuchdb does not exist"],
    )?;
    diagnosis(
        &url(&cluster, "pw:wrong", "app"),
        views,
        &[],
        &["wrong password for user pw"],
    )?;
    let err = EngineEnv::new(&url(&cluster, "pw:wrong", "app"), views)?.run_cmd(&["init"])?;
    ensure!(
        !err.2.contains("wrong@"),
        "the password must not be printed"
    );
    diagnosis(
        &url(&cluster, "plain", "app"),
        views,
        &[],
        &["role plain", "ALTER ROLE plain REPLICATION"],
    )?;
    let broken = tempfile::tempdir()?;
    std::fs::write(
        broken.path().join("broken.sql"),
        "CREATE MATERIALIZED VIEW analytics.broken AS SELEC workspace_id FROM public.agent_runs;",
    )?;
    diagnosis(
        &url(&cluster, "postgres", "app"),
        broken.path(),
        &[],
        &["broken.sql"],
    )?;

    // The right password over SCRAM: init works (its slot is one of the two).
    let env = EngineEnv::new(&url(&cluster, "pw:right", "app"), views)?;
    let (code, out, err) = env.run_cmd(&["init"])?;
    ensure!(code == 0, "init with the right password failed: {out}{err}");
    // The other slot taken: a second slot cannot be created.
    client
        .batch_execute("SELECT pg_create_physical_replication_slot('filler')")
        .await?;
    diagnosis(
        &url(&cluster, "postgres", "app"),
        views,
        &["--slot", "other"],
        &[
            "all 2 replication slots are in use",
            "max_replication_slots",
        ],
    )?;
    Ok(())
}
