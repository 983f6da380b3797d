//! `status`: per view rows, applied LSN, lag in bytes and seconds, and state.
//!
//! Lag in bytes is the server's current WAL position minus what the slot has confirmed (what is
//! not yet durably applied). Lag in seconds is the age of the freshest moment the targets are
//! known to reflect: the source commit time of the last applied transaction, or the last time the
//! engine saw the stream caught up with the server's flushed WAL, whichever is later. A healthy
//! engine shows about zero whether busy or idle; a stopped or backlogged one grows.

use serde::Serialize;
use tokio_postgres::Client;

use crate::plan::QualifiedName;
use crate::source::control::{describe, ControlError};

#[derive(Debug, Serialize)]
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

#[derive(Debug, Serialize)]
pub struct LastRefresh {
    pub kind: String,
    pub finished_at: String,
    pub duration_ms: f64,
    pub error: Option<String>,
}

fn err(context: &str) -> impl FnOnce(tokio_postgres::Error) -> ControlError + '_ {
    move |e| ControlError::Connect {
        target: context.to_string(),
        detail: describe(&e),
    }
}

/// Reads the status of every planned view.
pub async fn collect(
    client: &Client,
    views: &[(QualifiedName, &str)],
    slot: &str,
) -> Result<Vec<ViewStatus>, ControlError> {
    let has_schema = client
        .query_opt("SELECT 1 FROM pg_namespace WHERE nspname = 'deltamv'", &[])
        .await
        .map_err(err("status"))?
        .is_some();
    let progress = if has_schema {
        client
            .query_opt(
                "SELECT p.applied_lsn::text,
                        (pg_current_wal_insert_lsn() - greatest(p.applied_lsn, coalesce(s.confirmed_flush_lsn, p.applied_lsn)))::int8,
                        extract(epoch FROM now() - greatest(p.caught_up_at, p.applied_commit_time))::float8
                   FROM deltamv.progress p LEFT JOIN pg_replication_slots s ON s.slot_name = p.slot_name
                  WHERE p.slot_name = $1",
                &[&slot],
            )
            .await
            .map_err(err("reading deltamv.progress"))?
    } else {
        None
    };
    let mut out = Vec::new();
    for (qname, mode) in views {
        let name = qname.to_string();
        let row = if has_schema {
            client
                .query_opt(
                    "SELECT state, last_error, last_change_at::text FROM deltamv.views WHERE view_name = $1",
                    &[&name],
                )
                .await
                .map_err(err("reading deltamv.views"))?
        } else {
            None
        };
        let rows = match client
            .query_one(&format!("SELECT count(*) FROM {}", qname.quoted()), &[])
            .await
        {
            Ok(r) => Some(r.get::<_, i64>(0)),
            Err(_) => None,
        };
        let last_refresh = if has_schema {
            client
                .query_opt(
                    "SELECT kind, finished_at::text, duration_ms, error FROM deltamv.refresh_history
                      WHERE to_regclass('deltamv.refresh_history') IS NOT NULL AND view_name = $1
                      ORDER BY finished_at DESC LIMIT 1",
                    &[&name],
                )
                .await
                .ok()
                .flatten()
                .map(|r| LastRefresh {
                    kind: r.get(0),
                    finished_at: r.get(1),
                    duration_ms: r.get(2),
                    error: r.get(3),
                })
        } else {
            None
        };
        out.push(ViewStatus {
            view: name,
            mode: mode.to_string(),
            state: row
                .as_ref()
                .map(|r| r.get::<_, String>(0))
                .unwrap_or_else(|| "not initialized".into()),
            last_error: row.as_ref().and_then(|r| r.get(1)),
            rows,
            applied_lsn: progress.as_ref().map(|p| p.get(0)),
            lag_bytes: progress.as_ref().map(|p| p.get::<_, i64>(1).max(0)),
            lag_seconds: progress.as_ref().map(|p| p.get::<_, f64>(2).max(0.0)),
            last_change_at: row.as_ref().and_then(|r| r.get(2)),
            last_refresh,
        });
    }
    Ok(out)
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
