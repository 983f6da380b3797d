//! Fallback views: materialized views refreshed concurrently by the engine.
//!
//! A view outside the incremental language is kept as a real PostgreSQL materialized view with a
//! unique index and refreshed with `REFRESH MATERIALIZED VIEW CONCURRENTLY` (readers are never
//! blocked): after the tables or views it reads change, at most once per `min_interval`
//! (debounce); on its schedule; and always in dependency order (a refreshed view marks the
//! fallback views reading it as changed). One task refreshes one view at a time, so the engine
//! never runs two refreshes of a view at once (PostgreSQL's lock serializes manual ones too).
//! Failures are retried with exponential backoff and shown in `deltamv.views` and the history.
//! "Now" comes from the engine's clock, so tests can move time through the schedule.

use std::time::{Duration, Instant};

use tokio::sync::{mpsc, watch};
use tokio_postgres::Client;

use crate::bookkeeping::history::{self, RefreshKind};
use crate::bookkeeping::views;
use crate::clock::Clock;
use crate::pg::QualifiedName;
use crate::pg::{describe, DbTarget};
use crate::plan::FallbackPlan;
use crate::settings::{Settings, ViewSettings};

struct Tracked {
    plan: FallbackPlan,
    settings: ViewSettings,
    dirty: bool,
    last_refresh: Option<i64>,
    next_scheduled: Option<i64>,
    failures: u32,
    retry_at: i64,
}

/// Refreshes `plan` concurrently and records it in the history; returns the error text.
///
/// A successful refresh commits with its history row and its `deltamv.views` outcome, so a
/// reader who sees the new rows also sees the refresh recorded (and never a record without the
/// rows). A failed refresh is rolled back and then recorded on its own.
pub async fn refresh_now(client: &Client, plan: &FallbackPlan) -> Result<(), String> {
    let started = Instant::now();
    let name = plan.name.to_string();
    let result = refresh_recorded(client, plan, &name, started).await;
    let Err(error) = &result else {
        return result;
    };
    let _ = client.batch_execute("ROLLBACK").await;
    if let Err(e) = history::record(
        client,
        &name,
        RefreshKind::FallbackRefresh,
        started,
        history::Counts::default(),
        Some(error),
    )
    .await
    {
        tracing::warn!(view = %name, error = %describe(&e), "cannot record refresh history");
    }
    if let Err(e) = views::refreshed(client, &name, Some(error)).await {
        tracing::warn!(view = %name, error = %e, "cannot record the refresh's outcome");
    }
    result
}

/// One transaction: the refresh, the row count `status` reads instead of counting, the history
/// row and the view's outcome.
async fn refresh_recorded(
    client: &Client,
    plan: &FallbackPlan,
    name: &str,
    started: Instant,
) -> Result<(), String> {
    client
        .batch_execute(&format!(
            "BEGIN;
             REFRESH MATERIALIZED VIEW CONCURRENTLY {mv};
             {count}",
            mv = plan.name.quoted(),
            count = views::count_rows_sql(name, &plan.name.quoted()),
        ))
        .await
        .map_err(|e| describe(&e))?;
    history::record(
        client,
        name,
        RefreshKind::FallbackRefresh,
        started,
        history::Counts::default(),
        None,
    )
    .await
    .map_err(|e| {
        format!(
            "recording the refresh in deltamv.refresh_history: {}",
            describe(&e)
        )
    })?;
    views::refreshed(client, name, None)
        .await
        .map_err(|e| e.to_string())?;
    client
        .batch_execute("COMMIT")
        .await
        .map_err(|e| describe(&e))
}

/// Starts the refresher; send it the names of tables and views that changed. It stops when the
/// sender is dropped or `shutdown` turns true.
pub fn spawn(
    db: DbTarget,
    fallbacks: Vec<FallbackPlan>,
    settings: &Settings,
    clock: Clock,
    mut shutdown: watch::Receiver<bool>,
) -> mpsc::UnboundedSender<Vec<QualifiedName>> {
    let (tx, mut rx) = mpsc::unbounded_channel::<Vec<QualifiedName>>();
    let now = clock.now_micros();
    let mut views: Vec<Tracked> = fallbacks
        .into_iter()
        .map(|plan| {
            let settings = settings.view(&plan.name.to_string()).clone();
            let next_scheduled = settings.schedule.as_ref().and_then(|s| s.next_after(now));
            // Changes may have happened while the engine was down: refresh once at start.
            Tracked {
                plan,
                settings,
                dirty: true,
                last_refresh: None,
                next_scheduled,
                failures: 0,
                retry_at: 0,
            }
        })
        .collect();
    tokio::spawn(async move {
        let mut client: Option<Client> = None;
        loop {
            tokio::select! {
                msg = rx.recv() => match msg {
                    Some(changed) => mark(&mut views, &changed),
                    None => return,
                },
                _ = tokio::time::sleep(Duration::from_millis(250)) => {}
                _ = shutdown.changed() => return,
            }
            if client.as_ref().is_none_or(|c| c.is_closed()) {
                match db.connect().await {
                    Ok(c) => client = Some(c),
                    Err(e) => {
                        tracing::warn!(error = %e, "refresher cannot connect; retrying");
                        continue;
                    }
                }
            }
            if let Some(c) = &client {
                tick(c, &mut views, &clock).await;
            }
        }
    });
    tx
}

fn mark(views: &mut [Tracked], changed: &[QualifiedName]) {
    for v in views.iter_mut() {
        if v.plan.reads.iter().any(|r| changed.contains(r)) {
            v.dirty = true;
        }
    }
}

async fn tick(client: &Client, views: &mut [Tracked], clock: &Clock) {
    for i in 0..views.len() {
        let now = clock.now_micros();
        let v = &views[i];
        let debounced = v
            .last_refresh
            .is_none_or(|l| now - l >= v.settings.min_interval.as_micros() as i64);
        let scheduled = v.next_scheduled.is_some_and(|n| now >= n);
        if !((v.dirty && debounced) || scheduled) || now < v.retry_at {
            continue;
        }
        let result = refresh_now(client, &v.plan).await;
        let v = &mut views[i];
        match result {
            Ok(()) => {
                v.dirty = false;
                v.last_refresh = Some(now);
                v.next_scheduled = v.settings.schedule.as_ref().and_then(|s| s.next_after(now));
                v.failures = 0;
                v.retry_at = 0;
                let name = v.plan.name.clone();
                tracing::info!(view = %name, "fallback view refreshed");
                mark(views, std::slice::from_ref(&name));
            }
            Err(e) => {
                v.failures += 1;
                let backoff_s = 2i64.saturating_pow(v.failures.min(6)).min(60);
                v.retry_at = now + backoff_s * 1_000_000;
                tracing::error!(view = %v.plan.name, error = %e, retry_in_s = backoff_s, "fallback refresh failed");
            }
        }
    }
}
