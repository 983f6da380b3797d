//! `cargo bench --bench ivm [-- --full | --smoke | --rows N | --backlog N | --seconds S | --out DIR
//! | --catch-up-only]`
//!
//! The side-by-side benchmark of deltamv against the alternatives (see `harness/mod.rs`): a quick
//! run (500k + 500k rows) by default, the full run (5M + 5M) with `--full`. Writes
//! `bench/results/<date>-<label>.md` with PNG plots and prints progress on stderr.
//! `--catch-up-only` stops after the catch-up row and prints its figures instead of a report.

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
