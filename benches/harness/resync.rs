//! Row 5r: `deltamv init --resync` beside `init`, with a reader watching the targets.
//!
//! A resync is the repair for a lost slot or an untrusted state: it rebuilds the state from a
//! fresh snapshot while dashboards keep reading. Two things matter to a user: that it takes no
//! longer than the first `init`, and that a reader never sees a target empty or half filled
//! meanwhile. So while it runs, a second connection counts the targets' rows, one target after
//! the other, again and again; nothing writes the sources, so every count must equal that
//! target's count before the resync.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use tokio_postgres::Client;

use super::measure::Bench;

/// The reader's pause between two counts, each of one target's rows, the targets in turn.
/// Counting every target at once, back to back (every 20 ms), slowed the resync it watched
/// from 19.3 to 26.9 s at 1M + 1M rows on this 2-core machine. The replacement is one
/// transaction, so a count in turn sees a partial target as surely as a count of all at once.
pub const POLL_EVERY: Duration = Duration::from_millis(250);

#[derive(Debug, Clone, Default)]
pub struct Resync {
    pub seconds: f64,
    pub peak_rss: u64,
    /// Counts of a target's rows the reader made while the resync ran.
    pub polls: usize,
    /// Counts that differed from that target's count before the resync.
    pub partial_polls: usize,
    /// Rows of all targets together, before the resync.
    pub rows: i64,
}

impl Bench<'_> {
    /// Runs `deltamv init --resync` with a reader counting the targets' rows meanwhile.
    pub(super) async fn resync(&mut self) -> Result<Resync> {
        self.progress
            .step("initial load again: deltamv init --resync, a reader counting target rows");
        let queries = count_queries(&self.views_dir)?;
        let mut before = Vec::with_capacity(queries.len());
        for q in &queries {
            before.push(count(&self.client, q).await?);
        }
        let stop = Arc::new(AtomicBool::new(false));
        let reader = tokio::spawn(poll_counts(self.url.clone(), queries, stop.clone()));
        let engine = self.engine.clone();
        let finished = tokio::task::spawn_blocking(move || engine.finish(&["init", "--resync"]))
            .await
            .context("init --resync: the timing thread")??;
        stop.store(true, Ordering::Relaxed);
        let seen = reader.await.context("the target reader")??;
        if finished.code != 0 {
            bail!(
                "deltamv init --resync failed ({}); log:\n{}",
                finished.code,
                self.engine.log_tail(30)
            );
        }
        let r = Resync {
            seconds: finished.seconds,
            peak_rss: finished.peak_rss_bytes,
            polls: seen.len(),
            partial_polls: seen.iter().filter(|(t, n)| *n != before[*t]).count(),
            rows: before.iter().sum(),
        };
        self.progress.step(format_args!(
            "  deltamv init --resync: {:.2} s, peak RSS {} MB; {} of {} reads saw other row counts",
            r.seconds,
            r.peak_rss >> 20,
            r.partial_polls,
            r.polls
        ));
        Ok(r)
    }
}

/// A query counting the rows of each target (the views' files name them).
fn count_queries(views_dir: &std::path::Path) -> Result<Vec<String>> {
    let mut names: Vec<String> = std::fs::read_dir(views_dir)
        .with_context(|| format!("reading {}", views_dir.display()))?
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            name.strip_suffix(".sql").map(str::to_owned)
        })
        .collect();
    names.sort();
    Ok(names
        .iter()
        .map(|n| format!("SELECT count(*) FROM analytics.{n}"))
        .collect())
}

async fn count(client: &Client, sql: &str) -> Result<i64> {
    Ok(client.query_one(sql, &[]).await?.get(0))
}

/// Counts one target per read, in turn, until stopped: (target, rows) per read.
async fn poll_counts(
    url: String,
    queries: Vec<String>,
    stop: Arc<AtomicBool>,
) -> Result<Vec<(usize, i64)>> {
    let client = crate::support::connect(&url).await?;
    let mut seen = Vec::new();
    for t in (0..queries.len()).cycle() {
        if stop.load(Ordering::Relaxed) {
            break;
        }
        seen.push((t, count(&client, &queries[t]).await?));
        tokio::time::sleep(POLL_EVERY).await;
    }
    Ok(seen)
}
