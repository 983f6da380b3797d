//! Line charts for the report: written as SVG (small, diffable), then rendered to PNG with a
//! headless Chromium when one is installed (`scripts/install-deps.sh` installs it), so the
//! report renders anywhere Markdown images do.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

pub struct Series {
    pub label: String,
    pub points: Vec<(f64, f64)>,
}

pub struct Chart {
    pub title: String,
    pub x_label: String,
    pub y_label: String,
    pub series: Vec<Series>,
}

const W: f64 = 800.0;
const H: f64 = 460.0;
const LEFT: f64 = 80.0;
const RIGHT: f64 = 20.0;
const TOP: f64 = 50.0;
const BOTTOM: f64 = 60.0;
const COLORS: [&str; 4] = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd"];

impl Chart {
    pub fn svg(&self) -> String {
        let points = self.series.iter().flat_map(|s| s.points.iter());
        let (mut x_max, mut y_max) = (0f64, 0f64);
        for &(x, y) in points {
            x_max = x_max.max(x);
            y_max = y_max.max(y);
        }
        let x_max = nice_ceiling(x_max);
        let y_max = nice_ceiling(y_max);
        let px = |x: f64| LEFT + x / x_max * (W - LEFT - RIGHT);
        let py = |y: f64| H - BOTTOM - y / y_max * (H - TOP - BOTTOM);
        let mut s = String::new();
        let _ = write!(
            s,
            r#"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" font-family="sans-serif" font-size="13">
<rect width="100%" height="100%" fill="white"/>
<text x="{cx}" y="25" text-anchor="middle" font-size="16">{title}</text>
<text x="{cx}" y="{xl}" text-anchor="middle">{x_label}</text>
<text transform="translate(18 {cy}) rotate(-90)" text-anchor="middle">{y_label}</text>
"#,
            cx = W / 2.0,
            cy = H / 2.0,
            xl = H - 15.0,
            title = escape(&self.title),
            x_label = escape(&self.x_label),
            y_label = escape(&self.y_label),
        );
        for i in 0..=5 {
            let (xv, yv) = (x_max * i as f64 / 5.0, y_max * i as f64 / 5.0);
            let _ = writeln!(
                s,
                r##"<line x1="{x}" y1="{t}" x2="{x}" y2="{b}" stroke="#ddd"/><text x="{x}" y="{ty}" text-anchor="middle">{xv}</text>
<line x1="{l}" y1="{y}" x2="{r}" y2="{y}" stroke="#ddd"/><text x="{tx}" y="{y4}" text-anchor="end">{yv}</text>"##,
                x = px(xv),
                y = py(yv),
                t = TOP,
                b = H - BOTTOM,
                l = LEFT,
                r = W - RIGHT,
                ty = H - BOTTOM + 18.0,
                tx = LEFT - 6.0,
                y4 = py(yv) + 4.0,
                xv = tick(xv),
                yv = tick(yv),
            );
        }
        for (i, series) in self.series.iter().enumerate() {
            let color = COLORS[i % COLORS.len()];
            let path: Vec<String> = series
                .points
                .iter()
                .map(|&(x, y)| format!("{:.1},{:.1}", px(x), py(y)))
                .collect();
            let _ = writeln!(
                s,
                r#"<polyline fill="none" stroke="{color}" stroke-width="1.6" points="{}"/>
<rect x="{lx}" y="{ly}" width="14" height="4" fill="{color}"/><text x="{tx}" y="{ty}">{label}</text>"#,
                path.join(" "),
                lx = LEFT + 15.0,
                ly = TOP + 10.0 + 18.0 * i as f64,
                tx = LEFT + 35.0,
                ty = TOP + 15.0 + 18.0 * i as f64,
                label = escape(&series.label),
            );
        }
        s.push_str("</svg>\n");
        s
    }

    /// Writes `<stem>.svg` and, when Chromium is available, `<stem>.png`; returns the file name
    /// the report should link (the PNG when there is one).
    pub fn write(&self, dir: &Path, stem: &str) -> Result<String> {
        let svg_path = dir.join(format!("{stem}.svg"));
        std::fs::write(&svg_path, self.svg())
            .with_context(|| format!("writing {}", svg_path.display()))?;
        let Some(browser) = chromium() else {
            return Ok(format!("{stem}.svg"));
        };
        let png = format!("{stem}.png");
        match render_png(&browser, &svg_path, &dir.join(&png)) {
            Ok(()) => Ok(png),
            // The figures matter more than the picture: keep the report, link the SVG.
            Err(e) => {
                eprintln!("warning: {e:#}; the report links the SVG instead");
                Ok(format!("{stem}.svg"))
            }
        }
    }
}

pub fn chromium() -> Option<PathBuf> {
    ["chromium", "chromium-browser", "google-chrome"]
        .iter()
        .find_map(|name| {
            std::env::var_os("PATH").and_then(|paths| {
                std::env::split_paths(&paths)
                    .map(|p| p.join(name))
                    .find(|p| p.is_file())
            })
        })
}

fn render_png(browser: &Path, svg: &Path, png: &Path) -> Result<()> {
    // file:// URLs need an absolute path.
    let svg =
        &std::fs::canonicalize(svg).with_context(|| format!("resolving {}", svg.display()))?;
    let png = &std::path::absolute(png)?;
    let profile = tempfile::tempdir()?;
    let out = Command::new(browser)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--hide-scrollbars",
            &format!("--user-data-dir={}", profile.path().display()),
            &format!("--window-size={},{}", W as u32, H as u32),
            &format!("--screenshot={}", png.display()),
        ])
        .arg(format!("file://{}", svg.display()))
        .output()
        .with_context(|| format!("running {}", browser.display()))?;
    if !png.is_file() {
        bail!(
            "{} did not render {}: {}",
            browser.display(),
            svg.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}

/// 1, 2 or 5 times a power of ten, at least `v`.
fn nice_ceiling(v: f64) -> f64 {
    if v <= 0.0 || !v.is_finite() {
        return 1.0;
    }
    let p = 10f64.powf(v.log10().floor());
    [1.0, 2.0, 5.0, 10.0]
        .iter()
        .map(|m| m * p)
        .find(|c| *c >= v)
        .unwrap_or(10.0 * p)
}

fn tick(v: f64) -> String {
    if v >= 1e6 {
        format!("{:.1}M", v / 1e6)
    } else if v >= 1e3 {
        format!("{:.1}k", v / 1e3)
    } else if v == v.trunc() {
        format!("{v:.0}")
    } else {
        format!("{v:.2}")
    }
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;")
}
