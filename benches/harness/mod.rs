//! The side-by-side benchmark of deltamv against what a user would pick instead.
//!
//! One run starts a throwaway PostgreSQL (the test harness's cluster), loads a synthetic dataset
//! ([`dataset`]), and measures on the same machine, data and server, one after the other:
//! the initial load against `CREATE MATERIALIZED VIEW`, reconcile, dashboard queries against the
//! base tables, draining a change backlog against `pg_recvlogical`, commit-to-visible freshness at
//! steady write rates, a 10k-row change against `REFRESH MATERIALIZED VIEW CONCURRENTLY`, and
//! pgbench writer throughput with and without the engine attached. The machine is shared and
//! noisy, so every figure is paired with its alternative from the same run and reported as a
//! ratio ([`report`]); absolute times drift between runs, ratios much less.
//!
//! The run ends with a reconcile after all workloads: a benchmark of an engine whose targets
//! differ from PostgreSQL's own answer would be meaningless, so any difference fails the run.
//!
//! The same code runs as `cargo bench --bench ivm` (release build, quick or full size) and as the
//! smoke test `tests/bench_smoke.rs` (debug build, a tiny dataset), so the harness never rots.

pub mod dataset;
pub mod engine;
pub mod measure;
pub mod plot;
pub mod rates;
pub mod report;
pub mod resync;

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{bail, Context, Result};

use crate::support::{ClusterOptions, PgCluster};

/// Sizes and durations of one run.
#[derive(Debug, Clone)]
pub struct Options {
    /// "quick", "full", "smoke" or "custom": names the report file.
    pub label: String,
    pub runs_rows: u64,
    pub activity_rows: u64,
    /// Changes in the catch-up backlog (about 100 per transaction).
    pub backlog_changes: u64,
    /// Steady write rates (changes/s) for the freshness runs.
    pub rates: Vec<u32>,
    pub rate_seconds: f64,
    /// The rate search (from the first rate) stops here; each probe writes this long.
    pub search_max_rate: u32,
    pub search_seconds: f64,
    /// Rows changed by the one transaction compared with a full refresh.
    pub batch_changes: u32,
    pub batch_repeats: usize,
    /// Seconds of each pgbench round (two rounds with, two without the engine).
    pub overhead_seconds: u32,
    /// Executions of each query on the base tables (on the targets: 20 times as many).
    pub query_repeats: usize,
    /// Where the report and plots go.
    pub out_dir: PathBuf,
    /// Only load, init and drain the catch-up backlog, then print those figures (no report):
    /// the quick before/after check of a change to the apply path.
    pub catch_up_only: bool,
    /// Only load, init, start the engine caught up and run the reconcile-under-writes row (2r)
    /// at the first rate, then print its figures and the latency per second (no report).
    pub reconcile_only: bool,
    /// Only load, init, then the midnight row (2m) at the first rate and a reconcile at the
    /// new date; prints its figures and the latency per second (no report).
    pub midnight_only: bool,
    /// Only load, `init`, `init --resync` (with a reader watching the targets) and a reconcile;
    /// prints their times, peak RSS and rows per second (no report).
    pub init_only: bool,
}

impl Options {
    /// The first freshness rate (rows 2, 2r and 2m write at it).
    pub fn first_rate(&self) -> u32 {
        self.rates.first().copied().unwrap_or(2_000)
    }

    pub fn quick() -> Options {
        Options {
            label: "quick".into(),
            runs_rows: 500_000,
            activity_rows: 500_000,
            backlog_changes: 200_000,
            rates: vec![2_000, 10_000],
            rate_seconds: 15.0,
            search_max_rate: 128_000,
            search_seconds: 10.0,
            batch_changes: 10_000,
            batch_repeats: 3,
            overhead_seconds: 10,
            query_repeats: 5,
            out_dir: PathBuf::from("bench/results"),
            catch_up_only: false,
            reconcile_only: false,
            midnight_only: false,
            init_only: false,
        }
    }

    pub fn full() -> Options {
        Options {
            label: "full".into(),
            runs_rows: 5_000_000,
            activity_rows: 5_000_000,
            backlog_changes: 1_000_000,
            rate_seconds: 30.0,
            overhead_seconds: 20,
            ..Options::quick()
        }
    }

    /// A few seconds of everything, for the test suite.
    pub fn smoke(out_dir: PathBuf) -> Options {
        Options {
            label: "smoke".into(),
            runs_rows: 3_000,
            activity_rows: 3_000,
            backlog_changes: 2_000,
            rates: vec![500],
            rate_seconds: 2.0,
            search_max_rate: 1_000,
            search_seconds: 1.0,
            batch_changes: 1_000,
            batch_repeats: 2,
            overhead_seconds: 1,
            query_repeats: 2,
            out_dir,
            catch_up_only: false,
            reconcile_only: false,
            midnight_only: false,
            init_only: false,
        }
    }

    /// `--full`, `--smoke`, `--rows N` (both tables), `--backlog N`, `--seconds S` (each steady
    /// rate), `--out DIR`; cargo's own `--bench` flag is ignored.
    pub fn from_args(args: impl IntoIterator<Item = String>) -> Result<Options> {
        let mut opts = Options::quick();
        let mut args = args.into_iter();
        while let Some(arg) = args.next() {
            let mut value = |name: &str| {
                args.next()
                    .with_context(|| format!("{name} needs a value (see benches/ivm.rs)"))
            };
            match arg.as_str() {
                "--bench" => {}
                "--full" => {
                    opts = Options {
                        out_dir: opts.out_dir,
                        ..Options::full()
                    }
                }
                "--smoke" => opts = Options::smoke(opts.out_dir),
                "--rows" => {
                    let rows = parse_count(&value("--rows")?)?;
                    opts.runs_rows = rows;
                    opts.activity_rows = rows;
                    opts.label = "custom".into();
                }
                "--backlog" => opts.backlog_changes = parse_count(&value("--backlog")?)?,
                "--seconds" => {
                    let text = value("--seconds")?;
                    opts.rate_seconds = text
                        .parse()
                        .with_context(|| format!("--seconds {text:?}: expected seconds"))?;
                }
                "--out" => opts.out_dir = PathBuf::from(value("--out")?),
                "--catch-up-only" => opts.catch_up_only = true,
                "--reconcile-only" => opts.reconcile_only = true,
                "--midnight-only" => opts.midnight_only = true,
                "--init-only" => opts.init_only = true,
                other => bail!(
                    "unknown argument {other:?}; expected --full, --smoke, --rows N, \
                     --backlog N, --seconds S, --out DIR, --catch-up-only, --reconcile-only, \
                     --midnight-only or --init-only"
                ),
            }
        }
        Ok(opts)
    }
}

/// `500000`, `500k`, `5M`.
fn parse_count(text: &str) -> Result<u64> {
    let (digits, scale) = match text.char_indices().last() {
        Some((i, 'k' | 'K')) => (&text[..i], 1_000),
        Some((i, 'm' | 'M')) => (&text[..i], 1_000_000),
        _ => (text, 1),
    };
    digits
        .parse::<u64>()
        .map(|n| n * scale)
        .with_context(|| format!("{text:?}: expected a count like 500000, 500k or 5M"))
}

/// Progress lines on stderr, each with the time since the run started.
pub struct Progress {
    start: Instant,
}

impl Progress {
    pub fn new() -> Progress {
        Progress {
            start: Instant::now(),
        }
    }

    pub fn step(&self, what: impl std::fmt::Display) {
        eprintln!("[{:7.1} s] {what}", self.start.elapsed().as_secs_f64());
    }
}

/// Runs the whole benchmark and writes the report; returns the report's path.
pub async fn run(opts: &Options) -> Result<PathBuf> {
    let progress = Progress::new();
    progress.step(format_args!(
        "benchmark ({}): {} agent_runs + {} user_activity rows, build {}",
        opts.label,
        opts.runs_rows,
        opts.activity_rows,
        report::build_profile()
    ));
    let cluster = PgCluster::start(
        // synchronous_commit on, as on a production server: with it off (the test harness's
        // default) a commit reaches the WAL sender only at the WAL writer's next round (up to
        // wal_writer_delay, 200 ms later), which would be measured as the engine's latency.
        ClusterOptions::default()
            .conf("synchronous_commit", "on")
            .conf("shared_buffers", "1GB")
            .conf("work_mem", "64MB")
            .conf("maintenance_work_mem", "512MB")
            .conf("max_wal_size", "16GB")
            .conf("checkpoint_timeout", "30min"),
    )?;
    let url = cluster.create_database("app")?;
    let work = tempfile::tempdir()?;
    let views_dir = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/schema/views"));
    let engine = engine::Engine::new(&url, work.path(), &views_dir);
    let mut bench = measure::Bench {
        opts,
        progress: &progress,
        cluster: &cluster,
        url: url.clone(),
        client: crate::support::connect(&url).await?,
        engine: engine.clone(),
        work_dir: work.path().to_path_buf(),
        views_dir,
        peak_run_rss: 0,
        rss_steps: Vec::new(),
    };
    let show_log = |_: &anyhow::Error| {
        eprintln!("engine log (last lines):\n{}", engine.log_tail(30));
    };
    if opts.catch_up_only {
        let r = bench.catch_up_only().await.inspect_err(show_log)?;
        let c = &r.catch_up;
        println!(
            "catch-up of {} changes: pg_recvlogical {:.2} s ({:.0}/s), deltamv {:.2} s ({:.0}/s, {:.1} us CPU and {:.2} page faults per change), ratio {:.3}x; init {:.1} s; peak RSS of run {} MB",
            c.changes,
            c.recv_seconds,
            c.changes as f64 / c.recv_seconds,
            c.engine_seconds,
            c.changes as f64 / c.engine_seconds,
            c.cpu_micros_per_change(),
            c.faults_per_change(),
            c.recv_seconds / c.engine_seconds,
            r.init_seconds,
            r.peak_run_rss >> 20,
        );
        return keep_engine_log(opts, &engine, "catch-up.engine.log");
    }
    if opts.init_only {
        let r = bench.init_only().await.inspect_err(show_log)?;
        print_init_only(opts, &r);
        return keep_engine_log(opts, &engine, "init.engine.log");
    }
    if opts.reconcile_only {
        let (without, r) = bench.reconcile_only().await.inspect_err(show_log)?;
        print_reconcile_only(&without, &r);
        return keep_engine_log(opts, &engine, "reconcile.engine.log");
    }
    if opts.midnight_only {
        let m = bench.midnight_only().await.inspect_err(show_log)?;
        println!(
            "midnight under {} changes/s ({:.1} s into the window): rolled in {:.2} s; writes {}",
            m.freshness.rate,
            m.at,
            m.roll_seconds,
            m.freshness.summary()
        );
        print_worst_per_second(&m.freshness);
        return keep_engine_log(opts, &engine, "midnight.engine.log");
    }
    let results = bench.all().await.inspect_err(show_log)?;
    std::fs::create_dir_all(&opts.out_dir)
        .with_context(|| format!("creating {}", opts.out_dir.display()))?;
    let path = report::write(opts, &results, &cluster, &mut bench.client).await?;
    // The engine's log next to the report (not committed: bench/results/.gitignore).
    let log = path.with_extension("engine.log");
    std::fs::copy(&engine.log, &log)
        .with_context(|| format!("copying the engine log to {}", log.display()))?;
    progress.step(format_args!("report written: {}", path.display()));
    Ok(path)
}

/// `--init-only`'s figures: `init` beside CREATE MATERIALIZED VIEW, rows per second, and the
/// resync beside `init`.
fn print_init_only(opts: &Options, r: &measure::Results) {
    let rows = (opts.runs_rows + opts.activity_rows) as f64;
    println!(
        "init of {} + {} rows: {:.2} s ({:.0} rows/s), CREATE MATERIALIZED VIEW {:.2} s, ratio {:.2}x; peak RSS {} MB; state {} MB",
        opts.runs_rows,
        opts.activity_rows,
        r.init_seconds,
        rows / r.init_seconds,
        r.create_mv_seconds,
        r.init_seconds / r.create_mv_seconds,
        r.init_peak_rss >> 20,
        r.state_bytes >> 20,
    );
    if let Some(s) = &r.resync {
        println!(
            "init --resync: {:.2} s ({:.0} rows/s, {:.2}x init), peak RSS {} MB; a reader saw other target row counts in {} of {} reads ({} rows in all targets); reconcile after it {:.1} s",
            s.seconds,
            rows / s.seconds,
            s.seconds / r.init_seconds,
            s.peak_rss >> 20,
            s.partial_polls,
            s.polls,
            s.rows,
            r.reconcile_seconds,
        );
    }
}

/// `--reconcile-only`'s figures: rows 2 and 2r, then the worst commit-to-visible latency of each
/// second of 2r's window (which phase of the reconcile the readers pay for).
fn print_reconcile_only(without: &measure::Freshness, r: &measure::LiveReconcile) {
    println!("without a reconcile: {}", without.summary());
    println!(
        "reconcile under {} changes/s: {}; engine paused {} ms; reconcile {:.1} s (served in {:.0} ms, from {:.1} s in)",
        r.freshness.rate,
        r.freshness.summary(),
        r.pause_ms.map_or("(not logged)".into(), |p| format!("{p:.1}")),
        r.seconds,
        r.served_ms,
        r.started_at,
    );
    print_worst_per_second(&r.freshness);
}

/// The worst commit-to-visible latency of each second of a write window.
fn print_worst_per_second(f: &measure::Freshness) {
    let mut worst: Vec<f64> = Vec::new();
    for (at, l) in &f.latencies {
        let s = *at as usize;
        if worst.len() <= s {
            worst.resize(s + 1, 0.0);
        }
        worst[s] = worst[s].max(*l);
    }
    for (s, w) in worst.iter().enumerate() {
        println!("  second {s:3}: worst {w:8.1} ms");
    }
}

/// Copies the engine's log into the output directory as `name` (the only-modes write no report
/// beside which it would go); returns its path.
fn keep_engine_log(opts: &Options, engine: &engine::Engine, name: &str) -> Result<PathBuf> {
    std::fs::create_dir_all(&opts.out_dir)
        .with_context(|| format!("creating {}", opts.out_dir.display()))?;
    let log = opts.out_dir.join(name);
    std::fs::copy(&engine.log, &log)
        .with_context(|| format!("copying the engine log to {}", log.display()))?;
    Ok(log)
}
