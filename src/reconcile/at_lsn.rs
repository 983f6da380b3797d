//! A reconcile at one LSN while the engine runs: the recomputation side.
//!
//! Targets move with every batch, so a recomputation read at one moment and a target read at
//! another differ by whatever committed in between: false alarms under load. Instead a
//! temporary logical slot is created with an exported snapshot: the snapshot shows exactly the
//! transactions that committed before the slot's consistent point C. The views' queries are
//! evaluated in that snapshot into temporary tables of a session of their own, so the snapshot
//! (and the slot) can go at once. Right after the slot, a fence message is written to the WAL
//! (`pg_logical_emit_message`, non-transactional): when the engine's stream reaches it, every
//! transaction before C has arrived.
//!
//! The targets at C are then read one of two ways. Live ([`super::live`]): the engine exports a
//! snapshot of its targets right after the batch that brings them to C and goes on; this session
//! copies the targets through that snapshot ([`Recomputation::copy_targets`]) and compares the
//! copies. Held ([`Recomputation::take`], for repairs): the engine applies up to C and holds while
//! its targets are compared with the recomputation here (and, where a target differs, its state,
//! copied into a temporary table the same way, to tell a damaged target from a wrong state).

use std::time::Duration;

use tokio_postgres::Client;

use super::{compare_queries, repair_from, sql_err, ReconcileError, Report};
use crate::pg::quote_literal;
use crate::pg::DbTarget;
use crate::plan::ViewPlan;
use crate::sink::target::{self, TargetTable};
use crate::source::snapshot::SlotSnapshot;
use crate::value::Value;

/// The prefix of a reconcile's fence message.
pub const FENCE_PREFIX: &str = "deltamv.fence";

/// Views recomputed at one LSN, in temporary tables of `session`.
pub struct Recomputation {
    session: Client,
    /// The snapshot's position: transactions ending at or before it are in the recomputation.
    pub lsn: crate::pg::Lsn,
    /// What the fence message carries.
    pub fence: String,
}

/// A temporary slot's snapshot at C, with the fence written after it: what a recomputation
/// is evaluated in.
pub struct Snapshot {
    session: Client,
    slot: SlotSnapshot,
    fence: String,
}

impl Snapshot {
    /// Creates a temporary slot named `slot` and writes the fence; `session` (see [`session`])
    /// evaluates the recomputation.
    ///
    /// Creating the slot waits for every transaction that holds an XID when it starts: the wait
    /// is bounded by `wait`; past it the reconcile fails, naming the oldest such transaction.
    pub async fn take(
        session: Client,
        db: &DbTarget,
        slot: &str,
        publication: &str,
        fence: String,
        wait: Duration,
    ) -> Result<Snapshot, ReconcileError> {
        let created =
            tokio::time::timeout(wait, SlotSnapshot::create_temporary(db, slot, publication)).await;
        let slot = match created {
            Ok(created) => created?,
            Err(_) => return Err(writers_open(&session, wait).await),
        };
        session
            .execute(
                "SELECT pg_logical_emit_message(false, $1, $2)",
                &[&FENCE_PREFIX, &fence],
            )
            .await
            .map_err(sql_err("writing the reconcile's fence"))?;
        Ok(Snapshot {
            session,
            slot,
            fence,
        })
    }

    /// C: transactions ending at or before it are in the snapshot.
    pub fn lsn(&self) -> crate::pg::Lsn {
        self.slot.consistent_lsn
    }

    /// Evaluates each view's query (with CURRENT_DATE pinned to the given date) in the
    /// snapshot; the slot goes when this returns.
    pub async fn recompute(
        self,
        views: &[(ViewPlan, String)],
    ) -> Result<Recomputation, ReconcileError> {
        let mut sql = format!(
            "BEGIN ISOLATION LEVEL REPEATABLE READ; SET TRANSACTION SNAPSHOT {};
             SET LOCAL work_mem = '256MB';",
            quote_literal(&self.slot.snapshot_name)
        );
        for (i, (plan, today)) in views.iter().enumerate() {
            sql.push_str(&format!(
                "CREATE TEMPORARY TABLE dmv_expected_{i} AS SELECT * FROM ({}) q;",
                super::query_at(plan, Some(today))
            ));
        }
        sql.push_str("COMMIT;");
        if let Err(e) = self.session.batch_execute(&sql).await {
            let _ = self.session.batch_execute("ROLLBACK").await;
            return Err(sql_err("recomputing the views in the snapshot")(e).into());
        }
        Ok(Recomputation {
            session: self.session,
            lsn: self.slot.consistent_lsn,
            fence: self.fence,
        })
    }
}

/// A session for a recomputation. Its temporary tables (the recomputed views, copies of the
/// targets) stay in its local buffers up to 512 MB instead of going to disk. Measured at 5M +
/// 5M rows, the effect on freshness during a reconcile is within run-to-run noise: what the
/// engine's batches wait for then is CPU, not the disk (2026-12-05 steps file).
pub async fn session(db: &DbTarget) -> Result<Client, ReconcileError> {
    let session = db.connect().await?;
    session
        .batch_execute("SET temp_buffers = '512MB'")
        .await
        .map_err(sql_err("preparing the reconcile's session"))?;
    Ok(session)
}

/// The error of a wait for writers that did not end in `wait`.
pub(super) async fn writers_open(session: &Client, wait: Duration) -> ReconcileError {
    ReconcileError::WritersOpen {
        waited_ms: wait.as_millis(),
        oldest: oldest_writer(session).await,
    }
}

impl Recomputation {
    /// Creates a temporary slot named `slot`, writes the fence, and evaluates each view's query
    /// (with CURRENT_DATE pinned to the given date) in the slot's snapshot (see [`Snapshot`]).
    pub async fn take(
        db: &DbTarget,
        slot: &str,
        publication: &str,
        views: &[(ViewPlan, String)],
        fence: String,
        wait: Duration,
    ) -> Result<Recomputation, ReconcileError> {
        Snapshot::take(session(db).await?, db, slot, publication, fence, wait)
            .await?
            .recompute(views)
            .await
    }

    /// Copies the targets of `views` (the `i`-th recomputed, `i` in order) as the exported
    /// snapshot `snapshot` shows them, for [`Self::against_copied_target`]. The exporting
    /// transaction must stay open until this returns.
    pub async fn copy_targets(
        &self,
        snapshot: &str,
        views: &[&ViewPlan],
    ) -> Result<(), ReconcileError> {
        let mut sql = format!(
            "BEGIN ISOLATION LEVEL REPEATABLE READ; SET TRANSACTION SNAPSHOT {};",
            quote_literal(snapshot)
        );
        for (i, plan) in views.iter().enumerate() {
            sql.push_str(&format!(
                "CREATE TEMPORARY TABLE dmv_target_{i} AS SELECT * FROM {};",
                plan.name.quoted()
            ));
        }
        sql.push_str("COMMIT;");
        if let Err(e) = self.session.batch_execute(&sql).await {
            let _ = self.session.batch_execute("ROLLBACK").await;
            return Err(sql_err("copying the targets at the snapshot's LSN")(e).into());
        }
        Ok(())
    }

    /// The recomputation of view `i` against its target's copy (see [`Self::copy_targets`]).
    pub async fn against_copied_target(
        &self,
        i: usize,
        plan: &ViewPlan,
    ) -> Result<Report, ReconcileError> {
        let actual = format!("SELECT * FROM pg_temp.dmv_target_{i}");
        compare_queries(&self.session, plan, &Self::expected_sql(i), &actual).await
    }

    /// The session holding the recomputation's temporary tables.
    pub fn session(&self) -> &Client {
        &self.session
    }

    fn expected_sql(i: usize) -> String {
        format!("SELECT * FROM pg_temp.dmv_expected_{i}")
    }

    fn state_sql(i: usize) -> String {
        format!("SELECT * FROM pg_temp.dmv_state_{i}")
    }

    /// Prepares the table that receives view `i`'s rows as the engine's state has them.
    pub async fn begin_state(&self, i: usize, target: &TargetTable) -> Result<(), ReconcileError> {
        self.session
            .batch_execute(&format!(
                "CREATE TEMPORARY TABLE dmv_state_{i} (LIKE {})",
                target.table
            ))
            .await
            .map_err(sql_err("preparing the state's copy"))?;
        Ok(())
    }

    /// Appends rows of view `i` from the engine's state.
    pub async fn add_state_rows(
        &mut self,
        i: usize,
        target: &TargetTable,
        rows: &[Vec<Value>],
    ) -> Result<(), ReconcileError> {
        let tx = self
            .session
            .transaction()
            .await
            .map_err(sql_err("copying the state"))?;
        target::copy_rows_into(&tx, target, &format!("pg_temp.dmv_state_{i}"), rows)
            .await
            .map_err(sql_err("copying the state"))?;
        tx.commit().await.map_err(sql_err("copying the state"))?;
        Ok(())
    }

    /// The recomputation of view `i` against its target as it is now (the engine holds).
    pub async fn against_target(
        &self,
        i: usize,
        plan: &ViewPlan,
    ) -> Result<Report, ReconcileError> {
        let actual = format!("SELECT * FROM {}", plan.name.quoted());
        compare_queries(&self.session, plan, &Self::expected_sql(i), &actual).await
    }

    /// The recomputation of view `i` against the engine's state (see [`Self::add_state_rows`]).
    pub async fn against_state(&self, i: usize, plan: &ViewPlan) -> Result<Report, ReconcileError> {
        compare_queries(
            &self.session,
            plan,
            &Self::expected_sql(i),
            &Self::state_sql(i),
        )
        .await
    }

    /// Rewrites the target rows in `report` from the state's copy, in one transaction.
    pub async fn repair_from_state(
        &self,
        i: usize,
        plan: &ViewPlan,
        report: &Report,
    ) -> Result<usize, ReconcileError> {
        repair_from(&self.session, plan, report, &Self::state_sql(i)).await
    }
}

/// The oldest transaction holding an XID, for an operator: pid, user, application, age.
async fn oldest_writer(session: &Client) -> String {
    let row = session
        .query_opt(
            "SELECT format('pid %s, user %s, application %L, open for %s', pid, usename, application_name,
                           date_trunc('second', now() - xact_start))
               FROM pg_stat_activity
              WHERE backend_xid IS NOT NULL AND pid <> pg_backend_pid()
              ORDER BY xact_start LIMIT 1",
            &[],
        )
        .await;
    match row {
        Ok(Some(r)) => format!("the oldest: {}", r.get::<_, String>(0)),
        Ok(None) => "none is open any more".into(),
        Err(e) => format!("cannot list them: {}", crate::pg::describe(&e)),
    }
}
