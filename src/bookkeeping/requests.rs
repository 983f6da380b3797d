//! `deltamv.requests`: refresh and reconcile requests and their results. SQL callers poll it
//! (`deltamv.submit_request` in `schema/deltamv.sql`); the engine writes it. A request is
//! claimed by its id before it runs, so one the stream delivers again after a restart is not
//! served twice, while one interrupted half-way is served again.

use tokio_postgres::Client;
use uuid::Uuid;

use crate::pg::{sql_err, Lsn, SqlError};

/// A request as it is recorded when claimed.
pub struct Claim<'a> {
    pub id: Uuid,
    pub kind: &'a str,
    pub view: Option<&'a str>,
    pub repair: bool,
    pub by: &'a str,
    /// When the caller asked (its clock_timestamp(), as text).
    pub at: Option<&'a str>,
}

/// Marks a request running; false when it already finished (a message delivered again).
pub async fn claim(client: &Client, req: &Claim<'_>) -> Result<bool, SqlError> {
    let rows = client
        .query(
            "INSERT INTO deltamv.requests (request_id, kind, view_name, repair, requested_by, requested_at, status, phase, started_at)
             VALUES ($1, $2, $3, $4, $5, coalesce($6::text::timestamptz, now()), 'running', 'starting', now())
             ON CONFLICT (request_id) DO UPDATE SET status = 'running', phase = 'starting again', started_at = now()
               WHERE deltamv.requests.finished_at IS NULL
             RETURNING 1",
            &[&req.id, &req.kind, &req.view, &req.repair, &req.by, &req.at],
        )
        .await
        .map_err(sql_err(format!("claiming request {}", req.id)))?;
    Ok(!rows.is_empty())
}

/// Closes the running requests of `kind` that a stop interrupted.
pub async fn close_interrupted(client: &Client, kind: &str, why: &str) -> Result<(), SqlError> {
    client
        .execute(
            "UPDATE deltamv.requests SET status = 'failed', phase = NULL, finished_at = now(), error = $2
              WHERE finished_at IS NULL AND kind = $1",
            &[&kind, &why],
        )
        .await
        .map_err(sql_err("closing interrupted requests"))?;
    Ok(())
}

/// Shows where a request is (for `deltamv reconcile`'s progress line).
pub async fn set_phase(client: &Client, id: Uuid, phase: &str) -> Result<(), SqlError> {
    client
        .execute(
            "UPDATE deltamv.requests SET phase = $2 WHERE request_id = $1",
            &[&id, &phase],
        )
        .await
        .map_err(sql_err("recording a request's phase"))?;
    Ok(())
}

/// [`set_phase`], best effort: a phase that cannot be recorded is logged, and the request goes
/// on.
pub async fn note_phase(client: &Client, id: Uuid, phase: &str) {
    if let Err(e) = set_phase(client, id, phase).await {
        tracing::warn!(error = %e, "cannot record a request's phase");
    }
}

/// A request's result.
pub struct Finished {
    /// `done`, `differences` or `failed`.
    pub status: &'static str,
    /// The LSN a reconcile compared at.
    pub lsn: Option<Lsn>,
    pub rows_compared: i64,
    pub differences: i64,
    pub rows_changed: i64,
    pub duration_ms: f64,
    pub error: Option<String>,
    pub detail: serde_json::Value,
}

/// Records a request's result, and forgets requests finished more than 30 days ago.
pub async fn finish(client: &Client, id: Uuid, r: &Finished) -> Result<(), SqlError> {
    let lsn = r.lsn.map(|l| l.to_string());
    client
        .execute(
            "UPDATE deltamv.requests SET status = $2, phase = NULL, finished_at = now(), lsn = $3::text::pg_lsn,
                 rows_compared = $4, differences = $5, rows_changed = $6, duration_ms = $7, error = $8, detail = $9
              WHERE request_id = $1",
            &[&id, &r.status, &lsn, &r.rows_compared, &r.differences, &r.rows_changed, &r.duration_ms, &r.error, &r.detail],
        )
        .await
        .map_err(sql_err(format!("recording the result of request {id}")))?;
    client
        .execute(
            "DELETE FROM deltamv.requests WHERE finished_at < now() - interval '30 days'",
            &[],
        )
        .await
        .map_err(sql_err("forgetting old requests"))?;
    Ok(())
}
