//! `cargo bench --bench ivm [-- --full | --smoke | --rows N | --backlog N | --seconds S | --out DIR
//! | --catch-up-only | --reconcile-only | --midnight-only | --init-only]`
//!
//! The side-by-side benchmark of deltamv against the alternatives (see `harness/mod.rs`): a quick
//! run (500k + 500k rows) by default, the full run (5M + 5M) with `--full`. Writes
//! `bench/results/<date>-<label>.md` with PNG plots and prints progress on stderr.
//! `--catch-up-only` stops after the catch-up row and prints its figures instead of a report;
//! `--reconcile-only` runs only rows 2 and 2r (freshness without and with a reconcile) and
//! prints their figures with the worst latency of each second; `--midnight-only` runs only row
//! 2m (a midnight under writes), then a reconcile at the new date, and prints the same;
//! `--init-only` runs only `init`, `init --resync` with a reader watching the targets (row 5r)
//! and a reconcile, and prints their times, rows per second and peak RSS.

#[path = "../tests/support/mod.rs"]
mod support;

mod harness;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let opts = harness::Options::from_args(std::env::args().skip(1))?;
    let report = harness::run(&opts).await?;
    println!("{}", report.display());
    Ok(())
}
