//! A reconcile that does not stop the engine: the side that runs beside it, as a task.
//!
//! The held reconcile ([`super::at_lsn`]) stops applying from the moment it asks for a
//! snapshot until the comparison ends: the views froze for the whole recomputation (21 s at
//! 5M + 5M rows). Here the engine only has to place one batch boundary at the snapshot's LSN C
//! and export a snapshot of its targets there; it goes on at once, and this task compares the
//! two sides at C on its own:
//!
//! 1. It waits, without the engine, until every transaction that held an XID when the request
//!    started has ended (bounded by `--reconcile-wait-ms`), so that creating the slot, which
//!    waits for such transactions, takes moments.
//! 2. It writes a hold message ([`HOLD_PREFIX`]): from there the engine applies nothing more
//!    until it knows C, since C lies after the message and a batch must not straddle it.
//! 3. It creates the temporary slot (C) and its fence, opens the connection the engine will
//!    export its targets' snapshot on, and hands both to the engine ([`Cut`]).
//! 4. It recomputes the views in the slot's snapshot while the engine applies up to C, commits
//!    its targets, exports their snapshot in a transaction it leaves open, and goes on.
//! 5. It copies the targets through that snapshot (then the exporting transaction may end) and
//!    compares them with the recomputation.
//!
//! The engine's pause is step 3's slot creation plus one snapshot export. Where a target
//! differs, the engine runs the held reconcile for that view, which tells a damaged target from
//! a wrong state by the state's rows at C and repairs through the engine.

use std::time::{Duration, Instant};

use tokio::sync::oneshot;
use tokio_postgres::Client;
use uuid::Uuid;

use super::at_lsn::{writers_open, Snapshot};
use super::{sql_err, ReconcileError, Report};
use crate::bookkeeping::requests;
use crate::pg::{DbTarget, Lsn};
use crate::plan::ViewPlan;

/// The prefix of a live reconcile's hold message.
pub const HOLD_PREFIX: &str = "deltamv.hold";

/// What the engine needs to cut at C: C, the fence after it, and a connection to export its
/// targets' snapshot on.
pub struct Cut {
    pub lsn: Lsn,
    pub fence: String,
    pub exporter: Client,
}

/// The engine's targets at C: the exported snapshot's name, and the connection whose open
/// transaction keeps it importable.
pub struct Exported {
    pub snapshot: String,
    pub exporter: Client,
}

/// Exports a snapshot of what `exporter` sees now, in a transaction left open.
pub async fn export(exporter: Client) -> Result<Exported, ReconcileError> {
    let rows = exporter
        .simple_query("BEGIN ISOLATION LEVEL REPEATABLE READ; SELECT pg_export_snapshot()")
        .await
        .map_err(sql_err("exporting the targets' snapshot"))?;
    let snapshot = rows
        .iter()
        .find_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(r) => r.get(0).map(str::to_string),
            _ => None,
        })
        .ok_or(ReconcileError::Unreadable {
            context: "exporting the targets' snapshot".into(),
            column: 0,
        })?;
    Ok(Exported { snapshot, exporter })
}

/// One live reconcile's parameters.
pub struct Task {
    pub db: DbTarget,
    pub id: Uuid,
    /// The temporary slot's name.
    pub slot: String,
    pub publication: String,
    /// The views, each with the date its CURRENT_DATE is pinned to.
    pub views: Vec<(ViewPlan, String)>,
    /// The bound of each wait for writers.
    pub wait: Duration,
}

/// What a live reconcile found: C, and per view the comparison with its target at C.
pub struct Found {
    pub lsn: Lsn,
    pub views: Vec<Result<Report, String>>,
    /// How long the recomputation took (the engine applied meanwhile).
    pub recompute: Duration,
}

impl Task {
    /// The hold message's content for this task.
    pub fn hold_token(&self) -> String {
        format!("{} {}", self.slot, self.id)
    }

    /// Runs steps 1 to 5 (see the module doc). `cut` goes to the engine once C is known,
    /// `exported` comes back from it.
    pub async fn run(
        self,
        cut: oneshot::Sender<Cut>,
        exported: oneshot::Receiver<Exported>,
    ) -> Result<Found, ReconcileError> {
        let session = super::at_lsn::session(&self.db).await?;
        requests::note_phase(&session, self.id, "waiting for open write transactions").await;
        wait_for_writers(&session, self.wait).await?;
        session
            .execute(
                "SELECT pg_logical_emit_message(false, $1, $2)",
                &[&HOLD_PREFIX, &self.hold_token()],
            )
            .await
            .map_err(sql_err("writing the reconcile's hold message"))?;
        let fence = format!("{} {}", self.slot, chrono::Utc::now().timestamp_micros());
        let snapshot = Snapshot::take(
            session,
            &self.db,
            &self.slot,
            &self.publication,
            fence.clone(),
            self.wait,
        )
        .await?;
        let lsn = snapshot.lsn();
        let exporter = self.db.connect().await?;
        // The engine is gone when the receiver is: nothing to compare for.
        if cut
            .send(Cut {
                lsn,
                fence,
                exporter,
            })
            .is_err()
        {
            return Err(ReconcileError::EngineGone);
        }
        let started = Instant::now();
        let rc = snapshot.recompute(&self.views).await?;
        let recompute = started.elapsed();
        let exported = exported.await.map_err(|_| ReconcileError::EngineGone)?;
        crate::failpoint::hit("reconcile_exported");
        requests::note_phase(rc.session(), self.id, "comparing").await;
        let plans: Vec<&ViewPlan> = self.views.iter().map(|(p, _)| p).collect();
        rc.copy_targets(&exported.snapshot, &plans).await?;
        // The copies are taken: the exporting transaction may end.
        drop(exported);
        crate::failpoint::hit("reconcile_comparing");
        let mut views = Vec::new();
        for (i, plan) in plans.iter().enumerate() {
            views.push(
                rc.against_copied_target(i, plan)
                    .await
                    .map_err(|e| e.to_string()),
            );
        }
        Ok(Found {
            lsn,
            views,
            recompute,
        })
    }
}

/// Waits until no transaction that held an XID when this began is still open, for at most
/// `wait`: the slot created next then waits only for transactions begun since.
async fn wait_for_writers(session: &Client, wait: Duration) -> Result<(), ReconcileError> {
    let open_since_before = "SELECT count(*) FROM pg_stat_activity
          WHERE backend_xid IS NOT NULL AND pid <> pg_backend_pid() AND xact_start < $1";
    let began: std::time::SystemTime = session
        .query_one("SELECT clock_timestamp()", &[])
        .await
        .map_err(sql_err("reading the server's clock"))?
        .get(0);
    let deadline = Instant::now() + wait;
    loop {
        let open: i64 = session
            .query_one(open_since_before, &[&began])
            .await
            .map_err(sql_err("listing open write transactions"))?
            .get(0);
        if open == 0 {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(writers_open(session, wait).await);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
