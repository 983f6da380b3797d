//! Two rows of issue 15 that need more than one freshness run: the highest steady write rate
//! the engine keeps fresh (p99 commit-to-visible within 1 s), found by search, and a midnight
//! under writes (how long from local midnight until every time window has rolled and is
//! visible, and what it costs the writes around it).

use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use super::engine::Running;
use super::measure::{percentile, Bench, Freshness};

/// The freshness bound of the rate search: p99 commit-to-visible.
pub const SEARCH_P99_MS: f64 = 1_000.0;
/// A probe whose writer reaches less than this share of its rate measures the writer, not the
/// engine: the search stops there.
const WRITER_BOUND: f64 = 0.9;

/// One probe of the search.
#[derive(Debug, Clone)]
pub struct Probe {
    pub rate: u32,
    pub achieved: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
}

impl Probe {
    fn held(&self) -> bool {
        self.p99_ms <= SEARCH_P99_MS
    }
}

#[derive(Debug, Default)]
pub struct RateSearch {
    pub probes: Vec<Probe>,
    /// The highest achieved rate whose p99 held (none if even the first did not).
    pub best: Option<f64>,
    /// The search stopped because the single writer could not reach the asked rate.
    pub writer_bound: bool,
}

#[derive(Debug, Default)]
pub struct Midnight {
    /// The writes around it (midnight falls in the middle of the window).
    pub freshness: Freshness,
    /// Seconds into the write window at which the clock crossed midnight.
    pub at: f64,
    /// From the clock crossing midnight until the targets recorded the new date (every window
    /// rolled, in one transaction).
    pub roll_seconds: f64,
}

impl Bench<'_> {
    /// Doubles the rate from `start` while p99 holds (up to `max`), then bisects between the
    /// last rate that held and the first that did not, twice; each probe writes for
    /// `seconds` and waits until the engine has shown its last write.
    pub async fn rate_search(
        &mut self,
        running: &mut Running,
        start: u32,
        max: u32,
        seconds: f64,
    ) -> Result<RateSearch> {
        self.progress.step(format_args!(
            "rate search: the highest steady rate with p99 <= {SEARCH_P99_MS} ms, from {start} to {max} changes/s"
        ));
        let mut search = RateSearch::default();
        let (mut good, mut bad): (Option<u32>, Option<u32>) = (None, None);
        let mut rate = start;
        let mut bisections = 0;
        loop {
            let probe = self.probe(running, rate, seconds).await?;
            let writer_bound = probe.achieved < WRITER_BOUND * f64::from(rate);
            if probe.held() {
                good = Some(rate);
                search.best = Some(search.best.unwrap_or(0.0).max(probe.achieved));
            } else {
                bad = Some(rate);
            }
            search.probes.push(probe);
            if writer_bound {
                search.writer_bound = true;
                break;
            }
            rate = match (good, bad) {
                (Some(g), None) if g < max => (g * 2).min(max),
                (Some(g), Some(b)) if bisections < 2 && b > g + g / 8 => {
                    bisections += 1;
                    g + (b - g) / 2
                }
                (None, Some(b)) if bisections < 2 && b > 100 => {
                    bisections += 1;
                    b / 2
                }
                _ => break,
            };
        }
        Ok(search)
    }

    async fn probe(&mut self, running: &mut Running, rate: u32, seconds: f64) -> Result<Probe> {
        let (f, _) = self.freshness(rate, running, None, seconds).await?;
        let mut ms: Vec<f64> = f.latencies.iter().map(|l| l.1).collect();
        Ok(Probe {
            rate,
            achieved: f.achieved_rate,
            p50_ms: percentile(&mut ms, 0.5),
            p99_ms: percentile(&mut ms, 0.99),
        })
    }

    /// Writes at `rate` with the engine caught up on a clock file; half-way through the window
    /// the clock moves to one second past the server zone's next midnight. The engine stays on
    /// that clock for the rest of the run (the final reconcile compares at its date).
    pub async fn midnight(&mut self, rate: u32, seconds: f64) -> Result<Midnight> {
        let clock = self.work_dir.join("clock");
        write_clock(&clock, chrono::Utc::now().timestamp_micros())?;
        self.engine = self.engine.with_clock(clock.clone());
        let mut running = self.start_caught_up().await?;
        let next_midnight: f64 = self
            .client
            .query_one(
                "SELECT extract(epoch FROM (current_date + 1)::timestamptz + interval '1 second')::float8",
                &[],
            )
            .await?
            .get(0);
        let at = seconds / 2.0;
        self.progress.step(format_args!(
            "midnight: writes at {rate} changes/s for {seconds} s, the clock crossing midnight {at} s in"
        ));
        let url = self.url.clone();
        let crossing = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs_f64(at)).await;
            write_clock(&clock, (next_midnight * 1e6) as i64)?;
            let crossed = Instant::now();
            let client = crate::support::connect(&url).await?;
            loop {
                let rolled: Option<bool> = client
                    .query_one(
                        "SELECT targets_date = current_date + 1 FROM deltamv.progress",
                        &[],
                    )
                    .await?
                    .get(0);
                if rolled == Some(true) {
                    return anyhow::Ok(crossed.elapsed().as_secs_f64());
                }
                if crossed.elapsed() > Duration::from_secs(1800) {
                    bail!("the targets did not take the new date within 30 minutes");
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        });
        let (freshness, _) = self.freshness(rate, &mut running, None, seconds).await?;
        let roll_seconds = crossing.await.context("the midnight task")??;
        self.stop("2m midnight", running)?;
        let mut ms: Vec<f64> = freshness.latencies.iter().map(|l| l.1).collect();
        self.progress.step(format_args!(
            "  every window rolled {roll_seconds:.2} s after midnight; writes around it p99 {:.1} ms",
            percentile(&mut ms, 0.99)
        ));
        Ok(Midnight {
            freshness,
            at,
            roll_seconds,
        })
    }
}

/// Sets the engine's clock file to `micros` (microseconds since 1970).
fn write_clock(file: &std::path::Path, micros: i64) -> Result<()> {
    let at = chrono::DateTime::from_timestamp_micros(micros).context("a clock out of range")?;
    crate::support::engine::write_clock(file, &at.to_rfc3339())
}
