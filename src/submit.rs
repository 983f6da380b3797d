//! The command line's side of requests: while `deltamv run` streams, `reconcile` and `refresh`
//! ask the running engine (through `deltamv.submit_request`, the function SQL callers use)
//! instead of writing targets behind its back, then wait for the result with a progress line.
//!
//! Only the engine can compare at one LSN while writes go on (see
//! [`crate::reconcile::at_lsn`]), and only its repairs keep its state and targets consistent.
//! With no engine streaming, the commands work directly on the database as before.

use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

use thiserror::Error;
use tokio_postgres::Client;
use uuid::Uuid;

use crate::pg::{sql_err, SqlError};
use crate::reconcile::{RequestDetail, ViewResult};
use crate::source::control::{slot_info, ControlError};

#[derive(Debug, Error)]
pub enum SubmitError {
    #[error(transparent)]
    Control(#[from] ControlError),
    #[error(transparent)]
    Sql(#[from] SqlError),
    #[error("request {id}: unreadable result: {detail}")]
    Result { id: Uuid, detail: String },
}

/// Whether an engine streams from `slot` right now.
pub async fn engine_running(client: &Client, slot: &str) -> Result<bool, SubmitError> {
    Ok(slot_info(client, slot)
        .await?
        .is_some_and(|s| s.holder.is_some()))
}

/// A finished request.
#[derive(Debug)]
pub struct Finished {
    pub id: Uuid,
    /// "done", "differences" or "failed".
    pub status: String,
    pub error: Option<String>,
    pub duration_ms: f64,
    pub views: Vec<ViewResult>,
}

/// Asks the engine for `kind` ("refresh", "refresh all", "reconcile", "reconcile all") and
/// returns the request's id.
pub async fn submit(
    client: &Client,
    kind: &str,
    view: Option<&str>,
    repair: bool,
) -> Result<Uuid, SubmitError> {
    let none: Option<String> = None;
    let row = client
        .query_one(
            "SELECT request_id FROM deltamv.submit_request($1, $2, $3, $4::text::interval)",
            &[&kind, &view, &repair, &none],
        )
        .await
        .map_err(sql_err("submitting the request"))?;
    Ok(row.get(0))
}

/// Waits for request `id` to finish, showing its phase on stderr (a line that updates in
/// place on a terminal, one line per phase otherwise).
pub async fn wait(client: &Client, id: Uuid, what: &str) -> Result<Finished, SubmitError> {
    let started = Instant::now();
    let tty = std::io::stderr().is_terminal();
    let mut shown = String::new();
    loop {
        let row = client
            .query_opt(
                "SELECT status, phase, finished_at IS NOT NULL, error, detail, coalesce(duration_ms, 0)
                   FROM deltamv.requests WHERE request_id = $1",
                &[&id],
            )
            .await
            .map_err(sql_err("reading the request"))?;
        let phase = match &row {
            None => "waiting for the engine to pick it up".to_string(),
            Some(r) if r.get::<_, bool>(2) => {
                if tty {
                    eprintln!();
                }
                let detail: Option<serde_json::Value> = r.get(4);
                let views = match detail {
                    Some(d) => {
                        serde_json::from_value::<RequestDetail>(d)
                            .map_err(|e| SubmitError::Result {
                                id,
                                detail: e.to_string(),
                            })?
                            .views
                    }
                    None => vec![],
                };
                return Ok(Finished {
                    id,
                    status: r.get(0),
                    error: r.get(3),
                    duration_ms: r.get(5),
                    views,
                });
            }
            Some(r) => r
                .get::<_, Option<String>>(1)
                .unwrap_or_else(|| r.get::<_, String>(0)),
        };
        let mut err = std::io::stderr();
        if tty {
            let _ = write!(
                err,
                "\r{what} (request {id}): {phase}, {:.1} s\x1b[K",
                started.elapsed().as_secs_f64()
            );
            let _ = err.flush();
        } else if phase != shown {
            let _ = writeln!(err, "{what} (request {id}): {phase}");
        }
        shown = phase;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
