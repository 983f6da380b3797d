//! `status`: per view rows, applied LSN, lag in bytes and seconds, and state.
//!
//! Lag in bytes is the server's current WAL position minus what the slot has confirmed (what is
//! not yet durably applied). Lag in seconds is the age of the freshest moment the targets are
//! known to reflect: the source commit time of the last applied transaction, or the last time the
//! engine saw the stream caught up with the server's flushed WAL, whichever is later. A healthy
//! engine shows about zero whether busy or idle; a stopped or backlogged one grows.

use serde::Serialize;
use tokio_postgres::Client;

use crate::pg::sql_err;
use crate::pg::QualifiedName;
use crate::source::control::ControlError;

#[derive(Clone, Debug, Serialize)]
pub struct ViewStatus {
    pub view: String,
    /// "incremental" or "fallback" (a materialized view refreshed by the engine).
    pub mode: String,
    pub state: String,
    pub last_error: Option<String>,
    pub rows: Option<i64>,
    pub applied_lsn: Option<String>,
    pub lag_bytes: Option<i64>,
    pub lag_seconds: Option<f64>,
    pub last_change_at: Option<String>,
    /// The latest initial load or full recompute: kind, finish time, duration.
    pub last_refresh: Option<LastRefresh>,
}

#[derive(Clone, Debug, Serialize)]
pub struct LastRefresh {
    pub kind: String,
    pub finished_at: String,
    pub duration_ms: f64,
    pub error: Option<String>,
}

/// Reads the status of every planned view.
pub async fn collect(
    client: &Client,
    views: &[(QualifiedName, &str)],
) -> Result<Vec<ViewStatus>, ControlError> {
    let all = collect_all(client).await?;
    Ok(views
        .iter()
        .map(|(qname, mode)| {
            let name = qname.to_string();
            all.iter()
                .find(|s| s.view == name)
                .cloned()
                .unwrap_or(ViewStatus {
                    view: name,
                    mode: mode.to_string(),
                    state: "not initialized".into(),
                    last_error: None,
                    rows: None,
                    applied_lsn: None,
                    lag_bytes: None,
                    lag_seconds: None,
                    last_change_at: None,
                    last_refresh: None,
                })
        })
        .collect())
}

/// The status of every view recorded in `deltamv.view_status` (none before `init`).
pub async fn collect_all(client: &Client) -> Result<Vec<ViewStatus>, ControlError> {
    let has_view: bool = client
        .query_one("SELECT to_regclass('deltamv.view_status') IS NOT NULL", &[])
        .await
        .map_err(sql_err("status"))?
        .get(0);
    if !has_view {
        return Ok(vec![]);
    }
    let rows = client
        .query(
            "SELECT view_name, state, last_error, rows, applied_lsn::text, lag_bytes, lag_seconds,
                    last_change_at::text, last_refresh_kind, last_refresh_at::text, last_refresh_ms,
                    last_refresh_error, mode
               FROM deltamv.view_status ORDER BY view_name",
            &[],
        )
        .await
        .map_err(sql_err("reading deltamv.view_status"))?;
    Ok(rows
        .iter()
        .map(|r| ViewStatus {
            view: r.get(0),
            mode: r.get(12),
            state: r.get(1),
            last_error: r.get(2),
            rows: r.get(3),
            applied_lsn: r.get(4),
            lag_bytes: r.get(5),
            lag_seconds: r.get(6),
            last_change_at: r.get(7),
            last_refresh: (|| {
                Some(LastRefresh {
                    kind: r.get::<_, Option<String>>(8)?,
                    finished_at: r.get::<_, Option<String>>(9)?,
                    duration_ms: r.get::<_, Option<f64>>(10)?,
                    error: r.get(11),
                })
            })(),
        })
        .collect())
}

/// Views staler than allowed: failed views, and incremental views whose lag exceeds their limit
/// (`limit` for every view, or each view's own freshness target). Returns "view: why" lines.
pub fn stale(statuses: &[ViewStatus], limit: &dyn Fn(&str) -> std::time::Duration) -> Vec<String> {
    let mut out = Vec::new();
    for v in statuses {
        let max = limit(&v.view).as_secs_f64();
        if v.state != "ok" {
            out.push(format!(
                "{}: state {}{}",
                v.view,
                v.state,
                v.last_error
                    .as_ref()
                    .map(|e| format!(" ({e})"))
                    .unwrap_or_default()
            ));
        } else if let Some(lag) = v.lag_seconds.filter(|lag| *lag > max) {
            out.push(format!("{}: {lag:.1} s behind (limit {max:.1} s)", v.view));
        }
    }
    out
}

/// A fixed-width table for terminals.
pub fn render(statuses: &[ViewStatus]) -> String {
    let mut s = format!(
        "{:<36} {:<16} {:>10} {:>14} {:>12} {:>9}  {}\n",
        "VIEW", "STATE", "ROWS", "APPLIED LSN", "LAG BYTES", "LAG S", "LAST REFRESH"
    );
    for v in statuses {
        s.push_str(&format!(
            "{:<36} {:<16} {:>10} {:>14} {:>12} {:>9}  {}\n",
            v.view,
            if v.mode == "fallback" {
                format!("{} (fallback)", v.state)
            } else {
                v.state.clone()
            },
            v.rows.map(|r| r.to_string()).unwrap_or_else(|| "-".into()),
            v.applied_lsn.clone().unwrap_or_else(|| "-".into()),
            v.lag_bytes
                .map(|b| b.to_string())
                .unwrap_or_else(|| "-".into()),
            v.lag_seconds
                .map(|b| format!("{b:.1}"))
                .unwrap_or_else(|| "-".into()),
            v.last_refresh
                .as_ref()
                .map(|r| format!("{} {:.0} ms at {}", r.kind, r.duration_ms, r.finished_at))
                .unwrap_or_else(|| "-".into()),
        ));
        if let Some(e) = &v.last_error {
            s.push_str(&format!("    error: {e}\n"));
        }
    }
    s
}
