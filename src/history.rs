//! Refresh history: one row per initial load, full recompute or repair of a view, in
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
}

impl RefreshKind {
    pub fn as_str(self) -> &'static str {
        match self {
            RefreshKind::InitialLoad => "initial load",
            RefreshKind::FullRecompute => "full recompute",
            RefreshKind::FallbackRefresh => "fallback refresh",
        }
    }
}

/// Appends a history row for a refresh that started at `started` (a monotonic instant) and ends now.
pub async fn record<C: GenericClient>(
    client: &C,
    view: &str,
    kind: RefreshKind,
    started: Instant,
    rows_changed: Option<i64>,
    error: Option<&str>,
) -> Result<(), tokio_postgres::Error> {
    let ms = started.elapsed().as_secs_f64() * 1000.0;
    client
        .execute(
            "INSERT INTO deltamv.refresh_history (view_name, kind, started_at, finished_at, duration_ms, rows_changed, error)
             VALUES ($1, $2, now() - make_interval(secs => $3::float8 / 1000), now(), $3::float8, $4, $5)",
            &[&view, &kind.as_str(), &ms, &rows_changed, &error],
        )
        .await
        .map(|_| ())
}
