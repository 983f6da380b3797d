//! Running the real `deltamv` binary against a throwaway cluster, and the oracle.
//!
//! The oracle is PostgreSQL itself: each view's SQL evaluated by the server (with CURRENT_DATE
//! replaced by the engine's injected date) compared with the target, row by row
//! ([`deltamv::reconcile::compare`]).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use deltamv::config::{Config, DEFAULT_BATCH_MAX_MS, DEFAULT_BATCH_MAX_ROWS};

use super::workload::Workload;
use super::{ClusterOptions, PgCluster};

pub const SLOT: &str = "deltamv";

/// Fold threads of every engine the tests start: more than the views of most tests and than
/// this machine's cores, so views fold concurrently everywhere.
pub const FOLD_THREADS: usize = 3;

/// A throwaway cluster (in `timezone`, else the harness's default) with database `app` holding
/// the source tables of `schema/sources.sql`, and a client connected to it. The cluster is
/// stopped when this (or the [`Fixture`] made from it) is dropped: keep it bound for as long as
/// the test uses the database.
pub struct Database {
    pub cluster: PgCluster,
    pub url: String,
    pub client: tokio_postgres::Client,
}

impl Database {
    pub async fn start(timezone: Option<&str>) -> Result<Database> {
        let opts = match timezone {
            Some(tz) => ClusterOptions::default().timezone(tz),
            None => ClusterOptions::default(),
        };
        let cluster = PgCluster::start(opts)?;
        let url = cluster.create_database("app")?;
        let client = super::connect(&url).await?;
        client
            .batch_execute(&std::fs::read_to_string("schema/sources.sql")?)
            .await?;
        Ok(Database {
            cluster,
            url,
            client,
        })
    }

    /// Adds an engine environment for `views`, its clock set to `now` (RFC 3339) when given.
    pub fn engine(self, views: &Path, now: Option<&str>) -> Result<Fixture> {
        let env = EngineEnv::new(&self.url, views)?;
        if let Some(now) = now {
            env.set_clock(now)?;
        }
        Ok(Fixture {
            cluster: self.cluster,
            url: self.url,
            client: self.client,
            env,
        })
    }
}

/// A [`Database`] and one engine environment on it. Bind `cluster` (e.g. to `_cluster`, not `_`)
/// so the server lives until the end of the test.
pub struct Fixture {
    pub cluster: PgCluster,
    pub url: String,
    pub client: tokio_postgres::Client,
    pub env: EngineEnv,
}

impl Fixture {
    /// [`Database::start`], then [`Database::engine`].
    pub async fn start(timezone: Option<&str>, views: &Path, now: Option<&str>) -> Result<Fixture> {
        Database::start(timezone).await?.engine(views, now)
    }
}

/// kill -9 of `engine` while another connection writes `n` transactions of a workload seeded
/// `seed` (without TRUNCATE), `after` into the writes; then a fresh `deltamv run`.
pub async fn crash_during_writes(
    env: &EngineEnv,
    engine: &mut EngineChild,
    url: &str,
    seed: u64,
    now_micros: i64,
    n: usize,
    after: Duration,
) -> Result<EngineChild> {
    let writer = tokio::spawn({
        let url = url.to_string();
        let mut w = Workload::new(seed, now_micros);
        w.allow_truncate = false;
        async move {
            let c = super::connect(&url).await?;
            run_txns(&c, &mut w, n).await
        }
    });
    tokio::time::sleep(after).await;
    kill9(engine);
    writer.await??;
    env.spawn_run()
}

/// A free port on 127.0.0.1 and its `host:port` address (for an engine's HTTP server).
pub fn free_local_addr() -> Result<(u16, String)> {
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    Ok((port, format!("127.0.0.1:{port}")))
}

/// A copy of `schema/views` in a temp dir, with `settings` as its `deltamv.toml`.
pub fn seed_views_with(settings: &str) -> Result<tempfile::TempDir> {
    let views = tempfile::tempdir()?;
    for entry in std::fs::read_dir("schema/views")? {
        let path = entry?.path();
        if let Some(name) = path.file_name() {
            std::fs::copy(&path, views.path().join(name))?;
        }
    }
    std::fs::write(views.path().join("deltamv.toml"), settings)?;
    Ok(views)
}

/// An RFC 3339 time in microseconds since 1970 (panics on a malformed literal).
pub fn micros(rfc3339: &str) -> i64 {
    chrono::DateTime::parse_from_rfc3339(rfc3339)
        .unwrap_or_else(|e| panic!("{rfc3339:?} is not an RFC 3339 time: {e}"))
        .timestamp_micros()
}

/// Runs `n` random transactions of the workload; the first failure (rolled back) is the error.
pub async fn run_txns(client: &tokio_postgres::Client, w: &mut Workload, n: usize) -> Result<()> {
    for _ in 0..n {
        let sql = w.transaction();
        if let Err(e) = client.batch_execute(&sql).await {
            let _ = client.batch_execute("ROLLBACK").await;
            return Err(e).with_context(|| format!("workload transaction failed:\n{sql}"));
        }
    }
    Ok(())
}

/// 300 seed rows of a workload seeded `seed` (without TRUNCATE, its clock at `now`, RFC 3339)
/// written through `client`, then `deltamv init` in `env`; returns the workload to go on with.
pub async fn seed_and_init(
    client: &tokio_postgres::Client,
    env: &EngineEnv,
    seed: u64,
    now: &str,
) -> Result<Workload> {
    let mut w = Workload::new(seed, micros(now));
    w.allow_truncate = false;
    seed_rows(client, &mut w, 300).await?;
    let (code, _, err) = env.run_cmd(&["init"])?;
    anyhow::ensure!(code == 0, "init failed: {err}");
    Ok(w)
}

/// Inserts the workload's initial data: `rows` rows in each source table.
pub async fn seed_rows(
    client: &tokio_postgres::Client,
    w: &mut Workload,
    rows: usize,
) -> Result<()> {
    for stmt in w.seed_rows(rows) {
        client.batch_execute(&stmt).await?;
    }
    Ok(())
}

/// One engine's environment: database, state directory, views and clock file.
#[derive(Clone)]
pub struct EngineEnv {
    pub url: String,
    pub state_dir: PathBuf,
    pub views_dir: PathBuf,
    pub clock_file: PathBuf,
    _dir: std::sync::Arc<tempfile::TempDir>,
}

impl EngineEnv {
    pub fn new(url: &str, views_dir: &Path) -> Result<EngineEnv> {
        let dir = tempfile::tempdir()?;
        let env = EngineEnv {
            url: url.to_string(),
            state_dir: dir.path().join("state"),
            views_dir: views_dir.to_path_buf(),
            clock_file: dir.path().join("clock"),
            _dir: std::sync::Arc::new(dir),
        };
        Ok(env)
    }

    /// Sets the engine's "now" (RFC 3339).
    pub fn set_clock(&self, rfc3339: &str) -> Result<()> {
        write_clock(&self.clock_file, rfc3339)
    }

    pub fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_deltamv"));
        c.args(args)
            .env("DATABASE_URL", &self.url)
            .env("DELTAMV_STATE_DIR", &self.state_dir)
            .env("DELTAMV_VIEWS", &self.views_dir)
            .env("DELTAMV_CLOCK_FILE", &self.clock_file)
            .env("DELTAMV_LOG", "info,tokio_postgres=warn")
            // Views fold concurrently in every test, whatever the machine's cores.
            .env("DELTAMV_FOLD_THREADS", FOLD_THREADS.to_string())
            // Tests run engines in parallel: each serves HTTP on a port of its own.
            .env("DELTAMV_HTTP", "127.0.0.1:0");
        c
    }

    /// Runs a command to completion; returns (exit code, stdout, stderr).
    pub fn run_cmd(&self, args: &[&str]) -> Result<(i32, String, String)> {
        let out = self.command(args).output().context("running deltamv")?;
        Ok((
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        ))
    }

    /// Starts `deltamv run` in the background, its log in the state dir's sibling.
    pub fn spawn_run(&self) -> Result<EngineChild> {
        self.spawn(&["run"], &[])
    }

    /// Starts a command in the background with extra environment, logging to the engine log.
    pub fn spawn(&self, args: &[&str], envs: &[(&str, &str)]) -> Result<EngineChild> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.state_dir.with_extension("log"))?;
        let child = self
            .command(args)
            .envs(envs.iter().copied())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .context("spawning deltamv run")?;
        Ok(EngineChild(child))
    }

    pub fn engine_log(&self) -> String {
        std::fs::read_to_string(self.state_dir.with_extension("log")).unwrap_or_default()
    }

    pub fn config(&self) -> Config {
        Config {
            database_url: self.url.clone(),
            state_dir: self.state_dir.clone(),
            views_dir: self.views_dir.clone(),
            slot: SLOT.into(),
            publication: deltamv::config::DEFAULT_PUBLICATION.into(),
            clock_file: Some(self.clock_file.clone()),
            batch_max_rows: DEFAULT_BATCH_MAX_ROWS,
            batch_max_ms: DEFAULT_BATCH_MAX_MS,
            checkpoint_ms: deltamv::config::DEFAULT_CHECKPOINT_MS,
            reconcile_wait_ms: deltamv::config::DEFAULT_RECONCILE_WAIT_MS,
            fold_threads: FOLD_THREADS,
            resync_memory_mb: deltamv::config::DEFAULT_RESYNC_MEMORY_MB,
        }
    }

    /// The engine's CURRENT_DATE as `yyyy-mm-dd` in the server's zone.
    pub fn today(&self, tz: &deltamv::pgtime::PgTimeZone) -> String {
        let clock = deltamv::clock::Clock::new(Some(self.clock_file.clone()));
        deltamv::pgtime::format_date(clock.today(tz))
    }
}

/// A background deltamv process, killed when dropped so a failing test leaves nothing running.
pub struct EngineChild(Child);

impl std::ops::Deref for EngineChild {
    type Target = Child;
    fn deref(&self) -> &Child {
        &self.0
    }
}

impl std::ops::DerefMut for EngineChild {
    fn deref_mut(&mut self) -> &mut Child {
        &mut self.0
    }
}

impl Drop for EngineChild {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Writes an engine's clock file (`DELTAMV_CLOCK_FILE`, one RFC 3339 time) whole, then renames
/// it into place: the engine never reads it half-written.
pub fn write_clock(file: &Path, rfc3339: &str) -> Result<()> {
    let tmp = file.with_extension("tmp");
    std::fs::write(&tmp, rfc3339)?;
    std::fs::rename(&tmp, file)?;
    Ok(())
}

/// kill -9.
pub fn kill9(child: &mut Child) {
    let _ = child.kill();
    let _ = child.wait();
}

/// SIGTERM, then waits up to `limit` for a clean exit; returns the exit code.
pub fn terminate(child: &mut Child, limit: Duration) -> Result<Option<i32>> {
    let _ = Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .status();
    let start = Instant::now();
    while start.elapsed() < limit {
        if let Some(status) = child.try_wait()? {
            return Ok(status.code());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    kill9(child);
    Ok(None)
}

/// Waits until the engine streams from its slot and the slot has confirmed the WAL insert
/// position current at the call (not `pg_current_wal_lsn()`, which lags behind commits when
/// synchronous_commit is off): everything written before is applied and durable, and a request
/// made now is served by the engine (right after its initial load the slot is already caught
/// up, but not yet held: a `deltamv reconcile` then ran offline against moving targets).
pub async fn wait_caught_up(
    client: &tokio_postgres::Client,
    child: &mut Child,
    env: &EngineEnv,
    limit: Duration,
) -> Result<()> {
    let target: String = client
        .query_one("SELECT pg_current_wal_insert_lsn()::text", &[])
        .await?
        .get(0);
    let start = Instant::now();
    loop {
        let row = client
            .query_one(
                // The slot may exist before the initial load is written: also require the
                // targets' progress row, which that load commits.
                "SELECT coalesce(bool_and(s.confirmed_flush_lsn >= $1::text::pg_lsn AND s.active), false)
                        AND to_regclass('deltamv.progress') IS NOT NULL
                   FROM pg_replication_slots s WHERE s.slot_name = $2",
                &[&target, &SLOT],
            )
            .await?;
        if row.get::<_, bool>(0) && progress_written(client).await? {
            return Ok(());
        }
        if let Some(status) = child.try_wait()? {
            bail!(
                "deltamv run exited ({status}) before catching up; log:\n{}",
                tail(&env.engine_log(), 60)
            );
        }
        if start.elapsed() > limit {
            bail!(
                "deltamv did not catch up to {target} within {limit:?}; log:\n{}",
                tail(&env.engine_log(), 60)
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn progress_written(client: &tokio_postgres::Client) -> Result<bool> {
    Ok(client
        .query_one(
            "SELECT count(*) > 0 FROM deltamv.progress WHERE slot_name = $1",
            &[&SLOT],
        )
        .await?
        .get(0))
}

/// Polls `probe` every 300 ms until it returns a value. Fails, with the tail of the engine log,
/// when `engine` exits first (`the engine exited (…)`) or when `limit` passes (`what`: what did
/// not happen in time).
pub async fn wait_for<T>(
    engine: &mut Child,
    env: &EngineEnv,
    limit: Duration,
    what: &str,
    mut probe: impl AsyncFnMut() -> Result<Option<T>>,
) -> Result<T> {
    let start = Instant::now();
    loop {
        if let Some(found) = probe().await? {
            return Ok(found);
        }
        if let Some(status) = engine.try_wait()? {
            bail!(
                "the engine exited ({status}); log:\n{}",
                tail(&env.engine_log(), 40)
            );
        }
        if start.elapsed() > limit {
            bail!("{what}; log:\n{}", tail(&env.engine_log(), 40));
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// `GET path` on an engine's HTTP server at 127.0.0.1:`port`: (status code, body).
pub async fn http_get(port: u16, path: &str) -> Result<(u16, String)> {
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n").as_bytes())
        .await?;
    let mut out = String::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_string(&mut out)).await??;
    let code = out
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .context("status line")?;
    let body = out
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Ok((code, body))
}

pub fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// Writes `n` transactions while `engine` runs, waits for it to catch up and checks the targets.
pub async fn write_and_converge(
    client: &tokio_postgres::Client,
    env: &EngineEnv,
    w: &mut Workload,
    engine: &mut EngineChild,
    n: usize,
    what: &str,
) -> Result<()> {
    run_txns(client, w, n).await?;
    wait_caught_up(client, engine, env, Duration::from_secs(60))
        .await
        .with_context(|| what.to_string())?;
    assert_converges(env, Duration::from_secs(10), what).await
}

/// The seed views of `schema/views`, by name.
pub const SEED_VIEWS: [&str; 5] = [
    "analytics.mv_active_users",
    "analytics.mv_agent_performance",
    "analytics.mv_error_summary",
    "analytics.mv_top_agents",
    "analytics.mv_workspace_metrics",
];

/// A view's state in `deltamv.views` and its last error ('' when none).
pub async fn view_state(client: &tokio_postgres::Client, view: &str) -> Result<(String, String)> {
    let row = client
        .query_one(
            "SELECT state, coalesce(last_error, '') FROM deltamv.views WHERE view_name = $1",
            &[&view],
        )
        .await?;
    Ok((row.get(0), row.get(1)))
}

/// Compares every view with PostgreSQL's own evaluation at the engine's date; returns a readable
/// description of all differences (empty when everything matches).
pub async fn differences(env: &EngineEnv) -> Result<String> {
    differences_except(env, &[]).await
}

/// [`differences`] of every view but those named in `skip` (views a test failed on purpose).
pub async fn differences_except(env: &EngineEnv, skip: &[&str]) -> Result<String> {
    let prepared = deltamv::setup::prepare(&env.config()).await?;
    let today = env.today(&prepared.tz);
    let mut out = String::new();
    for plan in &prepared.plans {
        if skip.contains(&plan.name.to_string().as_str()) {
            continue;
        }
        let report = deltamv::reconcile::compare(&prepared.client, plan, Some(&today)).await?;
        if !report.diffs.is_empty() {
            out.push_str(&format!(
                "{}: {} differing rows (expected {}, target {}) at date {today}\n",
                report.view,
                report.diffs.len(),
                report.expected_rows,
                report.actual_rows
            ));
            for d in report.diffs.iter().take(5) {
                out.push_str(&format!(
                    "  expected {:?}\n  actual   {:?}\n",
                    d.expected, d.actual
                ));
            }
        }
    }
    Ok(out)
}

/// Polls [`differences`] until none remain (the engine converges) or `limit` passes.
pub async fn assert_converges(env: &EngineEnv, limit: Duration, what: &str) -> Result<()> {
    assert_converges_except(env, limit, what, &[]).await
}

/// [`assert_converges`] for every view but those named in `skip`.
pub async fn assert_converges_except(
    env: &EngineEnv,
    limit: Duration,
    what: &str,
    skip: &[&str],
) -> Result<()> {
    let start = Instant::now();
    loop {
        let diff = differences_except(env, skip).await?;
        if diff.is_empty() {
            return Ok(());
        }
        if start.elapsed() > limit {
            bail!(
                "{what}: targets differ from PostgreSQL's evaluation:\n{diff}\nengine log:\n{}",
                tail(&env.engine_log(), 40)
            );
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// A write transaction left open on a connection of its own: it holds an XID (an insert of an
/// activity row, which locks no row the workloads update), so a reconcile's snapshot waits for
/// it. COMMIT on the returned client ends it.
pub async fn open_write_transaction(url: &str) -> Result<tokio_postgres::Client> {
    let open = super::connect(url).await?;
    open.batch_execute(
        "BEGIN; INSERT INTO analytics.user_activity (workspace_id, user_id, activity_type, created_at)
         VALUES (gen_random_uuid(), gen_random_uuid(), 'login', now())",
    )
    .await?;
    Ok(open)
}
