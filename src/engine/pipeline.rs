//! The target write of one batch in flight while the next batch is folded.
//!
//! Folding runs on the state thread; writing the targets runs in PostgreSQL. Done one after the
//! other, each waited for the other: draining a backlog, the state thread was idle a third of
//! the time while PostgreSQL wrote (profile of 2026-12-05). So the targets are written on a
//! connection of their own, by a task: batch N's target transaction commits while batch N+1 is
//! folded, and wall time per batch is about the larger of the two, not their sum.
//!
//! At most one write is in flight, so targets still commit strictly in LSN order. Batch N's
//! state is committed into the store's held layer (memory) before its write starts, because
//! batch N+1 folds on top of it; state on disk is still never ahead of the targets, since the
//! held layer reaches RocksDB only when nothing is in flight (see [`super::durability`]).
//! [`Sink::settle`] waits for the write in flight and hands back its outcome: every path that
//! needs the targets as of the last batch (a checkpoint, a request, the heartbeat) settles first.

use std::time::{Duration, Instant};

use tokio::task::JoinHandle;
use tokio_postgres::Client;

use crate::change::TargetChange;
use crate::pg::{Lsn, QualifiedName, SqlError};
use crate::sink::target::TargetTable;
use crate::sink::write::{Position, Targets};

/// The sink's connection and the statements prepared on it.
struct Conn {
    client: Client,
    targets: Targets,
}

/// What is recorded about a batch once its targets have committed (it becomes visible then).
pub(super) struct Visible {
    pub lsn: Lsn,
    pub commit_times: Vec<i64>,
    pub source_rows: usize,
    pub target_rows: usize,
    /// Source tables and incremental views that changed (for the fallback refresher).
    pub touched: Vec<QualifiedName>,
    pub fold: Duration,
    /// The date the views' CURRENT_DATE was at when the batch folded (recorded with its targets).
    pub date: i32,
}

/// A settled write: the batch, how long its write took, and the views that failed in it.
pub(super) struct Written {
    pub batch: Visible,
    pub write: Duration,
    /// When the target transaction had committed (microseconds since 2000, PostgreSQL's epoch).
    pub visible_at: i64,
    pub failed: Vec<(usize, String)>,
}

type Outcome = (Conn, Result<Vec<(usize, String)>, SqlError>, Duration, i64);

enum Slot {
    Idle(Conn),
    Busy(JoinHandle<Outcome>, Visible),
    /// The task ended without handing the connection back (it panicked): nothing is written
    /// any more, and the engine stops.
    Lost,
}

pub(super) struct Sink {
    slot: Slot,
    tables: Vec<TargetTable>,
    slot_name: String,
}

/// The write task ended without an outcome.
#[derive(Debug, thiserror::Error)]
#[error("the target writer task ended without finishing its write: {0}")]
pub struct WriterLost(pub String);

impl WriterLost {
    /// A later call after the task was lost.
    fn earlier() -> WriterLost {
        WriterLost("it was lost by an earlier write".into())
    }
}

impl Sink {
    pub fn new(client: Client, targets: Targets, slot_name: &str) -> Sink {
        let tables = targets.tables();
        Sink {
            slot: Slot::Idle(Conn { client, targets }),
            tables,
            slot_name: slot_name.to_string(),
        }
    }

    /// View `v`'s target.
    pub fn table(&self, v: usize) -> &TargetTable {
        &self.tables[v]
    }

    /// Starts writing `deltas` (views in `skip` are not written) with the batch's position.
    /// The previous write must have been settled: its outcome decides what this one skips.
    pub fn start(
        &mut self,
        deltas: Vec<Vec<TargetChange>>,
        skip: Vec<bool>,
        commit_time: Option<i64>,
        batch: Visible,
    ) -> Result<(), WriterLost> {
        let mut conn = match std::mem::replace(&mut self.slot, Slot::Lost) {
            Slot::Idle(conn) => conn,
            Slot::Busy(handle, b) => {
                self.slot = Slot::Busy(handle, b);
                return Err(WriterLost(
                    "a write was started before the last one settled".into(),
                ));
            }
            Slot::Lost => return Err(WriterLost::earlier()),
        };
        let slot = self.slot_name.clone();
        let (lsn, date) = (batch.lsn, batch.date);
        let handle = tokio::spawn(async move {
            let started = Instant::now();
            crate::failpoint::hit("before_target_commit");
            let at = Position {
                slot: &slot,
                lsn,
                date,
                commit_time,
            };
            let result = conn
                .targets
                .write(&mut conn.client, &deltas, &skip, at)
                .await;
            let visible_at = crate::pg::wal::pg_micros_now();
            if result.is_ok() {
                crate::failpoint::hit("after_target_commit");
            }
            (conn, result, started.elapsed(), visible_at)
        });
        self.slot = Slot::Busy(handle, batch);
        Ok(())
    }

    /// A write is in flight and not finished yet (settling would wait for it).
    pub fn writing(&self) -> bool {
        matches!(&self.slot, Slot::Busy(handle, _) if !handle.is_finished())
    }

    /// Waits for the write in flight, if any; its outcome (a failed write is an error).
    pub async fn settle(&mut self) -> Result<Option<Written>, SettleError> {
        let (handle, batch) = match std::mem::replace(&mut self.slot, Slot::Lost) {
            Slot::Busy(handle, batch) => (handle, batch),
            Slot::Idle(conn) => {
                self.slot = Slot::Idle(conn);
                return Ok(None);
            }
            Slot::Lost => return Err(WriterLost::earlier().into()),
        };
        let (conn, result, write, visible_at) =
            handle.await.map_err(|e| WriterLost(e.to_string()))?;
        self.slot = Slot::Idle(conn);
        let failed = result?;
        Ok(Some(Written {
            batch,
            write,
            visible_at,
            failed,
        }))
    }

    /// Lets a write in flight end (at shutdown or before a reconnect), ignoring its outcome:
    /// the next start reads the targets' position from the database.
    pub async fn abandon(&mut self) {
        if let Slot::Busy(handle, _) = std::mem::replace(&mut self.slot, Slot::Lost) {
            let _ = handle.await;
        }
    }
}

/// Why settling failed: the write itself, or the task.
#[derive(Debug, thiserror::Error)]
pub enum SettleError {
    #[error(transparent)]
    Write(#[from] SqlError),
    #[error(transparent)]
    Lost(#[from] WriterLost),
}
