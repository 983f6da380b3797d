//! The live dashboard in a real headless browser (Debian's chromium): it loads from the engine
//! with no outside resources, shows every view, and its lag chart moves while a writer runs. A
//! screenshot is saved under cargo's target tmp dir (`dashboard.png`).

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use support::engine::{free_local_addr, micros, run_txns, terminate, wait_caught_up, Fixture};
use support::workload::Workload;

const NOW: &str = "2026-11-05T17:00:00Z";

fn chromium() -> Option<PathBuf> {
    ["chromium", "chromium-browser", "google-chrome"]
        .iter()
        .find_map(|name| {
            let out = Command::new("which").arg(name).output().ok()?;
            out.status
                .success()
                .then(|| PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()))
        })
}

/// Runs headless chromium on `url`: the DOM after scripts ran, and optionally a screenshot.
fn browse(browser: &Path, url: &str, screenshot: Option<&Path>) -> Result<String> {
    let profile = tempfile::tempdir()?;
    let mut cmd = Command::new(browser);
    cmd.args([
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--window-size=1100,900",
        "--virtual-time-budget=4000",
    ])
    .arg(format!("--user-data-dir={}", profile.path().display()));
    match screenshot {
        Some(p) => cmd.arg(format!("--screenshot={}", p.display())),
        None => cmd.arg("--dump-dom"),
    };
    let out = cmd.arg(url).output().context("running chromium")?;
    if !out.status.success() {
        bail!("chromium failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn attr(dom: &str, id: &str, name: &str) -> Option<String> {
    let tag_start = dom.find(&format!("id=\"{id}\""))?;
    let tag = &dom[dom[..tag_start].rfind('<')?..];
    let tag = &tag[..tag.find('>')?];
    let key = format!("{name}=\"");
    let at = tag.find(&key)? + key.len();
    Some(tag[at..at + tag[at..].find('"')?].to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_shows_every_view_and_a_moving_lag_chart() -> Result<()> {
    let browser = chromium()
        .context("chromium is needed for this test: scripts/install-deps.sh installs it")?;
    let Fixture {
        cluster: _cluster,
        client,
        env,
        url,
    } = Fixture::start(None, Path::new("schema/views"), Some(NOW)).await?;
    let (_, addr) = free_local_addr()?;
    let mut engine = env.spawn(
        &["run"],
        &[("DELTAMV_HTTP", &addr), ("DELTAMV_HTTP_SAMPLE_MS", "300")],
    )?;
    wait_caught_up(&client, &mut engine, &env, Duration::from_secs(60)).await?;
    let writer = tokio::spawn(async move {
        let c = support::connect(&url).await?;
        let mut w = Workload::new(77, micros(NOW));
        w.allow_truncate = false;
        run_txns(&c, &mut w, 400).await
    });
    let page = format!("http://{addr}/");
    tokio::time::sleep(Duration::from_secs(2)).await;
    let first = tokio::task::spawn_blocking({
        let (b, p) = (browser.clone(), page.clone());
        move || browse(&b, &p, None)
    })
    .await??;
    for view in [
        "mv_active_users",
        "mv_agent_performance",
        "mv_workspace_metrics",
        "mv_top_agents",
        "mv_error_summary",
    ] {
        assert!(
            first.contains(&format!("analytics.{view}")),
            "the table lists {view}:\n{first}"
        );
    }
    assert!(
        first.contains("id=\"summary\">5 views, 0 not ok"),
        "the page reached the engine:\n{first}"
    );
    let points = |dom: &str| {
        attr(dom, "lag", "data-points")
            .and_then(|p| p.parse::<usize>().ok())
            .unwrap_or(0)
    };
    tokio::time::sleep(Duration::from_secs(2)).await;
    let second = tokio::task::spawn_blocking({
        let (b, p) = (browser.clone(), page.clone());
        move || browse(&b, &p, None)
    })
    .await??;
    assert!(points(&first) > 0, "the lag chart has points");
    assert!(
        points(&second) > points(&first),
        "the lag chart moves: {} -> {}",
        points(&first),
        points(&second)
    );
    let shot = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("dashboard.png");
    tokio::task::spawn_blocking({
        let shot = shot.clone();
        move || browse(&browser, &page, Some(&shot))
    })
    .await??;
    assert!(
        std::fs::metadata(&shot)?.len() > 10_000,
        "a screenshot was saved at {}",
        shot.display()
    );
    eprintln!("dashboard screenshot: {}", shot.display());
    writer.await??;
    terminate(&mut engine, Duration::from_secs(10))?;
    Ok(())
}
