//! Throwaway PostgreSQL clusters for deltamv's integration tests.
//!
//! Every test that needs a server starts its own cluster with
//! [`PgCluster::start`]: a fresh `initdb` in a temporary directory, listening
//! only on 127.0.0.1 on a free port, and torn down (`pg_ctl stop -m
//! immediate`, directory removed) when the [`PgCluster`] is dropped.
//!
//! Why a throwaway cluster rather than a shared server:
//! - deltamv needs server-level settings (`wal_level = logical`, replication
//!   slots, WAL senders, a chosen `TimeZone`) that a developer's or CI's
//!   server may not have, and changing them needs a restart;
//! - replication slots and publications are cluster-wide state: a slot left
//!   behind by a failed test pins WAL forever and can break the next run, and
//!   parallel tests would see each other's slots, databases and WAL;
//! - some tests restart or crash the server (`restart("immediate")`) to check
//!   recovery, which nobody may do to a shared server;
//! - nothing needs to be installed or configured beyond the PostgreSQL server
//!   binaries, so the same tests run on a laptop and in CI.
//!
//! The cluster trades durability for speed (`fsync = off`,
//! `synchronous_commit = off`, `full_page_writes = off`): data survives a
//! server crash or restart (the OS page cache is still there), not a machine
//! crash, which is all tests need.
//!
//! Server binaries are found via `DELTAMV_PG_BINDIR`, else
//! `pg_config --bindir`, else the newest `/usr/lib/postgresql/*/bin`.
//! PostgreSQL refuses to run as root, so when the tests run as root the
//! server programs run as the `postgres` OS user through `runuser`, in a
//! directory owned by that user. Set `DELTAMV_KEEP_PG=1` to keep the
//! cluster's directory (data and `log`) after the test for a post-mortem.
//!
//! [`PgCluster::start`] and the other methods are synchronous (they block for
//! at most a bounded time); calling them from a `#[tokio::test]` is fine.

#![allow(dead_code)]

pub mod engine;
pub mod proxy;
pub mod workload;

use std::ffi::OsStr;
use std::fmt::Write as _;
use std::fs;
use std::io::{Read, Write};
use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::{mpsc, OnceLock};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};

/// `pg_ctl -t`: how long `pg_ctl` waits for start, stop or restart.
const PG_CTL_WAIT_SECS: u64 = 60;
/// Hard limit on any one `pg_ctl` call (above `PG_CTL_WAIT_SECS`).
const PG_CTL_TIMEOUT: Duration = Duration::from_secs(PG_CTL_WAIT_SECS + 30);
const INITDB_TIMEOUT: Duration = Duration::from_secs(120);
const PSQL_TIMEOUT: Duration = Duration::from_secs(120);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);
const DROP_STOP_TIMEOUT: Duration = Duration::from_secs(40);
/// How many free ports to try when another process grabs the chosen one.
const PORT_ATTEMPTS: usize = 8;
const LOG_TAIL_LINES: usize = 40;
/// `sun_path` holds 108 bytes including the terminating NUL.
const MAX_SOCKET_PATH: usize = 107;

/// Settings for [`PgCluster::start`].
#[derive(Debug, Clone)]
pub struct ClusterOptions {
    /// The server's `timezone` (what `SHOW TimeZone` answers). Default "UTC".
    pub timezone: String,
    /// More `postgresql.conf` settings, written after (so overriding) the
    /// harness's own. Values are written as quoted string literals, which
    /// PostgreSQL accepts for every type: pass them unquoted
    /// (`("log_min_messages", "debug1")`, `("work_mem", "64MB")`).
    pub extra_conf: Vec<(String, String)>,
}

impl Default for ClusterOptions {
    fn default() -> Self {
        ClusterOptions {
            timezone: "UTC".to_string(),
            extra_conf: Vec::new(),
        }
    }
}

impl ClusterOptions {
    /// Sets the server's timezone.
    pub fn timezone(mut self, tz: impl Into<String>) -> Self {
        self.timezone = tz.into();
        self
    }

    /// Adds one `postgresql.conf` setting (value unquoted).
    pub fn conf(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.extra_conf.push((name.into(), value.into()));
        self
    }
}

/// A running throwaway PostgreSQL cluster; stopped and deleted on drop.
pub struct PgCluster {
    bindir: PathBuf,
    /// `None` only once `Drop` has decided to keep the directory.
    dir: Option<tempfile::TempDir>,
    root: PathBuf,
    data_dir: PathBuf,
    log_path: PathBuf,
    port: u16,
    /// Run server programs as the `postgres` OS user (we are root).
    as_postgres: bool,
}

impl PgCluster {
    /// Creates, configures and starts a new cluster. Blocks until the server
    /// accepts connections (bounded by `pg_ctl -t 60`).
    pub fn start(opts: ClusterOptions) -> Result<PgCluster> {
        let bindir = find_bindir()?;
        for program in ["initdb", "pg_ctl", "postgres"] {
            if !bindir.join(program).is_file() {
                bail!(
                    "PostgreSQL server binaries: {} has no `{program}` \
                     (set DELTAMV_PG_BINDIR to the directory holding initdb, pg_ctl, postgres)",
                    bindir.display()
                );
            }
        }
        let as_postgres = is_root()?;
        let owner = if as_postgres {
            Some(postgres_ids()?)
        } else {
            None
        };

        let base = temp_base(as_postgres)?;
        let dir = tempfile::Builder::new()
            .prefix("deltamv-pg-")
            .tempdir_in(&base)
            .with_context(|| format!("creating a temporary directory in {}", base.display()))?;
        let root = dir.path().to_path_buf();
        if let Some((uid, gid)) = owner {
            // tempfile creates the directory 0700 and owned by root; the
            // server runs as `postgres` and needs to own it (initdb creates
            // data/ in it, pg_ctl writes the log, the socket goes there).
            fs::set_permissions(&root, fs::Permissions::from_mode(0o755))
                .with_context(|| format!("chmod 0755 {}", root.display()))?;
            std::os::unix::fs::chown(&root, Some(uid), Some(gid))
                .with_context(|| format!("chown postgres {}", root.display()))?;
        }
        let data_dir = root.join("data");
        let log_path = root.join("log");

        let mut cluster = PgCluster {
            bindir,
            dir: Some(dir),
            root,
            data_dir,
            log_path,
            port: 0,
            as_postgres,
        };
        cluster.initdb()?;
        cluster.configure_hba()?;
        cluster.first_start(&opts, pick_free_port)?;
        Ok(cluster)
    }

    /// `postgresql://postgres@127.0.0.1:PORT/DBNAME`.
    pub fn url(&self, dbname: &str) -> String {
        format!(
            "postgresql://postgres@127.0.0.1:{}/{}",
            self.port,
            percent_encode(dbname)
        )
    }

    /// The TCP port the server listens on (127.0.0.1 only).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The data directory (`PGDATA`).
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// The directory holding the data directory, the log and the socket.
    pub fn root_dir(&self) -> &Path {
        &self.root
    }

    /// The directory of the server binaries in use.
    pub fn bindir(&self) -> &Path {
        &self.bindir
    }

    /// The whole server log (empty if it cannot be read).
    pub fn log_contents(&self) -> String {
        fs::read(&self.log_path)
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default()
    }

    /// The last `lines` lines of the server log.
    pub fn log_tail(&self, lines: usize) -> String {
        tail(&self.log_contents(), lines)
    }

    /// `CREATE DATABASE "name"`; returns its URL.
    pub fn create_database(&self, name: &str) -> Result<String> {
        self.psql(
            "postgres",
            &format!("CREATE DATABASE {}", quote_ident(name)),
        )
        .with_context(|| format!("creating database {name:?}"))?;
        Ok(self.url(name))
    }

    /// Runs `sql` (one or more `;`-separated statements, run one after the
    /// other as by a script) through the `psql` client with
    /// `-X -q -A -t -v ON_ERROR_STOP=1` and returns its standard output,
    /// trailing newlines removed: one line per row, columns separated by
    /// `|`, no headers nor command tags. Fails on the first SQL error.
    pub fn psql(&self, db: &str, sql: &str) -> Result<String> {
        let mut cmd = Command::new(self.psql_program());
        cmd.args([
            "-X",
            "-q",
            "-A",
            "-t",
            "-v",
            "ON_ERROR_STOP=1",
            "-h",
            "127.0.0.1",
        ])
        .arg("-p")
        .arg(self.port.to_string())
        .args(["-U", "postgres", "-d", db, "-f", "-"])
        .env("PGCONNECT_TIMEOUT", "10");
        let what = format!("psql on database {db:?}");
        let out = run(cmd, &what, PSQL_TIMEOUT, Some(sql.as_bytes()))?;
        if !out.status.success() {
            bail!(
                "{what} failed ({}): {}\nSQL:\n{}\n{}",
                out.status,
                out.stderr.trim(),
                sql,
                self.log_section()
            );
        }
        Ok(out.stdout.trim_end_matches(['\n', '\r']).to_string())
    }

    /// Connects with tokio-postgres to database `db` (see [`connect`]).
    pub async fn connect(&self, db: &str) -> Result<tokio_postgres::Client> {
        connect(&self.url(db)).await
    }

    /// Puts `lines` ahead of pg_hba.conf's own (first match wins); takes effect at the next
    /// `SELECT pg_reload_conf()`.
    pub fn prepend_hba(&self, lines: &str) -> Result<()> {
        let path = self.data_dir.join("pg_hba.conf");
        let text =
            fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
        fs::write(&path, format!("{}\n{text}", lines.trim_end()))
            .with_context(|| format!("writing {}", path.display()))
    }

    /// `pg_ctl restart -m MODE` with MODE "smart", "fast" or "immediate"
    /// ("immediate" is a crash: the server recovers from WAL on start).
    /// Existing connections are closed; the port stays the same.
    pub fn restart(&self, mode: &str) -> Result<()> {
        check_mode(mode)?;
        let mut cmd = self.pg_ctl();
        cmd.arg("-l")
            .arg(&self.log_path)
            .args(["-m", mode, "restart"]);
        self.pg_ctl_run(cmd, &format!("pg_ctl restart -m {mode}"))
    }

    /// `pg_ctl stop -m fast`. The directory stays until drop;
    /// [`PgCluster::start_again`] starts the server again.
    pub fn stop(&self) -> Result<()> {
        self.stop_with("fast")
    }

    /// `pg_ctl stop -m MODE` (see [`PgCluster::restart`] for the modes).
    pub fn stop_with(&self, mode: &str) -> Result<()> {
        check_mode(mode)?;
        let mut cmd = self.pg_ctl();
        cmd.args(["-m", mode, "stop"]);
        self.pg_ctl_run(cmd, &format!("pg_ctl stop -m {mode}"))
    }

    /// Starts a stopped server again, on the same port.
    pub fn start_again(&self) -> Result<()> {
        let mut cmd = self.pg_ctl();
        cmd.arg("-l").arg(&self.log_path).arg("start");
        self.pg_ctl_run(cmd, "pg_ctl start")
    }

    // ----- internals -----

    fn initdb(&self) -> Result<()> {
        let mut cmd = self.server_command("initdb");
        cmd.arg("-D")
            .arg(&self.data_dir)
            .args(["-U", "postgres", "--auth=trust", "-E", "UTF8", "--locale=C"])
            // Skip initdb's final fsync of every file: the cluster is
            // throwaway and runs with fsync=off anyway.
            .arg("--no-sync");
        let out = run(cmd, "initdb", INITDB_TIMEOUT, None)?;
        if !out.status.success() {
            bail!(
                "initdb -D {} failed ({}):\n{}\n{}",
                self.data_dir.display(),
                out.status,
                out.stdout.trim(),
                out.stderr.trim()
            );
        }
        Ok(())
    }

    /// initdb --auth=trust already trusts every local and 127.0.0.1
    /// connection; make sure of the two lines deltamv relies on.
    fn configure_hba(&self) -> Result<()> {
        let path = self.data_dir.join("pg_hba.conf");
        let text =
            fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
        let present: Vec<Vec<&str>> = text
            .lines()
            .map(|l| {
                l.split('#')
                    .next()
                    .unwrap_or("")
                    .split_whitespace()
                    .collect()
            })
            .collect();
        let mut add = String::new();
        for want in [
            "host replication all 127.0.0.1/32 trust",
            "host all all 127.0.0.1/32 trust",
        ] {
            let fields: Vec<&str> = want.split_whitespace().collect();
            if !present.contains(&fields) {
                add.push_str(want);
                add.push('\n');
            }
        }
        if !add.is_empty() {
            // Appending keeps the file's owner (postgres when we are root).
            let mut f = fs::OpenOptions::new()
                .append(true)
                .open(&path)
                .with_context(|| format!("opening {}", path.display()))?;
            write!(f, "\n# deltamv test harness\n{add}")
                .with_context(|| format!("writing {}", path.display()))?;
        }
        Ok(())
    }

    /// Writes postgresql.conf and starts the server, choosing another port
    /// if the chosen one was taken between choosing and binding it.
    fn first_start(
        &mut self,
        opts: &ClusterOptions,
        mut pick_port: impl FnMut() -> Result<u16>,
    ) -> Result<()> {
        let conf_path = self.data_dir.join("postgresql.conf");
        let initdb_conf = fs::read_to_string(&conf_path)
            .with_context(|| format!("reading {}", conf_path.display()))?;
        let mut tried = Vec::new();
        for _ in 0..PORT_ATTEMPTS {
            let port = pick_port()?;
            tried.push(port);
            self.port = port;
            let conf = format!("{initdb_conf}{}", self.harness_conf(opts, port));
            // Rewriting the existing file keeps its owner.
            fs::write(&conf_path, conf)
                .with_context(|| format!("writing {}", conf_path.display()))?;

            let log_start = fs::metadata(&self.log_path).map(|m| m.len()).unwrap_or(0);
            let mut cmd = self.pg_ctl();
            cmd.arg("-l").arg(&self.log_path).arg("start");
            let out = run(cmd, "pg_ctl start", PG_CTL_TIMEOUT, None)?;
            if out.status.success() {
                return Ok(());
            }
            let log = self.log_contents();
            let this_attempt = log.get(log_start as usize..).unwrap_or(&log);
            if this_attempt.contains("Address already in use") {
                continue;
            }
            bail!(
                "pg_ctl start (port {port}, data {}) failed ({}): {}\n{}",
                self.data_dir.display(),
                out.status,
                out.all().trim(),
                self.log_section()
            );
        }
        bail!(
            "pg_ctl start: ports {tried:?} were all taken by the time the server bound them\n{}",
            self.log_section()
        )
    }

    fn harness_conf(&self, opts: &ClusterOptions, port: u16) -> String {
        let socket_dir = self.root.to_string_lossy();
        let mut settings: Vec<(&str, String)> = vec![
            ("listen_addresses", "127.0.0.1".into()),
            ("port", port.to_string()),
            ("unix_socket_directories", socket_dir.into_owned()),
            ("wal_level", "logical".into()),
            ("max_replication_slots", "20".into()),
            ("max_wal_senders", "20".into()),
            ("fsync", "off".into()),
            ("synchronous_commit", "off".into()),
            ("full_page_writes", "off".into()),
            ("timezone", opts.timezone.clone()),
            ("log_timezone", "UTC".into()),
            ("shared_buffers", "128MB".into()),
            ("max_connections", "100".into()),
        ];
        for (k, v) in &opts.extra_conf {
            settings.push((k.as_str(), v.clone()));
        }
        let mut out = String::from("\n# ---- deltamv test harness ----\n");
        for (k, v) in settings {
            let _ = writeln!(out, "{k} = '{}'", v.replace('\'', "''"));
        }
        out
    }

    fn pg_ctl(&self) -> Command {
        let mut cmd = self.server_command("pg_ctl");
        cmd.arg("-D")
            .arg(&self.data_dir)
            .args(["-w", "-t", &PG_CTL_WAIT_SECS.to_string()]);
        cmd
    }

    fn pg_ctl_run(&self, cmd: Command, what: &str) -> Result<()> {
        let out = run(cmd, what, PG_CTL_TIMEOUT, None)?;
        if !out.status.success() {
            bail!(
                "{what} (port {}, data {}) failed ({}): {}\n{}",
                self.port,
                self.data_dir.display(),
                out.status,
                out.all().trim(),
                self.log_section()
            );
        }
        Ok(())
    }

    /// A server program from `bindir`, run as `postgres` when we are root.
    fn server_command(&self, program: &str) -> Command {
        let path = self.bindir.join(program);
        let mut cmd = if self.as_postgres {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(path);
            c
        } else {
            Command::new(path)
        };
        // Never depend on the caller's working directory, which `postgres`
        // may be unable to enter when we are root (e.g. under /root).
        cmd.current_dir(&self.root);
        cmd
    }

    fn psql_program(&self) -> PathBuf {
        let p = self.bindir.join("psql");
        if p.is_file() {
            p
        } else {
            PathBuf::from("psql")
        }
    }

    fn log_section(&self) -> String {
        format!(
            "--- last {LOG_TAIL_LINES} lines of {} ---\n{}",
            self.log_path.display(),
            self.log_tail(LOG_TAIL_LINES)
        )
    }

    /// Best effort, bounded: `pg_ctl stop -m immediate`, and if that fails
    /// while our postmaster still runs, SIGKILL it.
    fn shutdown_for_drop(&self) {
        let pid_file = self.data_dir.join("postmaster.pid");
        if !pid_file.exists() {
            return; // never started, or stopped cleanly
        }
        let mut cmd = self.server_command("pg_ctl");
        cmd.arg("-D")
            .arg(&self.data_dir)
            .args(["-w", "-t", "30", "-m", "immediate", "stop"]);
        let stopped = matches!(
            run(cmd, "pg_ctl stop", DROP_STOP_TIMEOUT, None),
            Ok(out) if out.status.success()
        );
        if stopped {
            return;
        }
        let Some(pid) = fs::read_to_string(&pid_file)
            .ok()
            .and_then(|t| t.lines().next().and_then(|l| l.trim().parse::<u32>().ok()))
        else {
            return;
        };
        // Only kill the process if it is the postmaster of this data dir
        // (a stale pid file may name a pid reused by someone else).
        let ours = fs::read(format!("/proc/{pid}/cmdline"))
            .map(|c| String::from_utf8_lossy(&c).contains(&*self.data_dir.to_string_lossy()))
            .unwrap_or(false);
        if ours {
            let _ = Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
    }
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        // Never panic here: this may run while a failed test unwinds.
        self.shutdown_for_drop();
        let keep = std::env::var_os("DELTAMV_KEEP_PG").is_some_and(|v| !v.is_empty() && v != "0");
        if keep {
            if let Some(dir) = self.dir.take() {
                let path = dir.keep();
                eprintln!(
                    "DELTAMV_KEEP_PG: kept PostgreSQL cluster at {}",
                    path.display()
                );
            }
        }
        // Otherwise `self.dir` (a TempDir) removes the directory, ignoring
        // errors, when the fields are dropped right after this.
    }
}

/// Connects with tokio-postgres (no TLS) within 30 s and spawns the
/// connection task on the current tokio runtime; the task ends, printing
/// any error to stderr, when the client is dropped or the server goes away.
pub async fn connect(url: &str) -> Result<tokio_postgres::Client> {
    let (client, connection) = tokio::time::timeout(
        CONNECT_TIMEOUT,
        tokio_postgres::connect(url, tokio_postgres::NoTls),
    )
    .await
    .map_err(|_| anyhow!("connecting to {url}: timed out after {CONNECT_TIMEOUT:?}"))?
    .with_context(|| format!("connecting to {url}"))?;
    let url = url.to_string();
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            eprintln!("postgres connection to {url} ended: {e}");
        }
    });
    Ok(client)
}

/// Quotes an SQL identifier: `"name"`, inner `"` doubled.
pub fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// Quotes an SQL string literal: `'text'`, inner `'` doubled.
pub fn quote_literal(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

// ----- process helpers -----

struct CmdOutput {
    status: ExitStatus,
    stdout: String,
    stderr: String,
}

impl CmdOutput {
    fn all(&self) -> String {
        format!("{}{}", self.stdout, self.stderr)
    }
}

/// Runs `cmd` with stdin `input` (or /dev/null), collecting its output; kills
/// its process group and fails after `timeout`.
fn run(mut cmd: Command, what: &str, timeout: Duration, input: Option<&[u8]>) -> Result<CmdOutput> {
    // Environment variables such as PGPORT, PGHOST, PGDATA, PGOPTIONS or
    // PGTZ would silently change what the programs do.
    let pg_vars: Vec<_> = std::env::vars_os()
        .map(|(k, _)| k)
        .filter(|k| k.to_string_lossy().starts_with("PG") && k != OsStr::new("PGCONNECT_TIMEOUT"))
        .collect();
    for k in pg_vars {
        cmd.env_remove(k);
    }
    cmd.stdin(if input.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    })
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    // Its own process group, so that a timeout kills runuser's child too.
    // (pg_ctl puts the postmaster in a session of its own, so this never
    // reaches the server.)
    .process_group(0);
    let shown = format!("{cmd:?}");
    let mut child = cmd
        .spawn()
        .with_context(|| format!("{what}: could not run {shown}"))?;

    if let (Some(mut stdin), Some(input)) = (child.stdin.take(), input) {
        let input = input.to_vec();
        thread::spawn(move || {
            let _ = stdin.write_all(&input);
        });
    }
    let stdout = reader(child.stdout.take());
    let stderr = reader(child.stderr.take());

    let deadline = Instant::now() + timeout;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if Instant::now() < deadline => thread::sleep(Duration::from_millis(20)),
            Ok(None) => {
                let _ = Command::new("kill")
                    .args(["-KILL", "--", &format!("-{}", child.id())])
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .status();
                let _ = child.kill();
                let _ = child.wait();
                let (out, err) = (collect(stdout), collect(stderr));
                bail!("{what}: timed out after {timeout:?}: {shown}\n{out}{err}");
            }
            Err(e) => return Err(e).with_context(|| format!("{what}: waiting for {shown}")),
        }
    };
    Ok(CmdOutput {
        status,
        stdout: collect(stdout),
        stderr: collect(stderr),
    })
}

fn reader<R: Read + Send + 'static>(pipe: Option<R>) -> mpsc::Receiver<Vec<u8>> {
    let (tx, rx) = mpsc::channel();
    if let Some(mut pipe) = pipe {
        thread::spawn(move || {
            let mut buf = Vec::new();
            let _ = pipe.read_to_end(&mut buf);
            let _ = tx.send(buf);
        });
    }
    rx
}

/// A pipe's contents; gives up after a few seconds if some grandchild
/// still holds the pipe open.
fn collect(rx: mpsc::Receiver<Vec<u8>>) -> String {
    rx.recv_timeout(Duration::from_secs(5))
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default()
}

/// Runs a small command (`id`, `pg_config`) and returns its trimmed stdout.
fn capture(program: &str, args: &[&str]) -> Result<String> {
    let out = run(
        {
            let mut c = Command::new(program);
            c.args(args);
            c
        },
        program,
        Duration::from_secs(30),
        None,
    )?;
    if !out.status.success() {
        bail!(
            "{program} {args:?} failed ({}): {}",
            out.status,
            out.stderr.trim()
        );
    }
    Ok(out.stdout.trim().to_string())
}

// ----- environment discovery -----

fn find_bindir() -> Result<PathBuf> {
    if let Some(dir) = std::env::var_os("DELTAMV_PG_BINDIR").filter(|d| !d.is_empty()) {
        return Ok(PathBuf::from(dir));
    }
    let mut looked = Vec::new();
    match capture("pg_config", &["--bindir"]) {
        // pg_config may come from a client-only package whose bindir has
        // no server programs: then look further.
        Ok(dir) if Path::new(&dir).join("initdb").is_file() => return Ok(PathBuf::from(dir)),
        Ok(dir) => looked.push(format!("pg_config --bindir = {dir} (no initdb there)")),
        Err(e) => looked.push(format!("pg_config --bindir: {e:#}")),
    }
    let mut versions: Vec<(Vec<u32>, PathBuf)> = fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let version: Option<Vec<u32>> = name.split('.').map(|p| p.parse().ok()).collect();
            let bin = e.path().join("bin");
            version
                .filter(|_| bin.join("initdb").is_file())
                .map(|v| (v, bin))
        })
        .collect();
    versions.sort();
    if let Some((_, bin)) = versions.pop() {
        return Ok(bin);
    }
    looked.push("/usr/lib/postgresql/*/bin: none with initdb".into());
    bail!(
        "PostgreSQL server binaries not found ({}); install them (Debian: \
         apt-get install postgresql) or set DELTAMV_PG_BINDIR",
        looked.join("; ")
    )
}

fn is_root() -> Result<bool> {
    static ROOT: OnceLock<bool> = OnceLock::new();
    if let Some(r) = ROOT.get() {
        return Ok(*r);
    }
    let uid = capture("id", &["-u"]).context("finding the effective user id")?;
    Ok(*ROOT.get_or_init(|| uid == "0"))
}

/// uid and gid of the `postgres` OS user.
fn postgres_ids() -> Result<(u32, u32)> {
    static IDS: OnceLock<(u32, u32)> = OnceLock::new();
    if let Some(ids) = IDS.get() {
        return Ok(*ids);
    }
    let parse = |flag: &str| -> Result<u32> {
        let text = capture("id", &[flag, "postgres"]).context(
            "running as root, PostgreSQL must run as the `postgres` OS user, \
             which could not be found (Debian's postgresql package creates it)",
        )?;
        text.parse()
            .with_context(|| format!("id {flag} postgres printed {text:?}"))
    };
    let ids = (parse("-u")?, parse("-g")?);
    Ok(*IDS.get_or_init(|| ids))
}

/// Where to create the cluster's directory: the system temp dir, unless
/// (as root) `postgres` cannot reach it or its path is too long for a unix
/// socket, in which case /tmp.
fn temp_base(as_postgres: bool) -> Result<PathBuf> {
    let candidates = [std::env::temp_dir(), PathBuf::from("/tmp")];
    for base in &candidates {
        // ".../deltamv-pg-XXXXXX/.s.PGSQL.65535"
        let socket_len = base.as_os_str().len() + "/deltamv-pg-XXXXXX/.s.PGSQL.65535".len();
        if socket_len > MAX_SOCKET_PATH {
            continue;
        }
        if as_postgres && !traversable_by_others(base) {
            continue;
        }
        return Ok(base.clone());
    }
    bail!(
        "no usable temporary directory among {candidates:?} (the socket path must stay \
         under {MAX_SOCKET_PATH} bytes, and as root every parent must be searchable by others)"
    )
}

fn traversable_by_others(dir: &Path) -> bool {
    dir.ancestors().all(|a| {
        fs::metadata(a)
            .map(|m| m.is_dir() && m.permissions().mode() & 0o001 != 0)
            .unwrap_or(false)
    })
}

// ----- small helpers -----

fn pick_free_port() -> Result<u16> {
    let listener =
        TcpListener::bind("127.0.0.1:0").context("binding 127.0.0.1:0 to find a free port")?;
    Ok(listener.local_addr()?.port())
}

fn check_mode(mode: &str) -> Result<()> {
    match mode {
        "smart" | "fast" | "immediate" => Ok(()),
        _ => bail!("shutdown mode must be smart, fast or immediate, not {mode:?}"),
    }
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

fn percent_encode(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}
