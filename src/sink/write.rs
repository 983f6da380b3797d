//! The target transaction: one per batch, for every view at once, with the position it
//! reflects (T) and the views' row counts, so readers never see half a batch and a batch
//! applied twice writes the same rows.
//!
//! What a failed write means is decided here, by [`ErrorKind`]: a transient error (the
//! connection or server went away) fails the whole batch, which the engine retries after
//! reconnecting; a definite one in one view's statements (its rows violate the target's
//! constraints, the worker may no longer write the table, the table was dropped or altered by
//! hand) fails that view alone, recorded in `deltamv.views` in the same transaction, with a
//! message naming the table and the fix, and the other views commit. A definite error outside
//! any view's statements (the bookkeeping tables) fails the batch: the engine stops and says so.

use tokio_postgres::{Client, Transaction};

use crate::bookkeeping::{progress, views};
use crate::change::TargetChange;
use crate::pg::error::sqlstate;
use crate::pg::{describe, sql_err, ErrorKind, Lsn, SqlError};
use crate::sink::target::{TargetTable, TargetWriter};

/// A view's writer, or its table alone when its statements could not even be prepared (the
/// view is failed and never written).
enum Writer {
    Ready(TargetWriter),
    Unwritable(TargetTable),
}

/// The position a batch brings the targets to.
pub struct Position<'a> {
    pub slot: &'a str,
    pub lsn: Lsn,
    /// The date (days since 1970-01-01) the batch's CURRENT_DATE conditions were evaluated at.
    pub date: i32,
    /// The commit time of the batch's last source transaction (none for a midnight's batch).
    pub commit_time: Option<i64>,
}

/// Every view's target writer, by view index.
pub struct Targets {
    writers: Vec<Writer>,
}

impl Targets {
    /// Prepares each view's statements. A view whose target cannot be written as things stand
    /// comes back in the list of failures, with why; a transient error fails the whole call.
    pub async fn prepare(
        client: &Client,
        tables: Vec<TargetTable>,
    ) -> Result<(Targets, Vec<(usize, String)>), SqlError> {
        // Each execution planned for its own arrays: a generic plan cannot know how many groups
        // a batch deletes, and one was seen scanning a whole target for every batch instead of
        // using its key index.
        client
            .batch_execute("SET plan_cache_mode = force_custom_plan")
            .await
            .map_err(sql_err("preparing the target connection"))?;
        let mut writers = Vec::with_capacity(tables.len());
        let mut failed = Vec::new();
        for (v, t) in tables.into_iter().enumerate() {
            let context = format!("preparing the writes of {}", t.plan_name);
            match TargetWriter::prepare(client, t.clone()).await {
                Ok(w) => writers.push(Writer::Ready(w)),
                Err(e) if ErrorKind::of(&e) == ErrorKind::Definite => {
                    failed.push((v, failure_message(&t, &e)));
                    writers.push(Writer::Unwritable(t));
                }
                Err(e) => return Err(SqlError::new(context, e)),
            }
        }
        Ok((Targets { writers }, failed))
    }

    /// View `v`'s target.
    pub fn table(&self, v: usize) -> &TargetTable {
        match &self.writers[v] {
            Writer::Ready(w) => &w.target,
            Writer::Unwritable(t) => t,
        }
    }

    /// Every view's target, by view index.
    pub fn tables(&self) -> Vec<TargetTable> {
        (0..self.writers.len())
            .map(|v| self.table(v).clone())
            .collect()
    }

    fn ready(&self, v: usize) -> Option<&TargetWriter> {
        match &self.writers[v] {
            Writer::Ready(w) => Some(w),
            Writer::Unwritable(_) => None,
        }
    }

    /// Writes each view's changed groups (`deltas`, by view; views in `skip` are not written)
    /// and the position, in one transaction. Returns the views that failed in it, already
    /// recorded as failed.
    pub async fn write(
        &self,
        client: &mut Client,
        deltas: &[Vec<TargetChange>],
        skip: &[bool],
        at: Position<'_>,
    ) -> Result<Vec<(usize, String)>, SqlError> {
        let live: Vec<(usize, &TargetWriter)> = (0..self.writers.len())
            .filter(|v| !deltas[*v].is_empty() && !skip[*v])
            .filter_map(|v| self.ready(v).map(|w| (v, w)))
            .collect();
        // Fast path: every view's statements pipelined in one transaction (a few round trips
        // instead of several per view). A definite error rolls it back, and the batch is
        // written again view by view under savepoints, so that the failing view fails alone.
        let tx = begin(client).await?;
        let writes = live.iter().map(|(v, w)| w.write(&tx, &deltas[*v]));
        match futures_util::future::try_join_all(writes).await {
            Ok(grown) => {
                let changed: Vec<(String, i64)> = live
                    .iter()
                    .zip(grown)
                    .map(|((_, w), d)| (w.target.plan_name.clone(), d))
                    .collect();
                commit(tx, &changed, &at).await?;
                return Ok(Vec::new());
            }
            Err(e) if ErrorKind::of(&e) == ErrorKind::Definite => {
                tx.rollback()
                    .await
                    .map_err(sql_err("rolling back the target transaction"))?;
            }
            Err(e) => return Err(SqlError::new("writing the targets", e)),
        }
        let tx = begin(client).await?;
        let mut failed = Vec::new();
        let mut changed = Vec::new();
        for (v, w) in live {
            savepoint(&tx, "SAVEPOINT dmv_view").await?;
            match w.write(&tx, &deltas[v]).await {
                Ok(grown) => {
                    savepoint(&tx, "RELEASE SAVEPOINT dmv_view").await?;
                    changed.push((w.target.plan_name.clone(), grown));
                }
                Err(e) if ErrorKind::of(&e) == ErrorKind::Definite => {
                    savepoint(&tx, "ROLLBACK TO SAVEPOINT dmv_view").await?;
                    let why = failure_message(&w.target, &e);
                    views::mark_failed(&tx, &w.target.plan_name, &why)
                        .await
                        .map_err(sql_err(format!("recording {} failed", w.target.plan_name)))?;
                    failed.push((v, why));
                }
                Err(e) => return Err(SqlError::new(format!("writing {}", w.target.plan_name), e)),
            }
        }
        commit(tx, &changed, &at).await?;
        Ok(failed)
    }
}

/// Sets, releases or rolls back to the savepoint around one view's writes.
async fn savepoint(tx: &Transaction<'_>, sql: &str) -> Result<(), SqlError> {
    tx.batch_execute(sql)
        .await
        .map_err(sql_err("writing the targets"))
}

async fn begin(client: &mut Client) -> Result<Transaction<'_>, SqlError> {
    client
        .transaction()
        .await
        .map_err(sql_err("starting the target transaction"))
}

/// Records the changed views (when, and by how many rows each grew) and the position, and
/// commits the targets.
async fn commit(
    tx: Transaction<'_>,
    changed: &[(String, i64)],
    at: &Position<'_>,
) -> Result<(), SqlError> {
    // Both sent before either reply is awaited (one round trip).
    let rows = async {
        views::record_row_deltas(&tx, changed)
            .await
            .map_err(sql_err("counting the targets' rows in deltamv.views"))
    };
    let position = async {
        progress::record_progress(&tx, at.slot, at.lsn, at.date, at.commit_time)
            .await
            .map_err(sql_err(
                "recording the applied position in deltamv.progress",
            ))
    };
    futures_util::try_join!(rows, position)?;
    tx.commit()
        .await
        .map_err(sql_err("committing the target transaction"))
}

/// Why writing `t` failed definitely, and what brings the view back.
pub fn failure_message(t: &TargetTable, e: &tokio_postgres::Error) -> String {
    let table = &t.plan_name;
    let fix = match sqlstate(e) {
        Some("42501") => format!(
            "grant the role deltamv connects as SELECT, INSERT, UPDATE and DELETE on {table} (schema/roles.sql shows the grants), then run `deltamv init` to rebuild the view"
        ),
        Some("42P01") => format!(
            "the target table {table} was dropped outside deltamv: run `deltamv init` to create and fill it again"
        ),
        Some(c) if c.starts_with("42") => format!(
            "the target table {table} was altered outside deltamv and no longer takes the view's rows: drop it and run `deltamv init` to create and fill it again"
        ),
        Some(c) if c.starts_with("22") || c.starts_with("23") => format!(
            "the view's rows do not fit {table}'s constraints or types: change the view or the table's constraints, then run `deltamv init`"
        ),
        _ => "fix the cause, then run `deltamv init` to rebuild the view".to_string(),
    };
    format!("writing the target {table} failed: {}; {fix}", describe(e))
}
