//! The held reconcile, for views whose target differed in a live reconcile
//! ([`super::live_reconcile`]): the views are recomputed in a temporary slot's snapshot at C, the stream
//! is applied up to exactly C, and the engine holds there (no target writes) while its targets
//! are compared with the recomputation (and, for a target that differs, its own state too), so
//! both sides are compared at one LSN. Differences in a target whose group state agrees with
//! the SQL are repaired from the state, in one transaction (readers see the old or the repaired
//! rows, never a gap), so state and target stay consistent. Differences in the state itself
//! cannot be patched row by row (the state holds the inputs, not only the outputs): they are
//! reported with the fix, `deltamv init --resync`. Holding costs freshness for the
//! recomputation's duration.

use std::time::Instant;

use uuid::Uuid;

use super::batch::PendingTxn;
use super::requests::{ViewOutcome, REQUEST_PREFIX};
use super::{EngineError, Loop};
use crate::bookkeeping::requests;
use crate::maintain::RowPages;
use crate::pg::Lsn;
use crate::reconcile::at_lsn::{Recomputation, FENCE_PREFIX};
use crate::reconcile::Report;
use crate::source::stream::StreamEvent;

impl Loop<'_> {
    /// Reconciles `views` (each with whether to repair) at one LSN; returns that LSN.
    pub(super) async fn reconcile(
        &mut self,
        id: Uuid,
        views: &[(usize, bool)],
    ) -> Result<Result<(Lsn, Vec<ViewOutcome>), String>, EngineError> {
        let (plans, slot) = self.pinned_plans(views).await?;
        requests::note_phase(&self.prepared.client, id, "recomputing in a snapshot").await;
        let started = Instant::now();
        let fence = format!("{slot} {}", chrono::Utc::now().timestamp_micros());
        let mut rc = match Recomputation::take(
            &self.prepared.db,
            &slot,
            &self.cfg.publication,
            &plans,
            fence,
            std::time::Duration::from_millis(self.cfg.reconcile_wait_ms),
        )
        .await
        {
            Ok(rc) => rc,
            Err(e) => return Ok(Err(e.to_string())),
        };
        let recomputed = started.elapsed();
        requests::note_phase(&self.prepared.client, id, "applying up to the snapshot").await;
        self.drain_to_fence(&rc.fence, rc.lsn).await?;
        crate::failpoint::hit("reconcile_held");
        let caught_up = started.elapsed();
        requests::note_phase(&self.prepared.client, id, "comparing").await;
        let mut outcomes = Vec::new();
        for (i, ((v, repair), (plan, _))) in views.iter().zip(&plans).enumerate() {
            let mut o = ViewOutcome {
                view: plan.name.to_string(),
                ..ViewOutcome::default()
            };
            match self.compare_view(&mut rc, i, *v, plan).await? {
                Ok((target, state)) => {
                    // A state that differs too is left for `deltamv init --resync` (the
                    // result and the error log say so): patching only the target would make
                    // the two disagree.
                    o.state_differences = state.as_ref().map_or(0, |s| s.diffs.len());
                    if *repair && state.is_some_and(|s| s.diffs.is_empty()) {
                        requests::note_phase(&self.prepared.client, id, "repairing").await;
                        match rc.repair_from_state(i, plan, &target).await {
                            Ok(n) => o.repaired = n,
                            Err(e) => o.error = Some(e.to_string()),
                        }
                    }
                    o.compared = Some(target);
                }
                Err(e) => o.error = Some(e),
            }
            outcomes.push(o);
        }
        tracing::info!(
            id = %id,
            views = views.len(),
            lsn = %rc.lsn,
            recompute_ms = recomputed.as_millis() as u64,
            catch_up_ms = (caught_up - recomputed).as_millis() as u64,
            compare_ms = (started.elapsed() - caught_up).as_millis() as u64,
            pause_ms = started.elapsed().as_secs_f64() * 1000.0,
            "reconciled at one LSN (the views were held throughout)"
        );
        self.metrics.reconcile_pause_max_us.fetch_max(
            started.elapsed().as_micros() as u64,
            std::sync::atomic::Ordering::Relaxed,
        );
        Ok(Ok((rc.lsn, outcomes)))
    }

    /// Compares view `v` (the `i`-th recomputed) with its target and, when they differ, with
    /// the engine's state (which decides whether the target can be repaired from it). The
    /// targets are written from the state, so a clean target needs no look at the state.
    async fn compare_view(
        &mut self,
        rc: &mut Recomputation,
        i: usize,
        v: usize,
        plan: &crate::plan::ViewPlan,
    ) -> Result<Result<(Report, Option<Report>), String>, EngineError> {
        let against_target = match rc.against_target(i, plan).await {
            Ok(r) if r.diffs.is_empty() => return Ok(Ok((r, None))),
            Ok(r) => r,
            Err(e) => return Ok(Err(e.to_string())),
        };
        let target = self.sink.table(v).clone();
        if let Err(e) = rc.begin_state(i, &target).await {
            return Ok(Err(e.to_string()));
        }
        let mut pages = RowPages::of(v);
        while let Some(rows) = pages.next(&self.state).await? {
            if let Err(e) = rc.add_state_rows(i, &target, &rows).await {
                return Ok(Err(e.to_string()));
            }
        }
        Ok(match rc.against_state(i, plan).await {
            Ok(s) => Ok((against_target, Some(s))),
            Err(e) => Err(e.to_string()),
        })
    }

    /// Applies the stream up to `lsn` (the recomputation's snapshot) and stops at the fence
    /// written right after the snapshot was taken: everything that committed before `lsn` has
    /// arrived by then. What came after `lsn` is handed back to the stream for later.
    async fn drain_to_fence(&mut self, fence: &str, lsn: Lsn) -> Result<(), EngineError> {
        let mut batch: Vec<PendingTxn> = Vec::new();
        let mut rows = 0;
        let mut later = Vec::new();
        loop {
            // A backlog before the snapshot goes in batches of the usual size.
            if rows >= self.cfg.batch_max_rows {
                self.apply(std::mem::take(&mut batch)).await?;
                rows = 0;
            }
            match self.stream.next().await? {
                StreamEvent::Message { prefix, content }
                    if prefix == FENCE_PREFIX && content == fence.as_bytes() =>
                {
                    break
                }
                ev @ StreamEvent::Transaction { end_lsn, .. }
                    if end_lsn <= lsn && later.is_empty() =>
                {
                    rows += self.accept(ev, &mut batch).await?;
                }
                ev @ StreamEvent::Part { final_lsn, .. } if final_lsn < lsn && later.is_empty() => {
                    self.accept(ev, &mut batch).await?;
                    rows = 0; // the batch before the part was applied
                }
                // The fence of an interrupted reconcile, delivered again after a restart.
                StreamEvent::Message { prefix, .. } if prefix == FENCE_PREFIX => {}
                // A request from before the snapshot is served in this round, ahead of the
                // checkpoint that acknowledges past it.
                StreamEvent::Message { prefix, content }
                    if prefix == REQUEST_PREFIX && later.is_empty() =>
                {
                    self.queue_request(&content)
                }
                StreamEvent::Idle { .. } => {}
                ev => later.push(ev),
            }
        }
        if !batch.is_empty() {
            self.apply(batch).await?;
        }
        self.stream.put_back(later);
        Ok(())
    }
}
