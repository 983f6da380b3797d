//! The command line: `init`, `run`, `reconcile`, `status`.
//!
//! This is the edge of the program: typed errors from the library become one-line diagnoses
//! (anyhow), and exit codes carry meaning (reconcile exits 1 when rows differ).

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use tokio::sync::watch;

use crate::clock::Clock;
use crate::config::{
    machine_cores, Config, DEFAULT_BATCH_MAX_MS, DEFAULT_BATCH_MAX_ROWS, DEFAULT_CHECKPOINT_MS,
    DEFAULT_PUBLICATION, DEFAULT_RECONCILE_WAIT_MS, DEFAULT_RESYNC_MEMORY_MB, DEFAULT_SLOT,
};
use crate::{engine, pgtime, reconcile, setup, status, submit};

/// Prints a line to stdout, ignoring a closed pipe (`deltamv reconcile | head`).
macro_rules! outln {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout(), $($arg)*);
    }};
}

#[derive(Parser, Debug)]
#[command(
    name = "deltamv",
    version,
    about = "Keeps PostgreSQL summary tables exact and fresh from logical replication"
)]
pub struct Cli {
    /// PostgreSQL connection URL.
    #[arg(
        long,
        env = "DATABASE_URL",
        hide_env_values = true,
        global = true,
        default_value = ""
    )]
    database_url: String,
    /// Directory of the RocksDB state.
    #[arg(
        long,
        env = "DELTAMV_STATE_DIR",
        global = true,
        default_value = "./state"
    )]
    state_dir: PathBuf,
    /// Directory of the view definitions (*.sql).
    #[arg(
        long,
        env = "DELTAMV_VIEWS",
        global = true,
        default_value = "schema/views"
    )]
    views: PathBuf,
    /// Logical replication slot name.
    #[arg(long, env = "DELTAMV_SLOT", global = true, default_value = DEFAULT_SLOT)]
    slot: String,
    /// Publication name.
    #[arg(long, env = "DELTAMV_PUBLICATION", global = true, default_value = DEFAULT_PUBLICATION)]
    publication: String,
    /// How often `run` makes its state durable and acknowledges the slot up to it, in
    /// milliseconds: the most a crash makes it replay.
    #[arg(long, env = "DELTAMV_CHECKPOINT_MS", global = true, default_value_t = DEFAULT_CHECKPOINT_MS)]
    checkpoint_ms: u64,
    /// How long a reconcile in `run` may wait (the views go on meanwhile) for write transactions
    /// that were open when it started, in milliseconds; past it the request fails naming the
    /// oldest.
    #[arg(long, env = "DELTAMV_RECONCILE_WAIT_MS", global = true, default_value_t = DEFAULT_RECONCILE_WAIT_MS)]
    reconcile_wait_ms: u64,
    /// How many threads fold the views of a batch in `init` and `run` (each view on one thread
    /// at a time); default: the machine's cores.
    #[arg(long, env = "DELTAMV_FOLD_THREADS", global = true)]
    fold_threads: Option<usize>,
    /// The largest target (its table on disk, in MB) that `init --resync` compares with its
    /// new rows in memory, writing only the rows that differ; a larger one is compared in
    /// PostgreSQL through a temporary table, which costs about what copying it in does.
    #[arg(long, env = "DELTAMV_RESYNC_MEMORY_MB", global = true, default_value_t = DEFAULT_RESYNC_MEMORY_MB)]
    resync_memory_mb: u64,
    /// Log as JSON lines.
    #[arg(long, global = true)]
    log_json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Create publication, slot, targets and bookkeeping, and load the initial snapshot (idempotent).
    Init {
        /// Rebuild state from a fresh snapshot even if already initialized.
        #[arg(long)]
        resync: bool,
        /// Fail instead of keeping a view the planner cannot maintain as a materialized view
        /// refreshed in full (require_incremental = true for every view).
        #[arg(long)]
        require_incremental: bool,
    },
    /// Stream changes and keep every target fresh until SIGINT/SIGTERM.
    Run {
        /// Address of the HTTP endpoints (/metrics, /healthz, /readyz), or "off".
        #[arg(long, env = "DELTAMV_HTTP", default_value = "127.0.0.1:9187")]
        http: String,
    },
    /// Recompute views from their SQL and compare with the targets; exit 1 when rows differ.
    Reconcile {
        #[arg(long)]
        view: Option<String>,
        /// Apply the difference in one transaction.
        #[arg(long)]
        repair: bool,
    },
    /// Recompute views from their SQL and apply the difference in one transaction (readers are
    /// never blocked); recorded in deltamv.refresh_history.
    Refresh {
        #[arg(long, conflicts_with = "all")]
        view: Option<String>,
        #[arg(long)]
        all: bool,
    },
    /// Exit 1 when a view is failed or staler than allowed (for cron, CI and load balancers).
    Check {
        /// e.g. 30s, 500ms, 5m; default: each view's freshness_target_s from deltamv.toml.
        #[arg(long)]
        max_lag: Option<String>,
        #[arg(long)]
        view: Option<String>,
    },
    /// Print a view's maintenance plan as an indented tree.
    Explain {
        #[arg(long)]
        view: String,
    },
    /// Per view: rows, applied LSN, lag, state.
    Status {
        #[arg(long)]
        json: bool,
    },
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    init_tracing(cli.log_json);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(2);
        }
    };
    match runtime.block_on(dispatch(cli)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn init_tracing(json: bool) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("DELTAMV_LOG")
        .unwrap_or_else(|_| "info,tokio_postgres=warn".into());
    use std::io::IsTerminal;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
}

fn config(cli: &Cli) -> Config {
    Config {
        database_url: cli.database_url.clone(),
        state_dir: cli.state_dir.clone(),
        views_dir: cli.views.clone(),
        slot: cli.slot.clone(),
        publication: cli.publication.clone(),
        clock_file: std::env::var_os("DELTAMV_CLOCK_FILE").map(PathBuf::from),
        batch_max_rows: DEFAULT_BATCH_MAX_ROWS,
        batch_max_ms: DEFAULT_BATCH_MAX_MS,
        checkpoint_ms: cli.checkpoint_ms,
        reconcile_wait_ms: cli.reconcile_wait_ms,
        fold_threads: cli.fold_threads.unwrap_or_else(machine_cores),
        resync_memory_mb: cli.resync_memory_mb,
    }
}

async fn dispatch(cli: Cli) -> Result<ExitCode> {
    let cfg = config(&cli);
    match cli.command {
        Command::Init {
            resync,
            require_incremental,
        } => {
            let mut prepared = setup::prepare(&cfg).await?;
            if require_incremental {
                prepared.settings.require_incremental_everywhere();
            }
            let clock = Clock::new(cfg.clock_file.clone());
            let (_state, _targets, lsn) = setup::init(
                &mut prepared,
                &cfg,
                &clock,
                if resync {
                    setup::Start::Resync
                } else {
                    setup::Start::Init
                },
            )
            .await?;
            for fb in &prepared.fallbacks {
                outln!(
                    "fallback: {}",
                    setup::fallback_notice(fb, prepared.settings.view(&fb.name.to_string()))
                );
            }
            outln!(
                "initialized: {} views at LSN {} ({} incremental, {} fallback)",
                prepared.plans.len() + prepared.fallbacks.len(),
                lsn,
                prepared.plans.len(),
                prepared.fallbacks.len()
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Run { http } => {
            let (tx, rx) = watch::channel(false);
            let metrics = std::sync::Arc::new(crate::monitor::Metrics::default());
            if http != "off" {
                let ctx = crate::monitor::http::Context {
                    db: crate::pg::DbTarget::parse(&cfg.database_url)?,
                    settings: crate::settings::Settings::load(&cfg.views_dir)?,
                    metrics: metrics.clone(),
                    token: std::env::var("DELTAMV_HTTP_TOKEN")
                        .ok()
                        .filter(|t| !t.is_empty()),
                    sample_every: std::time::Duration::from_millis(
                        std::env::var("DELTAMV_HTTP_SAMPLE_MS")
                            .ok()
                            .and_then(|v| v.parse().ok())
                            .unwrap_or(5000),
                    ),
                };
                let bound = crate::monitor::http::serve(&http, ctx, rx.clone())
                    .await
                    .with_context(|| {
                        format!("cannot listen on {http} (set --http ADDR or DELTAMV_HTTP=off)")
                    })?;
                tracing::info!(%bound, dashboard = %format!("http://{bound}/"), "serving the live dashboard, /metrics, /healthz and /readyz");
            }
            tokio::spawn(async move {
                wait_for_signal().await;
                tracing::info!("shutting down");
                let _ = tx.send(true);
            });
            engine::run(&cfg, metrics, rx).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Reconcile { view, repair } => reconcile_cmd(&cfg, view.as_deref(), repair).await,
        Command::Refresh { view, all } => {
            if view.is_none() && !all {
                anyhow::bail!("say which views: --view NAME or --all");
            }
            refresh_cmd(&cfg, view.as_deref()).await
        }
        Command::Check { max_lag, view } => {
            let max = max_lag
                .as_deref()
                .map(crate::settings::parse_duration)
                .transpose()
                .map_err(|e| anyhow::anyhow!("--max-lag: {e}"))?;
            let prepared = setup::prepare(&cfg).await?;
            let views = all_views(&prepared, view.as_deref())?;
            let statuses = status::collect(&prepared.client, &views).await?;
            let stale = status::stale(&statuses, &|name| {
                max.unwrap_or_else(|| prepared.settings.view(name).freshness_target)
            });
            for line in &stale {
                outln!("stale {line}");
            }
            if stale.is_empty() {
                outln!("fresh: {} views", statuses.len());
                Ok(ExitCode::SUCCESS)
            } else {
                Ok(ExitCode::from(1))
            }
        }
        Command::Explain { view } => {
            let prepared = setup::prepare(&cfg).await?;
            let text = crate::plan::explain::explain(&prepared.plans, &prepared.fallbacks, &view)
                .with_context(|| {
                format!("no view named {view:?} in {}", cfg.views_dir.display())
            })?;
            outln!("{text}");
            Ok(ExitCode::SUCCESS)
        }
        Command::Status { json } => {
            let prepared = setup::prepare(&cfg).await?;
            let views = all_views(&prepared, None)?;
            let statuses = status::collect(&prepared.client, &views).await?;
            if json {
                outln!(
                    "{}",
                    serde_json::to_string_pretty(&statuses).context("encoding status")?
                );
            } else {
                outln!("{}", status::render(&statuses).trim_end());
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// Prints the first 50 differing rows of a view.
fn print_diffs(diffs: &[reconcile::RowDiff]) {
    for d in diffs.iter().take(50) {
        outln!(
            "  key {:?}\n    expected {:?}\n    actual   {:?}",
            d.key,
            d.expected,
            d.actual
        );
    }
}

/// Asks the running engine for `kind` on `only` (or all views) and prints the result like
/// the offline commands do; exit 1 when rows were left differing.
async fn through_engine(
    client: &tokio_postgres::Client,
    kind: &str,
    only: Option<&str>,
    repair: bool,
) -> Result<ExitCode> {
    let kind = match only {
        Some(_) => kind.to_string(),
        None => format!("{kind} all"),
    };
    let id = submit::submit(client, &kind, only, repair).await?;
    let done = submit::wait(client, id, &format!("{kind} through the running engine")).await?;
    for v in &done.views {
        match (v.expected_rows, v.target_rows) {
            (Some(expected), Some(target)) if kind.starts_with("reconcile") => outln!(
                "{}: {expected} rows expected, {target} in target, {} differing",
                v.view,
                v.differing
            ),
            (Some(_), Some(_)) => outln!(
                "{}: recomputed at one LSN, {} rows changed",
                v.view,
                v.repaired
            ),
            _ if v.error.is_none() => outln!("{}: refreshed concurrently", v.view),
            _ => {}
        }
        print_diffs(&v.rows);
        if v.repaired > 0 && kind.starts_with("reconcile") {
            outln!("  repaired {} rows", v.repaired);
        }
        if v.state_differing > 0 {
            outln!(
                "  the engine's state differs too, in {} rows: `deltamv init --resync` rebuilds it",
                v.state_differing
            );
        }
        if let Some(e) = &v.error {
            outln!("  error: {e}");
        }
    }
    match done.status.as_str() {
        "failed" => anyhow::bail!(
            "request {} failed after {:.0} ms: {}",
            done.id,
            done.duration_ms,
            done.error.as_deref().unwrap_or("no error recorded")
        ),
        "differences" => Ok(ExitCode::from(1)),
        _ => Ok(ExitCode::SUCCESS),
    }
}

async fn reconcile_cmd(cfg: &Config, only: Option<&str>, repair: bool) -> Result<ExitCode> {
    let prepared = setup::prepare(cfg).await?;
    if submit::engine_running(&prepared.client, &cfg.slot).await? {
        return through_engine(&prepared.client, "reconcile", only, repair).await;
    }
    let plans: Vec<_> = prepared
        .plans
        .iter()
        .filter(|p| only.is_none_or(|v| p.name.matches(v)))
        .collect();
    if plans.is_empty() {
        anyhow::bail!(
            "no view named {:?} in {}",
            only.unwrap_or(""),
            cfg.views_dir.display()
        );
    }
    let today = injected_today(cfg, &prepared.tz);
    let mut differing = 0usize;
    for plan in plans {
        let report = reconcile::compare(&prepared.client, plan, today.as_deref()).await?;
        outln!(
            "{}: {} rows expected, {} in target, {} differing",
            report.view,
            report.expected_rows,
            report.actual_rows,
            report.diffs.len()
        );
        print_diffs(&report.diffs);
        if repair && !report.diffs.is_empty() {
            let n = reconcile::repair(&prepared.client, plan, &report, today.as_deref()).await?;
            outln!("  repaired {n} rows");
        } else {
            differing += report.diffs.len();
        }
    }
    Ok(if differing > 0 {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

/// The engine's CURRENT_DATE when it runs on an injected clock (recomputations must use it too).
fn injected_today(cfg: &Config, tz: &crate::pgtime::PgTimeZone) -> Option<String> {
    cfg.clock_file
        .as_ref()
        .map(|_| pgtime::format_date(Clock::new(cfg.clock_file.clone()).today(tz)))
}

async fn refresh_cmd(cfg: &Config, only: Option<&str>) -> Result<ExitCode> {
    let prepared = setup::prepare(cfg).await?;
    if submit::engine_running(&prepared.client, &cfg.slot).await? {
        return through_engine(&prepared.client, "refresh", only, true).await;
    }
    let today = injected_today(cfg, &prepared.tz);
    let mut matched = false;
    for fb in prepared
        .fallbacks
        .iter()
        .filter(|p| only.is_none_or(|v| p.name.matches(v)))
    {
        matched = true;
        let started = std::time::Instant::now();
        crate::refresher::refresh_now(&prepared.client, fb)
            .await
            .map_err(|e| anyhow::anyhow!("refreshing {}: {e}", fb.name))?;
        outln!(
            "{}: refreshed concurrently in {:.0} ms",
            fb.name,
            started.elapsed().as_secs_f64() * 1000.0
        );
    }
    for plan in prepared
        .plans
        .iter()
        .filter(|p| only.is_none_or(|v| p.name.matches(v)))
    {
        matched = true;
        let started = std::time::Instant::now();
        let n = reconcile::offline::recompute(&prepared.client, plan, today.as_deref()).await?;
        outln!(
            "{}: recomputed in {:.0} ms, {n} rows changed",
            plan.name,
            started.elapsed().as_secs_f64() * 1000.0
        );
    }
    if !matched {
        anyhow::bail!(
            "no view named {:?} in {}",
            only.unwrap_or(""),
            cfg.views_dir.display()
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// Every maintained view (or just `only`) with its mode.
fn all_views(
    prepared: &setup::Prepared,
    only: Option<&str>,
) -> Result<Vec<(crate::pg::QualifiedName, &'static str)>> {
    let mut views: Vec<(crate::pg::QualifiedName, &'static str)> = prepared
        .plans
        .iter()
        .map(|p| (p.name.clone(), "incremental"))
        .collect();
    views.extend(
        prepared
            .fallbacks
            .iter()
            .map(|f| (f.name.clone(), "fallback")),
    );
    if let Some(v) = only {
        views.retain(|(n, _)| n.matches(v));
        if views.is_empty() {
            anyhow::bail!("no view named {v:?}");
        }
    }
    Ok(views)
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
