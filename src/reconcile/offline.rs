//! A refresh without a running engine (`deltamv refresh` while `run` is stopped): each
//! incremental view is recomputed by its SQL and its target repaired to match, row by row in
//! one transaction, and the refresh recorded in the history like the engine's own. With an
//! engine running, refreshes go through it instead (its state must agree with its targets).

use std::time::Instant;

use tokio_postgres::Client;

use super::{compare, repair, ReconcileError};
use crate::bookkeeping::history::{self, Counts, RefreshKind};
use crate::pg::sql_err;
use crate::plan::ViewPlan;

/// Recomputes `plan` (at `today` when the clock is pinned) and repairs its target; returns the
/// rows changed.
pub async fn recompute(
    client: &Client,
    plan: &ViewPlan,
    today: Option<&str>,
) -> Result<usize, ReconcileError> {
    let started = Instant::now();
    let outcome = async {
        let report = compare(client, plan, today).await?;
        repair(client, plan, &report, today).await
    }
    .await;
    let (changed, error) = match &outcome {
        Ok(n) => (Some(*n as i64), None),
        Err(e) => (None, Some(e.to_string())),
    };
    history::record(
        client,
        &plan.name.to_string(),
        RefreshKind::FullRecompute,
        started,
        Counts {
            rows_changed: changed,
            ..Default::default()
        },
        error.as_deref(),
    )
    .await
    .map_err(sql_err(format!("recording the refresh of {}", plan.name)))?;
    outcome
}
