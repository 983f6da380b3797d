//! The measurements, in the order one run takes them (each leaves the database as the next
//! expects it): load, initial load, reconcile, queries, catch-up, freshness, the rate search
//! ([`super::rates`]), reconcile under writes, incremental vs full, writer overhead, a midnight
//! under writes, and the final correctness check.

use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use deltamv::pg::Lsn;
use rand::Rng;
use tokio_postgres::Client;

use super::dataset;
use super::engine::{Engine, Running, PUBLICATION, SLOT};
use super::{Options, Progress};
use crate::support::PgCluster;

/// Rows per INSERT while loading (progress is shown per chunk).
const LOAD_CHUNK: u64 = 500_000;
/// How often freshness probes are read (each is one indexed lookup on the target).
const PROBE_EVERY: Duration = Duration::from_millis(1);
/// How often slot positions are sampled for the throughput and lag plots.
const SAMPLE_EVERY: Duration = Duration::from_millis(250);
/// A stuck engine fails the run instead of hanging it.
const CATCH_UP_LIMIT: Duration = Duration::from_secs(1800);

pub struct Bench<'a> {
    pub opts: &'a Options,
    pub progress: &'a Progress,
    pub cluster: &'a PgCluster,
    pub url: String,
    pub client: Client,
    pub engine: Engine,
    pub work_dir: PathBuf,
    pub views_dir: PathBuf,
    pub peak_run_rss: u64,
    /// `deltamv run`'s peak RSS after each row, as (row, bytes): which row raised it.
    pub rss_steps: Vec<(&'static str, u64)>,
}

/// Every figure of one run.
#[derive(Debug, Default)]
pub struct Results {
    pub load_seconds: f64,
    pub create_mv_seconds: f64,
    pub init_seconds: f64,
    pub init_peak_rss: u64,
    pub state_bytes: u64,
    pub reconcile_seconds: f64,
    pub final_reconcile_seconds: f64,
    pub queries: Vec<QueryTiming>,
    pub catch_up: CatchUp,
    pub freshness: Vec<Freshness>,
    /// Freshness at the first rate again, with `deltamv reconcile` through the engine meanwhile.
    pub live_reconcile: Option<LiveReconcile>,
    pub batch_seconds: Vec<f64>,
    pub refresh_seconds: f64,
    pub tps_alone: Vec<f64>,
    pub tps_engine: Vec<f64>,
    pub peak_run_rss: u64,
    /// See [`Bench::rss_steps`].
    pub rss_steps: Vec<(&'static str, u64)>,
    /// The highest steady rate with p99 <= 1 s.
    pub rate_search: Option<super::rates::RateSearch>,
    /// A midnight under writes, at the first rate.
    pub midnight: Option<super::rates::Midnight>,
    /// `init --resync` after `init`, with a reader watching the targets.
    pub resync: Option<super::resync::Resync>,
}

#[derive(Debug)]
pub struct QueryTiming {
    pub name: String,
    pub target_ms: f64,
    pub base_ms: f64,
}

#[derive(Debug, Default)]
pub struct CatchUp {
    pub changes: u64,
    pub wal_bytes: u64,
    pub recv_seconds: f64,
    pub engine_seconds: f64,
    /// CPU seconds `deltamv run` used from its start until the backlog was drained.
    pub engine_cpu_seconds: f64,
    /// Minor page faults of `deltamv run` over the same span.
    pub engine_faults: u64,
    /// (seconds since start, fraction of the backlog confirmed) for each consumer.
    pub recv_curve: Vec<(f64, f64)>,
    pub engine_curve: Vec<(f64, f64)>,
}

impl CatchUp {
    /// The engine's CPU time per change drained, in microseconds.
    pub fn cpu_micros_per_change(&self) -> f64 {
        self.engine_cpu_seconds * 1e6 / self.changes.max(1) as f64
    }

    /// The engine's minor page faults per change drained.
    pub fn faults_per_change(&self) -> f64 {
        self.engine_faults as f64 / self.changes.max(1) as f64
    }
}

#[derive(Debug, Default)]
pub struct LiveReconcile {
    pub freshness: Freshness,
    /// When the reconcile started, in seconds into the write window.
    pub started_at: f64,
    /// `deltamv reconcile`'s wall time (0 differing rows, or the run fails).
    pub seconds: f64,
    /// The engine's time serving the request (it applies on meanwhile).
    pub served_ms: f64,
    /// The engine's pause for the reconcile, as it logged it (none if it did not).
    pub pause_ms: Option<f64>,
}

#[derive(Debug, Default)]
pub struct Freshness {
    pub rate: u32,
    pub achieved_rate: f64,
    pub changes_per_txn: u32,
    /// (commit time since start in s, commit-to-visible in ms), one per transaction.
    pub latencies: Vec<(f64, f64)>,
    /// (s, WAL bytes the slot had not confirmed).
    pub lag_bytes: Vec<(f64, f64)>,
}

impl Freshness {
    /// "p50 .. ms, p99 .. ms, max .. ms" of the commit-to-visible latencies.
    pub fn summary(&self) -> String {
        let mut ms: Vec<f64> = self.latencies.iter().map(|l| l.1).collect();
        format!(
            "p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
            percentile(&mut ms, 0.5),
            percentile(&mut ms, 0.99),
            percentile(&mut ms, 1.0)
        )
    }
}

impl Bench<'_> {
    pub async fn all(&mut self) -> Result<Results> {
        let mut r = self.load_and_init().await?;
        r.resync = Some(self.resync().await?);
        r.reconcile_seconds = self.reconcile("reconcile after init and init --resync")?;
        r.queries = self.queries().await?;
        let mut running = self.catch_up(&mut r).await?;
        self.note_rss("1 catch-up", running.peak_rss());
        for &rate in &self.opts.rates {
            let (f, _) = self
                .freshness(rate, &mut running, None, self.opts.rate_seconds)
                .await?;
            r.freshness.push(f);
        }
        self.note_rss("2 freshness", running.peak_rss());
        let first = self.opts.first_rate();
        r.rate_search = Some(
            self.rate_search(
                &mut running,
                first,
                self.opts.search_max_rate,
                self.opts.search_seconds,
            )
            .await?,
        );
        self.note_rss("2s rate search", running.peak_rss());
        r.live_reconcile = Some(self.live_reconcile(first, &mut running).await?);
        self.note_rss("2r reconcile under writes", running.peak_rss());
        self.incremental_vs_full(&mut r, &mut running).await?;
        self.stop("4 10k-change transactions", running)?;
        self.writer_overhead(&mut r).await?;
        // Last: from here on the engine runs on a clock file past midnight.
        r.midnight = Some(self.midnight(first, self.opts.rate_seconds).await?);
        r.final_reconcile_seconds = self.reconcile("final reconcile (after every workload)")?;
        r.peak_run_rss = self.peak_run_rss;
        r.rss_steps = std::mem::take(&mut self.rss_steps);
        Ok(r)
    }

    /// `--catch-up-only`: the dataset, `init` and the catch-up row, then a reconcile that
    /// checks the drained state is exact.
    pub async fn catch_up_only(&mut self) -> Result<Results> {
        let mut r = self.load_and_init().await?;
        let running = self.catch_up(&mut r).await?;
        self.stop("1 catch-up", running)?;
        r.final_reconcile_seconds = self.reconcile("reconcile after the catch-up")?;
        r.peak_run_rss = self.peak_run_rss;
        Ok(r)
    }

    /// `--init-only`: the dataset, `init`, `init --resync` with a reader watching the targets,
    /// then a reconcile that checks the rebuilt state.
    pub async fn init_only(&mut self) -> Result<Results> {
        let mut r = self.load_and_init().await?;
        r.resync = Some(self.resync().await?);
        r.reconcile_seconds = self.reconcile("reconcile after init --resync")?;
        Ok(r)
    }

    /// `--reconcile-only`: the dataset, `init`, the engine caught up, then freshness at the first
    /// rate without (row 2) and with a reconcile (row 2r).
    pub async fn reconcile_only(&mut self) -> Result<(Freshness, LiveReconcile)> {
        self.load_and_init().await?;
        let mut running = self.start_caught_up().await?;
        let first = self.opts.first_rate();
        // Row 2 first, as in the full run: the same writes without a reconcile, for comparison.
        let (without, _) = self
            .freshness(first, &mut running, None, self.opts.rate_seconds)
            .await?;
        let live = self.live_reconcile(first, &mut running).await?;
        self.stop("2r reconcile under writes", running)?;
        Ok((without, live))
    }

    /// `--midnight-only`: the dataset, `init`, the midnight row (2m) at the first rate, then a
    /// reconcile that checks the targets at the new date.
    pub async fn midnight_only(&mut self) -> Result<super::rates::Midnight> {
        self.load_and_init().await?;
        let first = self.opts.first_rate();
        let midnight = self.midnight(first, self.opts.rate_seconds).await?;
        self.reconcile("reconcile after the midnight")?;
        Ok(midnight)
    }

    /// The dataset, then CREATE MATERIALIZED VIEW and `init` (the start of every mode).
    async fn load_and_init(&mut self) -> Result<Results> {
        let mut r = Results {
            load_seconds: self.load().await?,
            ..Results::default()
        };
        self.initial_load(&mut r).await?;
        Ok(r)
    }

    async fn load(&mut self) -> Result<f64> {
        let start = Instant::now();
        self.client
            .batch_execute(&std::fs::read_to_string(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/schema/sources.sql"
            ))?)
            .await?;
        self.client.batch_execute("SELECT setseed(0.42)").await?;
        for (table, rows) in [
            ("agent_runs", self.opts.runs_rows),
            ("user_activity", self.opts.activity_rows),
        ] {
            let mut first = 1;
            while first <= rows {
                let n = LOAD_CHUNK.min(rows - first + 1);
                let sql = if table == "agent_runs" {
                    dataset::agent_runs_insert(first, n)
                } else {
                    dataset::user_activity_insert(first, n)
                };
                self.client.batch_execute(&sql).await?;
                first += n;
                self.progress.step(format_args!(
                    "loaded {} / {rows} rows into {table}",
                    first - 1
                ));
            }
        }
        self.client.batch_execute("VACUUM ANALYZE").await?;
        let seconds = start.elapsed().as_secs_f64();
        self.progress.step(format_args!(
            "dataset loaded and analyzed in {seconds:.1} s"
        ));
        Ok(seconds)
    }

    /// CREATE MATERIALIZED VIEW of the seed views (as `pg_mv_*`, kept for the refresh
    /// comparison), then `deltamv init` of the same views.
    async fn initial_load(&mut self, r: &mut Results) -> Result<()> {
        self.progress
            .step("initial load: CREATE MATERIALIZED VIEW of the 5 views (+ unique indexes)");
        let start = Instant::now();
        for sql in self.matview_definitions()? {
            self.client.batch_execute(&sql).await?;
        }
        r.create_mv_seconds = start.elapsed().as_secs_f64();
        self.progress.step(format_args!(
            "  CREATE MATERIALIZED VIEW: {:.2} s; now deltamv init",
            r.create_mv_seconds
        ));
        let init = self.engine.finish(&["init"])?;
        if init.code != 0 {
            bail!(
                "deltamv init failed ({}); log:\n{}",
                init.code,
                self.engine.log_tail(30)
            );
        }
        r.init_seconds = init.seconds;
        r.init_peak_rss = init.peak_rss_bytes;
        r.state_bytes = self.engine.state_bytes();
        self.progress.step(format_args!(
            "  deltamv init: {:.2} s, peak RSS {} MB, state {} MB",
            init.seconds,
            init.peak_rss_bytes >> 20,
            r.state_bytes >> 20
        ));
        Ok(())
    }

    fn matview_definitions(&self) -> Result<Vec<String>> {
        let mut files: Vec<_> = std::fs::read_dir(&self.views_dir)?
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|e| e == "sql"))
            .collect();
        files.sort();
        files
            .iter()
            .map(|f| {
                let sql = std::fs::read_to_string(f)
                    .with_context(|| format!("reading {}", f.display()))?;
                Ok(sql
                    .replace("analytics.mv_", "analytics.pg_mv_")
                    .replace("idx_mv_", "idx_pg_mv_"))
            })
            .collect()
    }

    /// `deltamv reconcile` of every view; any difference fails the run.
    fn reconcile(&self, what: &str) -> Result<f64> {
        self.progress.step(what);
        let out = self.engine.finish(&["reconcile"])?;
        if out.code != 0 {
            bail!(
                "{what}: targets differ from PostgreSQL's answer (exit {}):\n{}",
                out.code,
                out.stdout
            );
        }
        self.progress
            .step(format_args!("  0 differing rows, {:.2} s", out.seconds));
        Ok(out.seconds)
    }

    /// The dashboard's questions, on the targets and from the base tables; the answers must match.
    async fn queries(&mut self) -> Result<Vec<QueryTiming>> {
        self.progress.step("queries: targets vs base tables");
        let busiest: String = self
            .client
            .query_one(
                "SELECT workspace_id::text FROM analytics.mv_workspace_metrics
                  ORDER BY total_executions DESC, workspace_id LIMIT 1",
                &[],
            )
            .await?
            .get(0);
        let metrics_cols = "total_users::text, total_agents::text, total_executions::text,
             avg_success_rate::text, total_credits_consumed::text, last_activity_at::text";
        let one_target = format!(
            "SELECT {metrics_cols} FROM analytics.mv_workspace_metrics WHERE workspace_id = '{busiest}'"
        );
        let view = std::fs::read_to_string(self.views_dir.join("mv_workspace_metrics.sql"))?;
        let body = view_body(&view)?.replace(
            "WHERE started_at >=",
            &format!("WHERE workspace_id = '{busiest}' AND started_at >="),
        );
        let one_base = format!("SELECT {metrics_cols} FROM ({body}) v");
        let top_target =
            "SELECT workspace_id::text AS workspace, total_credits_consumed::text AS credits
             FROM analytics.mv_workspace_metrics
            ORDER BY total_credits_consumed DESC NULLS LAST, workspace_id LIMIT 10";
        let top_base = "SELECT workspace_id::text, sum(credits_consumed)::text
             FROM public.agent_runs WHERE started_at >= CURRENT_DATE - INTERVAL '30 days'
            GROUP BY workspace_id
            ORDER BY sum(credits_consumed) DESC NULLS LAST, workspace_id LIMIT 10";
        let mut out = Vec::new();
        for (name, target, base) in [
            (
                "one workspace's metrics",
                one_target.as_str(),
                one_base.as_str(),
            ),
            ("top 10 workspaces by credits", top_target, top_base),
        ] {
            let (target_ms, a) = self
                .time_query(target, self.opts.query_repeats * 20)
                .await?;
            let (base_ms, b) = self.time_query(base, self.opts.query_repeats).await?;
            if a != b {
                bail!("{name}: the target answers {a:?}, the base tables {b:?}");
            }
            self.progress.step(format_args!(
                "  {name}: target {target_ms:.3} ms, base tables {base_ms:.1} ms (same answer)"
            ));
            out.push(QueryTiming {
                name: name.into(),
                target_ms,
                base_ms,
            });
        }
        Ok(out)
    }

    /// Median milliseconds of `repeats` executions (after one warm-up), and the answer.
    async fn time_query(&self, sql: &str, repeats: usize) -> Result<(f64, Vec<Vec<String>>)> {
        let stmt = self.client.prepare(sql).await?;
        let rows = self.client.query(&stmt, &[]).await?;
        let answer = rows
            .iter()
            .map(|r| {
                (0..r.len())
                    .map(|i| r.get::<_, Option<String>>(i).unwrap_or_default())
                    .collect()
            })
            .collect();
        let mut times = Vec::with_capacity(repeats);
        for _ in 0..repeats {
            let start = Instant::now();
            self.client.query(&stmt, &[]).await?;
            times.push(start.elapsed().as_secs_f64() * 1e3);
        }
        Ok((median(&mut times), answer))
    }

    /// A backlog written while nothing consumes it, drained by pg_recvlogical (to /dev/null)
    /// and then by `deltamv run`, each from its own slot created before the backlog. Returns
    /// the engine, running and caught up.
    async fn catch_up(&mut self, r: &mut Results) -> Result<Running> {
        let txns = (self.opts.backlog_changes / 100).max(1);
        self.progress.step(format_args!(
            "catch-up: writing a backlog of ~{} changes ({txns} transactions) with nothing consuming",
            txns * 100
        ));
        self.client
            .execute(
                "SELECT pg_create_logical_replication_slot('bench_recv', 'pgoutput')",
                &[],
            )
            .await?;
        let before = self.changes().await?;
        let max_id: i64 = self.max_run_id().await?;
        let start_lsn = self.slot_lsn("bench_recv").await?;
        let script = self.work_dir.join("backlog.sql");
        std::fs::write(&script, dataset::backlog_script(max_id as u64))?;
        self.pgbench(&["-c", "1", "-t", &txns.to_string(), "-f", &path_str(&script)])?;
        tokio::time::sleep(Duration::from_millis(1500)).await; // statistics flush
        r.catch_up.changes = self.changes().await? - before;
        let end_lsn = self.current_lsn().await?;
        r.catch_up.wal_bytes = end_lsn - start_lsn;
        self.progress.step(format_args!(
            "  backlog: {} changes, {} MB of WAL; pg_recvlogical drains it",
            r.catch_up.changes,
            r.catch_up.wal_bytes >> 20
        ));

        let start = Instant::now();
        let mut recv = Command::new(self.cluster.bindir().join("pg_recvlogical"))
            .args(self.conn_args())
            .args(["--slot", "bench_recv", "--start", "-P", "pgoutput"])
            .args(["-o", "proto_version=1", "-o"])
            .arg(format!("publication_names={PUBLICATION}"))
            .args(["-F", "0", "-s", "1", "--no-loop", "-f", "/dev/null"])
            .arg(format!("--endpos={}", Lsn(end_lsn)))
            .spawn()
            .context("running pg_recvlogical")?;
        let mut curve = Vec::new();
        loop {
            let lsn = self.slot_lsn("bench_recv").await?;
            curve.push((
                start.elapsed().as_secs_f64(),
                fraction(lsn, start_lsn, end_lsn),
            ));
            if let Some(status) = recv.try_wait()? {
                if !status.success() {
                    bail!("pg_recvlogical failed: {status}");
                }
                break;
            }
            tokio::time::sleep(SAMPLE_EVERY).await;
        }
        r.catch_up.recv_seconds = start.elapsed().as_secs_f64();
        curve.push((r.catch_up.recv_seconds, 1.0));
        r.catch_up.recv_curve = curve;
        self.client
            .execute("SELECT pg_drop_replication_slot('bench_recv')", &[])
            .await?;
        self.progress.step(format_args!(
            "  pg_recvlogical: {:.2} s ({:.0} changes/s); now deltamv run",
            r.catch_up.recv_seconds,
            r.catch_up.changes as f64 / r.catch_up.recv_seconds
        ));

        let start = Instant::now();
        let mut running = self.engine.spawn_run()?;
        let mut curve = Vec::new();
        loop {
            let lsn = self.slot_lsn(SLOT).await?;
            curve.push((
                start.elapsed().as_secs_f64(),
                fraction(lsn, start_lsn, end_lsn),
            ));
            if lsn >= end_lsn {
                break;
            }
            running.check_alive(&self.engine)?;
            if start.elapsed() > CATCH_UP_LIMIT {
                bail!("deltamv did not drain the backlog within {CATCH_UP_LIMIT:?}");
            }
            tokio::time::sleep(SAMPLE_EVERY.min(Duration::from_millis(50))).await;
        }
        r.catch_up.engine_seconds = start.elapsed().as_secs_f64();
        r.catch_up.engine_cpu_seconds = running.cpu_seconds();
        r.catch_up.engine_faults = running.minor_faults();
        r.catch_up.engine_curve = thin(curve, SAMPLE_EVERY.as_secs_f64());
        self.progress.step(format_args!(
            "  deltamv: {:.2} s ({:.0} changes/s), {:.1} CPU seconds ({:.1} us per change), {:.2} page faults per change",
            r.catch_up.engine_seconds,
            r.catch_up.changes as f64 / r.catch_up.engine_seconds,
            r.catch_up.engine_cpu_seconds,
            r.catch_up.cpu_micros_per_change(),
            r.catch_up.faults_per_change()
        ));
        Ok(running)
    }

    /// Writes at a steady `rate` (changes/s) from one connection, one probe run per transaction,
    /// while another connection polls the target every millisecond.
    /// Freshness at `rate` while `deltamv reconcile` runs through the engine, started a quarter
    /// into the write window: what a reconcile under load costs the readers, and proof that it
    /// finds nothing on a correct engine while writes go on.
    async fn live_reconcile(&mut self, rate: u32, running: &mut Running) -> Result<LiveReconcile> {
        let at = self.opts.rate_seconds / 4.0;
        let (freshness, reconcile) = self
            .freshness(rate, running, Some(at), self.opts.rate_seconds)
            .await?;
        let (started_at, out) = reconcile.context("the reconcile did not start")?;
        if out.code != 0 {
            bail!(
                "reconcile through the engine under {rate} changes/s found differences (exit {}):\n{}",
                out.code,
                out.stdout
            );
        }
        let served_ms: f64 = self
            .client
            .query_one(
                "SELECT duration_ms FROM deltamv.requests ORDER BY finished_at DESC LIMIT 1",
                &[],
            )
            .await?
            .get(0);
        let pause_ms = self.engine.last_logged("pause_ms");
        self.progress.step(format_args!(
            "  reconcile through the engine: {:.2} s, served in {served_ms:.0} ms, engine paused {} ms, 0 differing rows",
            out.seconds,
            pause_ms.map_or("(not logged)".into(), |p| format!("{p:.1}"))
        ));
        Ok(LiveReconcile {
            freshness,
            started_at,
            seconds: out.seconds,
            served_ms,
            pause_ms,
        })
    }

    /// Writes at `rate` for the configured time and measures commit-to-visible latency; with
    /// `reconcile_at`, also runs `deltamv reconcile` from that many seconds in (returned with
    /// its start time).
    pub(super) async fn freshness(
        &mut self,
        rate: u32,
        running: &mut Running,
        reconcile_at: Option<f64>,
        seconds: f64,
    ) -> Result<(Freshness, Option<(f64, super::engine::Finished)>)> {
        let changes_per_txn = (rate / 100).max(10);
        let txn_rate = f64::from(rate) / f64::from(changes_per_txn);
        self.progress.step(format_args!(
            "freshness at {rate} changes/s ({txn_rate:.0} transactions/s of {changes_per_txn}) for {seconds} s"
        ));
        let writer = crate::support::connect(&self.url).await?;
        let base: i64 = self.probe_count().await?;
        let max_id: i64 = self.max_run_id().await?;
        let stop = Arc::new(AtomicBool::new(false));
        let poller = tokio::spawn(poll_probe(self.url.clone(), stop.clone()));
        let sampler = tokio::spawn(sample_lag(self.url.clone(), stop.clone()));
        let stmt = writer
            .prepare(&dataset::writer_statement(changes_per_txn))
            .await?;
        let start = Instant::now();
        let mut commits = Vec::new();
        let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / txn_rate));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut reconcile = None;
        while start.elapsed().as_secs_f64() < seconds {
            tick.tick().await;
            let now = start.elapsed().as_secs_f64();
            if reconcile.is_none() && reconcile_at.is_some_and(|at| now >= at) {
                let engine = self.engine.clone();
                let task = tokio::task::spawn_blocking(move || engine.finish(&["reconcile"]));
                reconcile = Some((now, task));
            }
            let id = rand::thread_rng().gen_range(1..max_id.max(2));
            writer.execute(&stmt, &[&id]).await?;
            commits.push(Instant::now());
        }
        let written = start.elapsed().as_secs_f64();
        let reconcile = match reconcile {
            Some((at, task)) => Some((at, task.await??)),
            None => None,
        };
        let expected = base + commits.len() as i64;
        let wait = Instant::now();
        loop {
            let seen: i64 = self.probe_count().await?;
            if seen >= expected {
                break;
            }
            running.check_alive(&self.engine)?;
            if wait.elapsed() > CATCH_UP_LIMIT {
                bail!("the engine did not show the last write within {CATCH_UP_LIMIT:?}");
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
        stop.store(true, Ordering::Relaxed);
        let seen = poller.await??;
        let lag = sampler.await??;
        let latencies = match_visibility(&commits, &seen, base, start)?;
        let f = Freshness {
            rate,
            achieved_rate: (commits.len() as f64 * f64::from(changes_per_txn)) / written,
            changes_per_txn,
            latencies,
            lag_bytes: lag
                .into_iter()
                .map(|(t, b)| (t.duration_since(start).as_secs_f64(), b))
                .collect(),
        };
        let mut ms: Vec<f64> = f.latencies.iter().map(|l| l.1).collect();
        self.progress.step(format_args!(
            "  achieved {:.0} changes/s; commit-to-visible p50 {:.1} ms, p99 {:.1} ms",
            f.achieved_rate,
            percentile(&mut ms, 0.5),
            percentile(&mut ms, 0.99)
        ));
        Ok((f, reconcile))
    }

    /// One transaction of `batch_changes` changes made visible by the engine, against
    /// REFRESH MATERIALIZED VIEW CONCURRENTLY of all five views (which the user would need).
    async fn incremental_vs_full(&mut self, r: &mut Results, running: &mut Running) -> Result<()> {
        let n = self.opts.batch_changes;
        self.progress.step(format_args!(
            "incremental vs full: one {n}-change transaction, {} times",
            self.opts.batch_repeats
        ));
        let stmt = self.client.prepare(&dataset::writer_statement(n)).await?;
        let max_id: i64 = self.max_run_id().await?;
        for _ in 0..self.opts.batch_repeats {
            let base: i64 = self.probe_count().await?;
            let id = rand::thread_rng().gen_range(1..max_id.max(2));
            self.client.execute(&stmt, &[&id]).await?;
            let start = Instant::now();
            loop {
                let seen: i64 = self.probe_count().await?;
                if seen > base {
                    break;
                }
                running.check_alive(&self.engine)?;
                tokio::time::sleep(PROBE_EVERY).await;
            }
            let s = start.elapsed().as_secs_f64();
            self.progress.step(format_args!(
                "  visible in the targets {:.1} ms after commit",
                s * 1e3
            ));
            r.batch_seconds.push(s);
        }
        self.progress
            .step("  REFRESH MATERIALIZED VIEW CONCURRENTLY of the same 5 views");
        let start = Instant::now();
        // The materialized views initial_load created.
        let matviews: Vec<String> = self
            .client
            .query(
                "SELECT format('%I.%I', schemaname, matviewname) FROM pg_matviews
                  WHERE matviewname LIKE 'pg\\_mv\\_%' ORDER BY 1",
                &[],
            )
            .await?
            .iter()
            .map(|row| row.get(0))
            .collect();
        if matviews.len() != self.matview_definitions()?.len() {
            bail!("expected one pg_mv_* materialized view per seed view, found {matviews:?}");
        }
        for view in &matviews {
            self.client
                .batch_execute(&format!("REFRESH MATERIALIZED VIEW CONCURRENTLY {view}"))
                .await?;
        }
        r.refresh_seconds = start.elapsed().as_secs_f64();
        self.progress
            .step(format_args!("  full refresh: {:.2} s", r.refresh_seconds));
        Ok(())
    }

    /// pgbench single-row INSERTs, alternating rounds without and with the engine attached.
    async fn writer_overhead(&mut self, r: &mut Results) -> Result<()> {
        let script = self.work_dir.join("insert.sql");
        std::fs::write(&script, dataset::single_insert_script())?;
        let secs = self.opts.overhead_seconds.to_string();
        let args = ["-c", "2", "-j", "2", "-T", &secs, "-f", &path_str(&script)];
        for round in 0..2 {
            self.progress.step(format_args!(
                "writer overhead round {}: pgbench single-row INSERT, no consumer",
                round + 1
            ));
            let tps = parse_tps(&self.pgbench(&args)?)?;
            self.progress.step(format_args!(
                "  {tps:.0} tps; now with deltamv run attached"
            ));
            r.tps_alone.push(tps);
            let running = self.start_caught_up().await?;
            let tps = parse_tps(&self.pgbench(&args)?)?;
            self.progress
                .step(format_args!("  {tps:.0} tps with the engine"));
            r.tps_engine.push(tps);
            self.stop("3 writer overhead", running)?;
        }
        Ok(())
    }

    /// Starts `deltamv run` and waits until it has confirmed everything written so far.
    pub(super) async fn start_caught_up(&mut self) -> Result<Running> {
        let mut running = self.engine.spawn_run()?;
        let target = self.current_lsn().await?;
        let start = Instant::now();
        while self.slot_lsn(SLOT).await? < target {
            running.check_alive(&self.engine)?;
            if start.elapsed() > CATCH_UP_LIMIT {
                bail!("deltamv did not catch up within {CATCH_UP_LIMIT:?}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Ok(running)
    }

    /// Stops `running`, noting its peak RSS as that of the row `what`.
    pub(super) fn stop(&mut self, what: &'static str, running: Running) -> Result<()> {
        let rss = running.stop()?;
        self.note_rss(what, rss);
        Ok(())
    }

    /// Notes `deltamv run`'s peak RSS so far after the row `what`.
    pub(super) fn note_rss(&mut self, what: &'static str, rss: u64) {
        self.peak_run_rss = self.peak_run_rss.max(rss);
        self.rss_steps.push((what, rss));
        self.progress.step(format_args!(
            "  deltamv run's peak RSS so far: {} MB",
            rss >> 20
        ));
    }

    fn conn_args(&self) -> Vec<String> {
        vec![
            "-h".into(),
            "127.0.0.1".into(),
            "-p".into(),
            self.cluster.port().to_string(),
            "-U".into(),
            "postgres".into(),
            "-d".into(),
            "app".into(),
        ]
    }

    fn pgbench(&self, args: &[&str]) -> Result<String> {
        let out = Command::new(self.cluster.bindir().join("pgbench"))
            .arg("-n")
            .args(args)
            .args(self.conn_args())
            .output()
            .context("running pgbench")?;
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        if !out.status.success() {
            bail!(
                "pgbench failed ({}): {stdout}{}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(stdout)
    }

    /// How many probe runs the engine's target shows ([`dataset::PROBE_QUERY`]).
    async fn probe_count(&self) -> Result<i64> {
        Ok(self
            .client
            .query_one(dataset::PROBE_QUERY, &[])
            .await?
            .get(0))
    }

    /// The highest agent_runs id (updates pick existing runs below it).
    async fn max_run_id(&self) -> Result<i64> {
        Ok(self
            .client
            .query_one("SELECT max(id) FROM public.agent_runs", &[])
            .await?
            .get(0))
    }

    async fn changes(&self) -> Result<u64> {
        let n: i64 = self
            .client
            .query_one(dataset::CHANGES_QUERY, &[])
            .await?
            .get(0);
        Ok(n as u64)
    }

    async fn current_lsn(&self) -> Result<u64> {
        let lsn: String = self
            .client
            .query_one("SELECT pg_current_wal_insert_lsn()::text", &[])
            .await?
            .get(0);
        Ok(lsn.parse::<Lsn>()?.0)
    }

    async fn slot_lsn(&self, slot: &str) -> Result<u64> {
        let lsn: Option<String> = self
            .client
            .query_opt(
                "SELECT confirmed_flush_lsn::text FROM pg_replication_slots WHERE slot_name = $1",
                &[&slot],
            )
            .await?
            .with_context(|| format!("replication slot {slot} is missing"))?
            .get(0);
        lsn.map_or(Ok(0), |l| Ok(l.parse::<Lsn>()?.0))
    }
}

/// Polls the probe count every millisecond until stopped; returns (when seen, count) each time
/// the count changed.
async fn poll_probe(url: String, stop: Arc<AtomicBool>) -> Result<Vec<(Instant, i64)>> {
    let client = crate::support::connect(&url).await?;
    let stmt = client.prepare(dataset::PROBE_QUERY).await?;
    let mut seen: Vec<(Instant, i64)> = Vec::new();
    while !stop.load(Ordering::Relaxed) {
        let n: i64 = client.query_one(&stmt, &[]).await?.get(0);
        if seen.last().is_none_or(|l| l.1 != n) {
            seen.push((Instant::now(), n));
        }
        tokio::time::sleep(PROBE_EVERY).await;
    }
    Ok(seen)
}

/// Samples the WAL bytes the engine's slot has not confirmed, until stopped.
async fn sample_lag(url: String, stop: Arc<AtomicBool>) -> Result<Vec<(Instant, f64)>> {
    let client = crate::support::connect(&url).await?;
    let mut out = Vec::new();
    while !stop.load(Ordering::Relaxed) {
        let row = client
            .query_one(
                "SELECT pg_wal_lsn_diff(pg_current_wal_insert_lsn(), confirmed_flush_lsn)::float8
                   FROM pg_replication_slots WHERE slot_name = $1",
                &[&SLOT],
            )
            .await?;
        out.push((Instant::now(), row.get::<_, f64>(0).max(0.0)));
        tokio::time::sleep(SAMPLE_EVERY).await;
    }
    Ok(out)
}

/// For the k-th commit (0-based), the first observation with count >= base + k + 1.
fn match_visibility(
    commits: &[Instant],
    seen: &[(Instant, i64)],
    base: i64,
    start: Instant,
) -> Result<Vec<(f64, f64)>> {
    let mut out = Vec::with_capacity(commits.len());
    let mut j = 0;
    for (k, commit) in commits.iter().enumerate() {
        let need = base + k as i64 + 1;
        while j < seen.len() && seen[j].1 < need {
            j += 1;
        }
        let Some((at, _)) = seen.get(j) else {
            bail!("transaction {k} was never seen in the target (probe count {need})");
        };
        out.push((
            commit.duration_since(start).as_secs_f64(),
            at.saturating_duration_since(*commit).as_secs_f64() * 1e3,
        ));
    }
    Ok(out)
}

/// Keeps at most one point per `step` seconds.
fn thin(points: Vec<(f64, f64)>, step: f64) -> Vec<(f64, f64)> {
    let mut out: Vec<(f64, f64)> = Vec::new();
    let last = points.last().copied();
    for p in points {
        if out.last().is_none_or(|l| p.0 - l.0 >= step) {
            out.push(p);
        }
    }
    if let (Some(l), Some(o)) = (last, out.last()) {
        if o.0 < l.0 {
            out.push(l);
        }
    }
    out
}

fn fraction(lsn: u64, start: u64, end: u64) -> f64 {
    if end <= start {
        return 1.0;
    }
    (lsn.saturating_sub(start) as f64 / (end - start) as f64).min(1.0)
}

fn parse_tps(pgbench_out: &str) -> Result<f64> {
    pgbench_out
        .lines()
        .find_map(|l| l.strip_prefix("tps = "))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .with_context(|| format!("no \"tps = \" line in pgbench's output:\n{pgbench_out}"))
}

/// The query of a `CREATE MATERIALIZED VIEW name AS <query>;` file, comments dropped.
fn view_body(file: &str) -> Result<String> {
    let sql: String = file
        .lines()
        .filter(|l| !l.trim_start().starts_with("--"))
        .collect::<Vec<_>>()
        .join("\n");
    let start = sql.find(" AS").context("no AS in the view file")? + 3;
    let end = sql[start..].find(';').map_or(sql.len(), |i| start + i);
    Ok(sql[start..end].to_string())
}

fn path_str(p: &std::path::Path) -> String {
    p.to_string_lossy().into_owned()
}

pub fn median(values: &mut [f64]) -> f64 {
    percentile(values, 0.5)
}

/// Nearest-rank percentile (0 for no values).
pub fn percentile(values: &mut [f64], p: f64) -> f64 {
    if values.is_empty() {
        return 0.0;
    }
    values.sort_by(f64::total_cmp);
    let rank = ((p * values.len() as f64).ceil() as usize).clamp(1, values.len());
    values[rank - 1]
}
