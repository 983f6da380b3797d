//! A small HTTP/1.1 server: `/metrics`, `/healthz`, `/readyz`, and the live dashboard `/` with
//! its JSON feeds `/api/status` and `/api/history` (the last hour, sampled by the server: each
//! incremental view's lag and the engine's throughput, with each view's freshness target from
//! `deltamv.toml`, so the page can draw one line per view against its own target).
//!
//! Three read-only endpoints do not justify a web framework: requests are read up to a size
//! limit, answered and closed. Each request reads `deltamv.view_status` on the server's own
//! connection, so freshness is what a SQL client would see. With `DELTAMV_HTTP_TOKEN` set, every
//! endpoint requires `Authorization: Bearer <token>`.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio_postgres::Client;

use super::Metrics;
use crate::pg::DbTarget;
use crate::settings::Settings;
use crate::status::{self, ViewStatus};

/// What the server needs to answer.
pub struct Context {
    pub db: DbTarget,
    pub settings: Settings,
    pub metrics: Arc<Metrics>,
    pub token: Option<String>,
    /// How often the dashboard's history is sampled.
    pub sample_every: Duration,
}

/// One point of the dashboard's charts.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Sample {
    /// Seconds since 1970.
    pub t: f64,
    /// Each incremental view's lag (fallback views have none).
    pub lag_seconds: BTreeMap<String, f64>,
    pub changes_per_s: f64,
}

/// A view the dashboard draws: its lag line and its freshness target.
#[derive(Clone, Debug, serde::Serialize)]
pub struct ChartView {
    pub view: String,
    pub freshness_target_s: f64,
}

/// `/api/history`: the views with a lag line in the last hour, and the samples.
#[derive(Clone, Debug, serde::Serialize)]
pub struct HistoryFeed {
    pub views: Vec<ChartView>,
    pub samples: Vec<Sample>,
}

impl HistoryFeed {
    pub fn new(samples: Vec<Sample>, settings: &Settings) -> HistoryFeed {
        let names: BTreeSet<&String> = samples.iter().flat_map(|s| s.lag_seconds.keys()).collect();
        let views = names
            .into_iter()
            .map(|name| ChartView {
                view: name.clone(),
                freshness_target_s: settings.view(name).freshness_target.as_secs_f64(),
            })
            .collect();
        HistoryFeed { views, samples }
    }
}

type History = Arc<std::sync::Mutex<std::collections::VecDeque<Sample>>>;

const DASHBOARD: &str = include_str!("dashboard.html");

/// Samples freshness and throughput into `history`, keeping one hour.
async fn sample(ctx: Arc<Context>, history: History, mut shutdown: watch::Receiver<bool>) {
    let mut client: Option<Client> = None;
    let mut last_changes = ctx.metrics.changes.load(Ordering::Relaxed);
    let mut last_t = std::time::Instant::now();
    loop {
        tokio::select! {
            _ = tokio::time::sleep(ctx.sample_every) => {}
            _ = shutdown.changed() => return,
        }
        if client.as_ref().is_none_or(|c| c.is_closed()) {
            client = ctx.db.connect().await.ok();
        }
        let Some(c) = &client else { continue };
        let Ok(statuses) = status::collect_all(c).await else {
            continue;
        };
        let lag = statuses
            .iter()
            .filter_map(|s| Some((s.view.clone(), s.lag_seconds?)))
            .collect();
        let changes = ctx.metrics.changes.load(Ordering::Relaxed);
        let dt = last_t.elapsed().as_secs_f64().max(1e-3);
        let rate = changes.saturating_sub(last_changes) as f64 / dt;
        (last_changes, last_t) = (changes, std::time::Instant::now());
        let t = chrono::Utc::now().timestamp_micros() as f64 / 1e6;
        if let Ok(mut h) = history.lock() {
            h.push_back(Sample {
                t,
                lag_seconds: lag,
                changes_per_s: rate,
            });
            while h.front().is_some_and(|s| s.t < t - 3600.0) {
                h.pop_front();
            }
        }
    }
}

/// Binds `addr` and serves until `shutdown`; returns the bound address.
pub async fn serve(
    addr: &str,
    ctx: Context,
    mut shutdown: watch::Receiver<bool>,
) -> std::io::Result<std::net::SocketAddr> {
    let listener = TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    let ctx = Arc::new(ctx);
    let history: History = Arc::default();
    tokio::spawn(sample(ctx.clone(), history.clone(), shutdown.clone()));
    tokio::spawn(async move {
        let mut client: Option<Client> = None;
        loop {
            let conn = tokio::select! {
                c = listener.accept() => c,
                _ = shutdown.changed() => return,
            };
            let Ok((stream, _)) = conn else { continue };
            if client.as_ref().is_none_or(|c| c.is_closed()) {
                client = ctx.db.connect().await.ok();
            }
            let _ = tokio::time::timeout(
                Duration::from_secs(10),
                handle(stream, &ctx, client.as_ref(), &history),
            )
            .await;
        }
    });
    Ok(bound)
}

async fn handle(
    mut stream: TcpStream,
    ctx: &Context,
    client: Option<&Client>,
    history: &History,
) -> std::io::Result<()> {
    let mut buf = vec![0u8; 8192];
    let mut len = 0;
    while len < buf.len() {
        let n = stream.read(&mut buf[len..]).await?;
        if n == 0 {
            break;
        }
        len += n;
        if buf[..len].windows(4).any(|w| w == b"\r\n\r\n") {
            break;
        }
    }
    let request = String::from_utf8_lossy(&buf[..len]);
    let path = request.split_whitespace().nth(1).unwrap_or("/");
    let authorized = match &ctx.token {
        None => true,
        Some(t) => request.lines().any(|l| {
            let l = l.trim();
            l.len() > 14
                && l[..14].eq_ignore_ascii_case("authorization:")
                && l[14..].trim() == format!("Bearer {t}")
        }),
    };
    let (code, body, ctype) = if !authorized {
        (401, "bearer token required\n".to_string(), "text/plain")
    } else {
        match (path, client) {
            ("/", _) => (200, DASHBOARD.to_string(), "text/html; charset=utf-8"),
            ("/api/history", _) => {
                let points: Vec<Sample> = history
                    .lock()
                    .map(|h| h.iter().cloned().collect())
                    .unwrap_or_default();
                let feed = HistoryFeed::new(points, &ctx.settings);
                match serde_json::to_string(&feed) {
                    Ok(body) => (200, body, "application/json"),
                    Err(e) => (500, format!("{e}\n"), "text/plain"),
                }
            }
            (_, None) => (503, "cannot reach PostgreSQL\n".to_string(), "text/plain"),
            ("/api/status", Some(c)) => match status::collect_all(c).await {
                Ok(s) => (
                    200,
                    serde_json::to_string(&s).unwrap_or_else(|_| "[]".into()),
                    "application/json",
                ),
                Err(e) => (503, format!("{e}\n"), "text/plain"),
            },
            ("/metrics", Some(c)) => match status::collect_all(c).await {
                Ok(s) => (
                    200,
                    render_metrics(&s, &ctx.metrics),
                    "text/plain; version=0.0.4",
                ),
                Err(e) => (503, format!("{e}\n"), "text/plain"),
            },
            ("/healthz" | "/readyz", Some(c)) => match status::collect_all(c).await {
                Ok(s) => {
                    let stale = status::stale(&s, &|name| ctx.settings.view(name).freshness_target);
                    if stale.is_empty() {
                        (200, format!("ok: {} views fresh\n", s.len()), "text/plain")
                    } else {
                        (503, format!("stale:\n{}\n", stale.join("\n")), "text/plain")
                    }
                }
                Err(e) => (503, format!("{e}\n"), "text/plain"),
            },
            _ => (
                404,
                "not found: try /metrics, /healthz, /readyz\n".to_string(),
                "text/plain",
            ),
        }
    };
    let reason = match code {
        200 => "OK",
        401 => "Unauthorized",
        404 => "Not Found",
        500 => "Internal Server Error",
        _ => "Service Unavailable",
    };
    let head = format!(
        "HTTP/1.1 {code} {reason}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await?;
    stream.write_all(body.as_bytes()).await?;
    stream.shutdown().await
}

fn label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// The Prometheus text exposition of view freshness and engine counters.
pub fn render_metrics(statuses: &[ViewStatus], m: &Metrics) -> String {
    let mut out = String::new();
    let gauge =
        |out: &mut String, name: &str, help: &str, f: &dyn Fn(&ViewStatus) -> Option<f64>| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge");
            for s in statuses {
                if let Some(v) = f(s) {
                    let _ = writeln!(
                        out,
                        "{name}{{view=\"{}\",mode=\"{}\"}} {v}",
                        label(&s.view),
                        s.mode
                    );
                }
            }
        };
    gauge(
        &mut out,
        "deltamv_view_lag_seconds",
        "Age of the freshest moment the view is known to reflect.",
        &|s| s.lag_seconds,
    );
    gauge(
        &mut out,
        "deltamv_view_lag_bytes",
        "WAL not yet applied to the view.",
        &|s| s.lag_bytes.map(|b| b as f64),
    );
    gauge(
        &mut out,
        "deltamv_view_up",
        "1 when the view's state is ok.",
        &|s| Some(if s.state == "ok" { 1.0 } else { 0.0 }),
    );
    gauge(
        &mut out,
        "deltamv_view_rows",
        "Rows in the view's target.",
        &|s| s.rows.map(|r| r as f64),
    );
    gauge(
        &mut out,
        "deltamv_view_last_refresh_seconds",
        "Duration of the view's last load or refresh.",
        &|s| s.last_refresh.as_ref().map(|r| r.duration_ms / 1000.0),
    );
    let mut described = "";
    for sc in m.scalars() {
        if sc.name != described {
            let _ = writeln!(
                out,
                "# HELP {0} {1}\n# TYPE {0} {2}",
                sc.name,
                sc.help,
                sc.kind.as_str()
            );
            described = sc.name;
        }
        let label = sc.label.map(|(k, v)| format!("{{{k}=\"{v}\"}}"));
        let _ = writeln!(
            out,
            "{}{} {}",
            sc.name,
            label.unwrap_or_default(),
            sc.value.load(Ordering::Relaxed)
        );
    }
    if let Ok(h) = m.apply_latency_us.lock() {
        let name = "deltamv_apply_latency_seconds";
        let _ = writeln!(
            out,
            "# HELP {name} Source commit to visible in the targets.\n# TYPE {name} histogram"
        );
        for le in [
            0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
        ] {
            let count = h.count_between(0, (le * 1e6) as u64);
            let _ = writeln!(out, "{name}_bucket{{le=\"{le}\"}} {count}");
        }
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {}", h.len());
        let _ = writeln!(out, "{name}_sum {}", h.mean() * h.len() as f64 / 1e6);
        let _ = writeln!(out, "{name}_count {}", h.len());
    }
    if let Ok(h) = m.batch_rows.lock() {
        let name = "deltamv_batch_rows";
        let _ = writeln!(
            out,
            "# HELP {name} Source row changes per batch.\n# TYPE {name} summary"
        );
        for q in [0.5, 0.9, 0.99] {
            let _ = writeln!(out, "{name}{{quantile=\"{q}\"}} {}", h.value_at_quantile(q));
        }
        let _ = writeln!(out, "{name}_sum {}", (h.mean() * h.len() as f64) as u64);
        let _ = writeln!(out, "{name}_count {}", h.len());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample_status() -> ViewStatus {
        ViewStatus {
            view: "analytics.mv_x".into(),
            mode: "incremental".into(),
            state: "ok".into(),
            last_error: None,
            rows: Some(3),
            applied_lsn: Some("0/1".into()),
            lag_bytes: Some(0),
            lag_seconds: Some(0.5),
            last_change_at: None,
            last_refresh: Some(status::LastRefresh {
                kind: "initial load".into(),
                finished_at: "now".into(),
                duration_ms: 12.0,
                error: None,
            }),
        }
    }

    #[test]
    fn the_grafana_dashboard_only_uses_metrics_we_export() {
        let text = render_metrics(&[sample_status()], &Metrics::default());
        let dashboard: serde_json::Value =
            serde_json::from_str(include_str!("../../grafana/deltamv-dashboard.json"))
                .expect("valid JSON");
        let mut checked = 0;
        for panel in dashboard["panels"].as_array().expect("panels") {
            for target in panel["targets"].as_array().expect("targets") {
                let expr = target["expr"].as_str().expect("expr");
                let name_start = expr.find("deltamv_").expect("a deltamv metric");
                let name: String = expr[name_start..]
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                assert!(
                    text.contains(&name),
                    "dashboard uses {name}, which /metrics does not export"
                );
                checked += 1;
            }
        }
        assert!(checked >= 8, "{checked}");
    }

    #[test]
    fn the_history_feed_lists_each_charted_view_with_its_own_freshness_target() {
        let settings =
            Settings::parse("[views.\"a.slow\"]\nfreshness_target_s = 300\n").expect("valid");
        let sample = |t: f64, lags: &[(&str, f64)]| Sample {
            t,
            lag_seconds: lags.iter().map(|(v, l)| (v.to_string(), *l)).collect(),
            changes_per_s: 0.0,
        };
        // A view that appears later (or only for a while) still gets its line.
        let feed = HistoryFeed::new(
            vec![
                sample(1.0, &[("a.fast", 0.1)]),
                sample(2.0, &[("a.fast", 0.2), ("a.slow", 4.0)]),
            ],
            &settings,
        );
        let views: Vec<(&str, f64)> = feed
            .views
            .iter()
            .map(|v| (v.view.as_str(), v.freshness_target_s))
            .collect();
        assert_eq!(views, vec![("a.fast", 60.0), ("a.slow", 300.0)]);
        let json = serde_json::to_value(&feed).expect("serializes");
        assert_eq!(json["samples"][1]["lag_seconds"]["a.slow"], 4.0);
    }

    #[test]
    fn metrics_text_escapes_labels() {
        let mut s = sample_status();
        s.view = "a.\"b\"".into();
        let text = render_metrics(&[s], &Metrics::default());
        assert!(text.contains("view=\"a.\\\"b\\\"\""), "{text}");
    }
}
