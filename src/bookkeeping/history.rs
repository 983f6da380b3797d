//! Refresh history: one row per initial load, full recompute, reconcile or repair of a view, in
//! `deltamv.refresh_history`, so `status` (and any SQL client) can show when each view was last
//! rebuilt, how long it took and what it changed. Incremental batches are far too frequent for
//! a row each; their effect shows as `deltamv.views.last_change_at` and the applied LSN.

use std::time::Instant;

use tokio_postgres::GenericClient;

/// What kind of refresh a history row records.
#[derive(Clone, Copy, Debug)]
pub enum RefreshKind {
    InitialLoad,
    FullRecompute,
    FallbackRefresh,
    Reconcile,
    ScheduledReconcile,
}

impl RefreshKind {
    pub fn as_str(self) -> &'static str {
        match self {
            RefreshKind::InitialLoad => "initial load",
            RefreshKind::FullRecompute => "full recompute",
            RefreshKind::FallbackRefresh => "fallback refresh",
            RefreshKind::Reconcile => "reconcile",
            RefreshKind::ScheduledReconcile => "scheduled reconcile",
        }
    }
}

/// What a refresh did, as far as known.
#[derive(Clone, Copy, Debug, Default)]
pub struct Counts {
    pub rows_changed: Option<i64>,
    /// Reconciles: rows of the recomputation compared with the target.
    pub rows_compared: Option<i64>,
    /// Reconciles: rows that differed.
    pub differences: Option<i64>,
}

impl Counts {
    pub fn changed(rows: i64) -> Counts {
        Counts {
            rows_changed: Some(rows),
            ..Counts::default()
        }
    }
}

/// Appends a history row for a refresh that started at `started` (a monotonic instant) and ends now.
pub async fn record<C: GenericClient>(
    client: &C,
    view: &str,
    kind: RefreshKind,
    started: Instant,
    counts: Counts,
    error: Option<&str>,
) -> Result<(), tokio_postgres::Error> {
    let ms = started.elapsed().as_secs_f64() * 1000.0;
    client
        .execute(
            "INSERT INTO deltamv.refresh_history (view_name, kind, started_at, finished_at, duration_ms, rows_changed, rows_compared, differences, error)
             VALUES ($1, $2, now() - make_interval(secs => $3::float8 / 1000), now(), $3::float8, $4, $5, $6, $7)",
            &[&view, &kind.as_str(), &ms, &counts.rows_changed, &counts.rows_compared, &counts.differences, &error],
        )
        .await
        .map(|_| ())
}
