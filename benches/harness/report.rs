//! The Markdown report: the eight targets with deltamv's figure, the alternative's from
//! the same run, their ratio and whether the target is met; then the setup and the plots.

use std::fmt::Write as _;
use std::path::PathBuf;

use anyhow::{Context, Result};
use tokio_postgres::Client;

use super::measure::{percentile, Freshness, Results};
use super::plot::{Chart, Series};
use super::Options;
use crate::support::PgCluster;

pub fn build_profile() -> &'static str {
    if cfg!(debug_assertions) {
        "dev (debug assertions, opt-level 1)"
    } else {
        "release"
    }
}

/// Writes `<out>/<date>-<label>.md` and its plots; returns the Markdown file's path.
pub async fn write(
    opts: &Options,
    r: &Results,
    cluster: &PgCluster,
    client: &mut Client,
) -> Result<PathBuf> {
    let date = chrono::Utc::now().format("%Y-%m-%d").to_string();
    let stem = format!("{date}-{}", opts.label);
    let server: String = client.query_one("SELECT version()", &[]).await?.get(0);
    let plots = plots(opts, r, &stem)?;
    let mut md = String::new();
    let w = &mut md;
    let _ = writeln!(w, "# deltamv benchmark: {} run, {date}\n", opts.label);
    let _ = writeln!(
        w,
        "Reproduce: `{}` (see the README). Every comparison below ran in this one run, on the \
         same machine, server and data, one after the other; ratios are the figures to trust, \
         absolute times drift with the machine's load.\n",
        command(opts)
    );
    setup(w, opts, cluster, &server);
    targets(w, r);
    details(w, opts, r);
    let _ = writeln!(w, "\n## Plots\n");
    for (title, file) in &plots {
        let _ = writeln!(w, "![{title}]({file})\n");
    }
    let path = opts.out_dir.join(format!("{stem}.md"));
    std::fs::write(&path, md).with_context(|| format!("writing {}", path.display()))?;
    Ok(path)
}

fn command(opts: &Options) -> String {
    match opts.label.as_str() {
        "full" => "cargo bench --bench ivm -- --full".into(),
        "quick" => "cargo bench --bench ivm".into(),
        "smoke" => "cargo nextest run --test bench_smoke".into(),
        _ => format!(
            "cargo bench --bench ivm -- --rows {} --backlog {}",
            opts.runs_rows, opts.backlog_changes
        ),
    }
}

fn setup(w: &mut String, opts: &Options, cluster: &PgCluster, server: &str) {
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let mem = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .map(|v| v.trim().to_string())
        })
        .unwrap_or_default();
    let _ = writeln!(w, "## Setup\n");
    let _ = writeln!(w, "- Machine: {cores} cores, {mem} memory (shared, noisy).");
    let _ = writeln!(
        w,
        "- Server: {server}; a throwaway cluster (the test harness's, with fsync and \
         full_page_writes off; synchronous_commit on, shared_buffers 1GB, work_mem 64MB) on \
         port {}.",
        cluster.port()
    );
    let _ = writeln!(w, "- deltamv build: {}.", build_profile());
    let _ = writeln!(
        w,
        "- Data: {} agent_runs rows over 40 days (20k agents, 2k workspaces, 50k users) and {} \
         user_activity rows over 100 days (`benches/harness/dataset.rs`); the 5 seed views of \
         `schema/views/`.\n",
        opts.runs_rows, opts.activity_rows
    );
}

/// One target compared with its alternative.
struct Compared<'a> {
    n: u32,
    what: &'a str,
    ours: String,
    theirs: String,
    ratio: f64,
    target: &'a str,
    met: bool,
}

impl Compared<'_> {
    fn write(self, w: &mut String) {
        let _ = writeln!(
            w,
            "| {} | {} | {} | {} | {:.2}x | {} | {} |",
            self.n,
            self.what,
            self.ours,
            self.theirs,
            self.ratio,
            self.target,
            if self.met { "yes" } else { "**no**" }
        );
    }
}

fn targets(w: &mut String, r: &Results) {
    let _ = writeln!(w, "## Targets\n");
    let _ = writeln!(
        w,
        "| # | measure | deltamv | alternative (same run) | ratio | target | met |"
    );
    let _ = writeln!(w, "|---|---|---|---|---|---|---|");
    let c = &r.catch_up;
    let ours = c.changes as f64 / c.engine_seconds;
    let theirs = c.changes as f64 / c.recv_seconds;
    Compared {
        n: 1,
        what: &format!("catch-up: {} changes drained", c.changes),
        ours: format!(
            "{ours:.0} changes/s ({:.1} s; {:.1} us of CPU and {:.2} page faults per change)",
            c.engine_seconds,
            c.cpu_micros_per_change(),
            c.faults_per_change()
        ),
        theirs: format!(
            "pg_recvlogical to /dev/null: {theirs:.0} changes/s ({:.1} s)",
            c.recv_seconds
        ),
        ratio: ours / theirs,
        target: "deltamv/pg_recvlogical >= 0.9",
        met: ours / theirs >= 0.9,
    }
    .write(w);
    for f in &r.freshness {
        let mut ms: Vec<f64> = f.latencies.iter().map(|l| l.1).collect();
        let (p50, p99) = (percentile(&mut ms, 0.5), percentile(&mut ms, 0.99));
        let gated = f.rate <= 2_000;
        let _ = writeln!(
            w,
            "| 2 | freshness at {} changes/s (achieved {:.0}, {} per transaction): commit to visible in the target | p50 {p50:.1} ms, p99 {p99:.1} ms, max {:.1} ms ({} transactions) | | | {} | {} |",
            f.rate,
            f.achieved_rate,
            f.changes_per_txn,
            percentile(&mut ms, 1.0),
            ms.len(),
            if gated { "p50 <= 20 ms, p99 <= 100 ms" } else { "report" },
            match (gated, p50 <= 20.0 && p99 <= 100.0) {
                (false, _) => "-",
                (true, true) => "yes",
                (true, false) => "**no**",
            }
        );
    }
    if let Some(l) = &r.live_reconcile {
        let mut with: Vec<f64> = l.freshness.latencies.iter().map(|l| l.1).collect();
        let _ = writeln!(
            w,
            "| 2r | freshness at {} changes/s while `deltamv reconcile` runs through the engine (from {:.1} s in) | {}; engine paused {}; reconcile {:.1} s (served in {:.0} ms), 0 differing rows | without the reconcile (row 2): {} | | p99 <= 250 ms, pause <= 50 ms | {} |",
            l.freshness.rate,
            l.started_at,
            l.freshness.summary(),
            l.pause_ms
                .map_or("(not logged)".to_string(), |p| format!("{p:.1} ms")),
            l.seconds,
            l.served_ms,
            r.freshness
                .first()
                .map_or_else(|| Freshness::default().summary(), Freshness::summary),
            if percentile(&mut with, 0.99) <= 250.0 && l.pause_ms.is_some_and(|p| p <= 50.0) {
                "yes"
            } else {
                "**no**"
            },
        );
    }
    if let Some(search) = &r.rate_search {
        let probes: Vec<String> = search
            .probes
            .iter()
            .map(|p| {
                format!(
                    "{} (achieved {:.0}) -> p50 {:.0} ms, p99 {:.0} ms",
                    p.rate, p.achieved, p.p50_ms, p.p99_ms
                )
            })
            .collect();
        let _ = writeln!(
            w,
            "| 2s | the highest steady rate with commit-to-visible p99 <= {:.0} ms (searched) | {}{} | | | report (beyond: >= 100k/s) | - |",
            super::rates::SEARCH_P99_MS,
            search
                .best
                .map_or("none: even the first probe missed".to_string(), |b| format!("{b:.0} changes/s")),
            if search.writer_bound {
                format!(" (the writer could not go faster; probes: {})", probes.join(", "))
            } else {
                format!(" (probes: {})", probes.join(", "))
            }
        );
    }
    if let Some(m) = &r.midnight {
        let mut ms: Vec<f64> = m.freshness.latencies.iter().map(|l| l.1).collect();
        let p99 = percentile(&mut ms, 0.99);
        let _ = writeln!(
            w,
            "| 2m | midnight under {} changes/s ({:.1} s into the window): from local midnight until every window has rolled (visible), and the writes around it | rolled in {:.2} s; writes p50 {:.1} ms, p99 {p99:.1} ms, max {:.1} ms | | | <= 2 s, p99 <= 250 ms | {} |",
            m.freshness.rate,
            m.at,
            m.roll_seconds,
            percentile(&mut ms, 0.5),
            percentile(&mut ms, 1.0),
            if m.roll_seconds <= 2.0 && p99 <= 250.0 { "yes" } else { "**no**" }
        );
    }
    let alone = mean(&r.tps_alone);
    let with = mean(&r.tps_engine);
    Compared {
        n: 3,
        what: "writer overhead: pgbench single-row INSERT, 2 clients",
        ours: format!("{with:.0} tps with the engine attached"),
        theirs: format!("{alone:.0} tps with no consumer"),
        ratio: with / alone,
        target: ">= 0.85",
        met: with / alone >= 0.85,
    }
    .write(w);
    let mut batch = r.batch_seconds.clone();
    let inc = percentile(&mut batch, 0.5);
    Compared {
        n: 4,
        what: "a 10k-change transaction, all seed views",
        ours: format!("visible {:.0} ms after commit (median)", inc * 1e3),
        theirs: format!(
            "REFRESH MATERIALIZED VIEW CONCURRENTLY: {:.2} s",
            r.refresh_seconds
        ),
        ratio: r.refresh_seconds / inc,
        target: "refresh/incremental >= 1000",
        met: r.refresh_seconds / inc >= 1000.0,
    }
    .write(w);
    Compared {
        n: 5,
        what: "initial load",
        ours: format!("deltamv init: {:.1} s", r.init_seconds),
        theirs: format!("CREATE MATERIALIZED VIEW: {:.1} s", r.create_mv_seconds),
        ratio: r.init_seconds / r.create_mv_seconds,
        target: "init/create <= 1.0",
        met: r.init_seconds <= r.create_mv_seconds,
    }
    .write(w);
    if let Some(s) = &r.resync {
        let _ = writeln!(
            w,
            "| 5r | `init --resync` after `init`, a reader counting every target's rows meanwhile | {:.1} s, peak RSS {} MB; {} of {} reads saw a target with other row counts | `init`: {:.1} s | {:.2}x | resync/init <= 1.0, no read sees an empty or partial target | {} |",
            s.seconds,
            s.peak_rss >> 20,
            s.partial_polls,
            s.polls,
            r.init_seconds,
            s.seconds / r.init_seconds,
            if s.seconds <= r.init_seconds && s.partial_polls == 0 { "yes" } else { "**no**" }
        );
    }
    for q in &r.queries {
        Compared {
            n: 6,
            what: &format!("query: {}", q.name),
            ours: format!("target: {:.3} ms", q.target_ms),
            theirs: format!("from the base tables: {:.1} ms", q.base_ms),
            ratio: q.base_ms / q.target_ms,
            target: "base/target >= 100",
            met: q.base_ms / q.target_ms >= 100.0,
        }
        .write(w);
    }
    let rss = r.init_peak_rss.max(r.peak_run_rss);
    let _ = writeln!(
        w,
        "| 7 | memory and disk | peak RSS: init {} MB, run {} MB ({}); RocksDB {} MB | | | RSS <= 512 MB | {} |",
        r.init_peak_rss >> 20,
        r.peak_run_rss >> 20,
        r.rss_steps
            .iter()
            .map(|(row, rss)| format!("after {row}: {} MB", rss >> 20))
            .collect::<Vec<_>>()
            .join(", "),
        r.state_bytes >> 20,
        if rss <= 512 << 20 { "yes" } else { "**no**" }
    );
    let _ = writeln!(
        w,
        "| 8 | reconcile of all views (0 differing rows) | {:.1} s after init, {:.1} s at the end | | | <= 30 s | {} |",
        r.reconcile_seconds,
        r.final_reconcile_seconds,
        if r.reconcile_seconds.max(r.final_reconcile_seconds) <= 30.0 { "yes" } else { "**no**" }
    );
}

fn details(w: &mut String, opts: &Options, r: &Results) {
    let _ = writeln!(w, "\n## How each figure was taken\n");
    let c = &r.catch_up;
    let _ = writeln!(
        w,
        "1. Catch-up: pgbench wrote {} changes ({} MB of WAL; 60 inserts, 20 updates, 10 deletes \
         into agent_runs and 10 inserts into user_activity per transaction) while nothing \
         consumed. pg_recvlogical (pgoutput, proto_version 1, the engine's publication, output \
         to /dev/null) and then `deltamv run` each drained it from a slot created before the \
         backlog; time from process start to the slot confirming the end of the backlog. \
         Changes are counted from pg_stat_user_tables.",
        c.changes,
        c.wal_bytes >> 20
    );
    let _ = writeln!(
        w,
        "2. Freshness: one connection wrote at a steady rate for {} s (each transaction: 3/4 new \
         runs, 1/4 updated runs and one probe run into a workspace of its own); another polled \
         the probe workspace's row of `mv_workspace_metrics` every millisecond. Latency is from \
         the writer's commit returning to the first poll showing that transaction.",
        opts.rate_seconds
    );
    let _ = writeln!(
        w,
        "2r. Reconcile under load: the same write and poll loop at the first rate, with `deltamv \
         reconcile` (all views) started a quarter into the window while `deltamv run` streams. \
         A task beside the engine recomputes the views in a temporary slot's snapshot while \
         the engine applies the stream up to its LSN, exports its targets' snapshot there and \
         goes on (README: \"Reconcile and refresh while the engine runs\"): the engine's \
         pause is the slot's creation and the export; what the readers pay besides is the \
         recomputation's share of the machine. Any differing row fails the run."
    );
    let _ = writeln!(
        w,
        "2s. Rate search: the write and poll loop of 2 for {} s per probe, from the first rate, \
         doubling while p99 stays within 1 s (up to {} changes/s), then halving the gap between \
         the last rate that held and the first that did not, twice; a probe whose single writer \
         reaches under 90% of its rate ends the search (it measures the writer).",
        opts.search_seconds, opts.search_max_rate
    );
    let _ = writeln!(
        w,
        "2m. Midnight: last, `deltamv run` restarted on a clock file at the current time, caught \
         up, then the write and poll loop of 2 at the first rate for {} s; half-way the clock \
         file moves to one second past the server zone's next midnight. Rolled: from that \
         moment until `deltamv.progress.targets_date` (written in the midnight's target \
         transaction) shows the new date. The final reconcile compares at that date.",
        opts.rate_seconds
    );
    let _ = writeln!(
        w,
        "3. Writer overhead: pgbench -c 2 -j 2, {} s per round, rounds alternating without the \
         engine (its slot inactive) and with `deltamv run` attached and caught up; tps per round \
         without: {:?}, with: {:?}.",
        opts.overhead_seconds,
        rounded(&r.tps_alone),
        rounded(&r.tps_engine)
    );
    let _ =
        writeln!(
        w,
        "4. Incremental vs full: one transaction of {} changes (as in 2) with the engine caught \
         up, {} times (ms: {:?}); then REFRESH MATERIALIZED VIEW CONCURRENTLY of the 5 views kept \
         as real materialized views (`analytics.pg_mv_*`) on the same data.",
        opts.batch_changes,
        opts.batch_repeats,
        r.batch_seconds.iter().map(|s| (s * 1e3).round()).collect::<Vec<_>>()
    );
    let _ = writeln!(
        w,
        "5. Initial load: CREATE MATERIALIZED VIEW of the 5 views and their unique indexes, then \
         `deltamv init` (publication, slot, state in RocksDB from the slot's exported snapshot, \
         targets written), each from start to end. Loading the dataset itself took {:.1} s.",
        r.load_seconds
    );
    let _ = writeln!(
        w,
        "5r. Resync: `deltamv init --resync` right after `init` (state rebuilt from a fresh \
         snapshot, targets replaced in one transaction), while a second connection counted the \
         rows of one target every {} ms, the targets in turn; nothing writes the sources \
         meanwhile, so every count must equal the one before. The reconcile of row 8 runs after \
         it.",
        super::resync::POLL_EVERY.as_millis()
    );
    let _ = writeln!(
        w,
        "6. Queries: median of {} executions on the target, {} from the base tables (prepared \
         statements, after one warm-up each); both answers compared and equal.",
        opts.query_repeats * 20,
        opts.query_repeats
    );
    let _ = writeln!(
        w,
        "7. Memory: the kernel's peak RSS (VmHWM) of `deltamv init` and of every `deltamv run` \
         process; RocksDB size after init."
    );
    let _ = writeln!(
        w,
        "8. Reconcile: `deltamv reconcile` recomputes every view from its SQL and compares it \
         with the target in one snapshot; run after init and again after all the workloads above."
    );
}

fn plots(opts: &Options, r: &Results, stem: &str) -> Result<Vec<(String, String)>> {
    let mut out = Vec::new();
    let cdf = Chart {
        title: "Commit-to-visible latency (CDF)".into(),
        x_label: "latency (ms)".into(),
        y_label: "fraction of transactions".into(),
        series: r
            .freshness
            .iter()
            .map(|f| {
                let mut ms: Vec<f64> = f.latencies.iter().map(|l| l.1).collect();
                ms.sort_by(f64::total_cmp);
                let n = ms.len() as f64;
                Series {
                    label: format!("{} changes/s", f.rate),
                    points: ms
                        .iter()
                        .enumerate()
                        .map(|(i, v)| (*v, (i + 1) as f64 / n))
                        .collect(),
                }
            })
            .collect(),
    };
    out.push((
        "latency distribution".to_string(),
        cdf.write(&opts.out_dir, &format!("{stem}-latency"))?,
    ));
    let over_time = Chart {
        title: "Freshness over time at steady write rates".into(),
        x_label: "seconds since the writer started".into(),
        y_label: "commit-to-visible (ms)".into(),
        series: r
            .freshness
            .iter()
            .map(|f| Series {
                label: format!("{} changes/s", f.rate),
                points: f.latencies.clone(),
            })
            .chain(r.live_reconcile.iter().map(|l| Series {
                label: format!(
                    "{} changes/s, reconcile from {:.1} s",
                    l.freshness.rate, l.started_at
                ),
                points: l.freshness.latencies.clone(),
            }))
            .collect(),
    };
    out.push((
        "lag over time".to_string(),
        over_time.write(&opts.out_dir, &format!("{stem}-lag"))?,
    ));
    let catch_up = Chart {
        title: format!("Draining a backlog of {} changes", r.catch_up.changes),
        x_label: "seconds".into(),
        y_label: "fraction of the backlog confirmed".into(),
        series: vec![
            Series {
                label: "pg_recvlogical to /dev/null".into(),
                points: r.catch_up.recv_curve.clone(),
            },
            Series {
                label: "deltamv run".into(),
                points: r.catch_up.engine_curve.clone(),
            },
        ],
    };
    let wal = Chart {
        title: "WAL written but not yet confirmed by deltamv's slot".into(),
        x_label: "seconds since the writer started".into(),
        y_label: "KB".into(),
        series: r
            .freshness
            .iter()
            .map(|f| Series {
                label: format!("{} changes/s", f.rate),
                points: f.lag_bytes.iter().map(|&(t, b)| (t, b / 1024.0)).collect(),
            })
            .collect(),
    };
    out.push((
        "WAL lag over time".to_string(),
        wal.write(&opts.out_dir, &format!("{stem}-wal"))?,
    ));
    out.push((
        "throughput over time".to_string(),
        catch_up.write(&opts.out_dir, &format!("{stem}-catchup"))?,
    ));
    Ok(out)
}

fn mean(v: &[f64]) -> f64 {
    if v.is_empty() {
        0.0
    } else {
        v.iter().sum::<f64>() / v.len() as f64
    }
}

fn rounded(v: &[f64]) -> Vec<f64> {
    v.iter().map(|x| x.round()).collect()
}
