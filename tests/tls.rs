//! The engine over TLS with `sslmode=verify-full` and SCRAM-SHA-256, against a server that
//! refuses the role without TLS: both the SQL connections and the replication stream are
//! encrypted (checked in `pg_stat_ssl`), a certificate from another CA is refused, and
//! half-verified modes are refused with the fix.

mod support;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use anyhow::{ensure, Context, Result};
use support::engine::{
    assert_converges, micros, run_txns, seed_rows, terminate, wait_caught_up, EngineEnv,
};
use support::workload::Workload;
use support::{ClusterOptions, PgCluster};

const NOW: &str = "2026-03-07T12:00:00Z";

fn openssl(dir: &Path, args: &[&str]) -> Result<()> {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .context("running openssl (apt-get install openssl)")?;
    ensure!(
        out.status.success(),
        "openssl {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

/// A CA (`<name>.pem`, `<name>.key`) in `dir`.
fn make_ca(dir: &Path, name: &str) -> Result<()> {
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-subj",
            &format!("/CN=deltamv test {name}"),
            "-keyout",
            &format!("{name}.key"),
            "-out",
            &format!("{name}.pem"),
        ],
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_full_with_scram_encrypts_every_connection() -> Result<()> {
    let cluster = PgCluster::start(ClusterOptions::default())?;
    let app = cluster.create_database("app")?;
    let admin = support::connect(&app).await?;
    admin
        .batch_execute(&std::fs::read_to_string("schema/sources.sql")?)
        .await?;
    admin
        .batch_execute("CREATE ROLE pw LOGIN SUPERUSER PASSWORD 'secret'")
        .await?;

    // A CA, and a server certificate it signed for 127.0.0.1, installed in the data directory.
    let certs = tempfile::tempdir()?;
    let dir = certs.path();
    make_ca(dir, "ca")?;
    make_ca(dir, "other")?;
    std::fs::write(
        dir.join("san.ext"),
        "subjectAltName=IP:127.0.0.1,DNS:localhost\n",
    )?;
    openssl(
        dir,
        &[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-subj",
            "/CN=127.0.0.1",
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
        ],
    )?;
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            "san.ext",
            "-out",
            "server.pem",
        ],
    )?;
    let data = cluster.data_dir();
    for file in ["server.pem", "server.key"] {
        let to = data.join(file);
        std::fs::copy(dir.join(file), &to)?;
        let meta = std::fs::metadata(data)?;
        use std::os::unix::fs::{MetadataExt, PermissionsExt};
        std::os::unix::fs::chown(&to, Some(meta.uid()), Some(meta.gid()))?;
        std::fs::set_permissions(&to, std::fs::Permissions::from_mode(0o600))?;
    }
    // `pw` only over TLS, with SCRAM; everyone else as the harness set it up.
    cluster.prepend_hba(
        "hostssl all pw 127.0.0.1/32 scram-sha-256\nhostssl replication pw 127.0.0.1/32 scram-sha-256\n\
         hostnossl all pw 127.0.0.1/32 reject\nhostnossl replication pw 127.0.0.1/32 reject",
    )?;
    for sql in [
        "ALTER SYSTEM SET ssl = on",
        "ALTER SYSTEM SET ssl_cert_file = 'server.pem'",
        "ALTER SYSTEM SET ssl_key_file = 'server.key'",
        "SELECT pg_reload_conf()",
    ] {
        admin.batch_execute(sql).await?;
    }

    let url = |ca: &str, mode: &str| {
        format!(
            "postgresql://pw:secret@127.0.0.1:{}/app?sslmode={mode}&sslrootcert={}",
            cluster.port(),
            dir.join(ca).display()
        )
    };
    let views = Path::new("schema/views");

    // Without TLS the role is refused: TLS is what lets it in below.
    let plain = EngineEnv::new(
        &format!("postgresql://pw:secret@127.0.0.1:{}/app", cluster.port()),
        views,
    )?;
    let (code, _, err) = plain.run_cmd(&["init"])?;
    ensure!(
        code == 2 && err.contains("no encryption"),
        "plain should be refused: {err}"
    );

    // A certificate from another CA is refused.
    let wrong = EngineEnv::new(&url("other.pem", "verify-full"), views)?;
    let (code, _, err) = wrong.run_cmd(&["init"])?;
    ensure!(
        code == 2 && err.to_lowercase().contains("certificate"),
        "a certificate from another CA should be refused: {err}"
    );
    // Half-verified modes are refused with the fix.
    let require = EngineEnv::new(&url("ca.pem", "require"), views)?;
    let (code, _, err) = require.run_cmd(&["init"])?;
    ensure!(
        code == 2 && err.contains("sslmode=verify-full"),
        "sslmode=require should be refused naming verify-full: {err}"
    );

    // verify-full with the right CA: init, stream, converge.
    let env = EngineEnv::new(&url("ca.pem", "verify-full"), views)?;
    env.set_clock(NOW)?;
    let mut w = Workload::new(401, micros(NOW));
    w.allow_truncate = false;
    seed_rows(&admin, &mut w, 200).await?;
    let (code, out, err) = env.run_cmd(&["init"])?;
    ensure!(code == 0, "init over TLS failed: {out}{err}");
    let mut engine = env.spawn_run()?;
    run_txns(&admin, &mut w, 30).await?;
    wait_caught_up(&admin, &mut engine, &env, Duration::from_secs(60)).await?;
    assert_converges(&env, Duration::from_secs(10), "over TLS").await?;
    let (sessions, encrypted, walsenders): (i64, i64, i64) = {
        let row = admin
            .query_one(
                "SELECT count(*), count(*) FILTER (WHERE s.ssl),
                        count(*) FILTER (WHERE a.backend_type = 'walsender')
                   FROM pg_stat_activity a JOIN pg_stat_ssl s USING (pid)
                  WHERE a.usename = 'pw'",
                &[],
            )
            .await?;
        (row.get(0), row.get(1), row.get(2))
    };
    ensure!(
        sessions >= 2 && encrypted == sessions && walsenders == 1,
        "every session of the engine should be encrypted, the walsender included: {encrypted} of {sessions}, {walsenders} walsender(s)"
    );
    terminate(&mut engine, Duration::from_secs(10))?;
    Ok(())
}
