//! The live dashboard in a real headless browser (Debian's chromium): it loads from the engine
//! with no outside resources, shows every view, and its lag chart moves while a writer runs: one
//! line per view with a legend, time labels on the axis, and each view's freshness target as a
//! line. Screenshots are saved under cargo's target tmp dir (`dashboard.png` at desktop size,
//! `dashboard-phone.png` at a phone's).

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use support::engine::{
    free_local_addr, micros, run_txns, seed_views_with, terminate, wait_caught_up, Fixture,
    SEED_VIEWS,
};
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

const DESKTOP: &str = "1100,900";
/// A phone's viewport in CSS pixels (portrait).
const PHONE: &str = "390,844";

/// Runs headless chromium on `url` in a window of `size` ("w,h"): the DOM after scripts ran,
/// and optionally a screenshot.
fn browse(browser: &Path, url: &str, size: &str, screenshot: Option<&Path>) -> Result<String> {
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
        "--hide-scrollbars",
        "--virtual-time-budget=4000",
    ])
    .arg(format!("--window-size={size}"))
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

/// The element with `id` and its content (`<svg id="lag" ...>...</svg>`), as chromium dumps it.
fn element<'a>(dom: &'a str, tag: &str, id: &str) -> Option<&'a str> {
    let at = dom.find(&format!(" id=\"{id}\""))?;
    let start = dom[..at].rfind('<')?;
    if !dom[start + 1..].starts_with(tag) {
        return None;
    }
    let end = start + dom[start..].find(&format!("</{tag}>"))?;
    Some(&dom[start..end])
}

/// The opening tags of `<tag ...>` elements in `html` (attributes only).
fn tags<'a>(html: &'a str, tag: &str) -> Vec<&'a str> {
    let open = format!("<{tag} ");
    html.match_indices(&open)
        .filter_map(|(at, _)| html[at..].find('>').map(|end| &html[at..at + end]))
        .collect()
}

/// The text of elements whose opening tag contains `class="<class>"`.
fn texts<'a>(html: &'a str, class: &str) -> Vec<&'a str> {
    let key = format!("class=\"{class}\"");
    html.match_indices(&key)
        .filter_map(|(at, _)| {
            let rest = &html[at..];
            let body = &rest[rest.find('>')? + 1..];
            Some(&body[..body.find('<')?])
        })
        .collect()
}

fn attr_of(tag: &str, name: &str) -> Option<String> {
    let key = format!(" {name}=\"");
    let at = tag.find(&key)? + key.len();
    Some(tag[at..at + tag[at..].find('"')?].to_string())
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
    // One view with its own freshness target, the others the default (60 s).
    let views = seed_views_with("[views.\"analytics.mv_top_agents\"]\nfreshness_target_s = 20\n")?;
    let Fixture {
        cluster: _cluster,
        client,
        env,
        url,
    } = Fixture::start(None, views.path(), Some(NOW)).await?;
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
        move || browse(&b, &p, DESKTOP, None)
    })
    .await??;
    // (Names may wrap after their schema: <wbr>.)
    let table = element(&first, "tbody", "views")
        .context("the view table")?
        .replace("<wbr>", "");
    for view in SEED_VIEWS {
        assert!(
            table.contains(&format!(">{view}<")),
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
        move || browse(&b, &p, DESKTOP, None)
    })
    .await??;
    assert!(points(&first) > 0, "the lag chart has points");
    assert!(
        points(&second) > points(&first),
        "the lag chart moves: {} -> {}",
        points(&first),
        points(&second)
    );
    check_charts(&second)?;
    for (file, size) in [("dashboard.png", DESKTOP), ("dashboard-phone.png", PHONE)] {
        let shot = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(file);
        let dom = tokio::task::spawn_blocking({
            let (b, p, shot) = (browser.clone(), page.clone(), shot.clone());
            move || {
                browse(&b, &p, size, Some(&shot))?;
                browse(&b, &p, size, None)
            }
        })
        .await??;
        check_charts(&dom).with_context(|| format!("at window size {size}"))?;
        assert!(
            std::fs::metadata(&shot)?.len() > 10_000,
            "a screenshot was saved at {}",
            shot.display()
        );
        eprintln!("dashboard screenshot ({size}): {}", shot.display());
    }
    writer.await??;
    terminate(&mut engine, Duration::from_secs(10))?;
    Ok(())
}

/// The lag chart: time labels, one drawn line and one legend entry per view, and each view's
/// freshness target as a line at its own value; the throughput chart has time labels too.
fn check_charts(dom: &str) -> Result<()> {
    let lag = element(dom, "svg", "lag").context("the lag chart")?;
    let rate = element(dom, "svg", "rate").context("the throughput chart")?;
    for (name, svg) in [("lag", lag), ("throughput", rate)] {
        let labels = texts(svg, "xtick");
        anyhow::ensure!(
            labels.len() >= 2,
            "the {name} chart has time labels: {labels:?}\n{svg}"
        );
        for l in &labels {
            let parts: Vec<&str> = l.split(':').collect();
            anyhow::ensure!(
                (2..=3).contains(&parts.len())
                    && parts
                        .iter()
                        .all(|p| p.len() == 2 && p.chars().all(|c| c.is_ascii_digit())),
                "{name} time label {l:?} is a clock time (HH:MM or HH:MM:SS)"
            );
        }
    }
    let lines = tags(lag, "polyline");
    let drawn: Vec<String> = lines
        .iter()
        .filter(|t| attr_of(t, "points").is_some_and(|p| p.split(' ').count() >= 2))
        .filter_map(|t| attr_of(t, "data-view"))
        .collect();
    anyhow::ensure!(
        lines.len() == SEED_VIEWS.len() && SEED_VIEWS.iter().all(|v| drawn.iter().any(|d| d == v)),
        "one drawn line per view: {drawn:?}\n{lag}"
    );
    let legend = element(dom, "div", "lag-legend").context("the legend")?;
    let keys: Vec<String> = tags(legend, "span")
        .iter()
        .filter_map(|t| attr_of(t, "data-view"))
        .collect();
    anyhow::ensure!(
        keys.len() == SEED_VIEWS.len() && SEED_VIEWS.iter().all(|v| keys.iter().any(|k| k == v)),
        "a legend entry per view: {keys:?}\n{legend}"
    );
    anyhow::ensure!(
        legend.contains("freshness target"),
        "the legend explains the target lines:\n{legend}"
    );
    let targets: Vec<(String, String, String)> = tags(lag, "line")
        .iter()
        .filter(|t| t.contains("class=\"target\""))
        .filter_map(|t| {
            Some((
                attr_of(t, "data-view")?,
                attr_of(t, "data-target")?,
                attr_of(t, "y1")?,
            ))
        })
        .collect();
    for v in SEED_VIEWS {
        let want = if v == "analytics.mv_top_agents" {
            "20"
        } else {
            "60"
        };
        anyhow::ensure!(
            targets
                .iter()
                .any(|(view, target, _)| view == v && target == want),
            "{v} has its freshness target ({want} s) as a line: {targets:?}"
        );
    }
    let y = |target: &str| {
        targets
            .iter()
            .find(|(_, t, _)| t == target)
            .and_then(|(_, _, y)| y.parse::<f64>().ok())
    };
    anyhow::ensure!(
        y("20") > y("60"),
        "the 20 s target is drawn below the 60 s one: {targets:?}"
    );
    Ok(())
}
