//! The benchmark harness on a tiny dataset, so it cannot rot: every measurement runs end to end
//! (including the final reconcile, which fails the run on any difference) and the report holds
//! every target's row and its plots.

mod support;

#[allow(dead_code)]
#[path = "../benches/harness/mod.rs"]
mod harness;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_benchmark_runs_end_to_end_and_reports_every_target() -> anyhow::Result<()> {
    let out = tempfile::tempdir()?;
    let opts = harness::Options::smoke(out.path().to_path_buf());
    let report_path = harness::run(&opts).await?;
    let report = std::fs::read_to_string(&report_path)?;
    for row in [
        "| 1 |", "| 2 |", "| 2r |", "| 2s |", "| 2m |", "| 3 |", "| 4 |", "| 5 |", "| 5r |",
        "| 6 |", "| 7 |", "| 8 |",
    ] {
        assert!(report.contains(row), "no target row {row} in:\n{report}");
    }
    let images = if harness::plot::chromium().is_some() {
        "png"
    } else {
        "svg"
    };
    for plot in ["latency", "lag", "wal", "catchup"] {
        let stem = report_path
            .file_stem()
            .and_then(|s| s.to_str())
            .unwrap_or_default();
        let file = out.path().join(format!("{stem}-{plot}.{images}"));
        assert!(file.is_file(), "missing plot {}", file.display());
        assert!(
            report.contains(&format!("{stem}-{plot}.{images}")),
            "{report}"
        );
    }
    Ok(())
}

#[test]
fn percentiles_are_nearest_rank() {
    let mut v: Vec<f64> = (1..=100).map(f64::from).collect();
    assert_eq!(harness::measure::percentile(&mut v, 0.5), 50.0);
    assert_eq!(harness::measure::percentile(&mut v, 0.99), 99.0);
    assert_eq!(harness::measure::percentile(&mut v, 1.0), 100.0);
}
