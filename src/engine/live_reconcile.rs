//! The live reconcile, engine side: a reconcile or refresh that compares at one LSN C without
//! freezing the views (the task beside the engine is [`crate::reconcile::live`]).
//!
//! The engine's part is one batch boundary at C and a snapshot of its targets there:
//! - the task's hold message arrives on the stream before C; the loop applies what came before
//!   it and waits for C (the task is creating its slot; transactions open since before the
//!   request were waited out already, beside the engine);
//! - with C known, the loop applies everything up to C and cuts the batch before the first
//!   transaction past C (or at the fence written after C); once that batch's targets commit,
//!   it exports their snapshot in a transaction the task keeps open until it has copied them;
//! - then it goes on applying while the task compares. Its pause is the slot's creation and
//!   the export, measured and reported (`deltamv_reconcile_pause_max_seconds`).
//!
//! A view whose target differs at C is reconciled again the held way ([`super::held_reconcile`]):
//! that compares its state too and repairs through the engine. A correct engine never gets
//! there. While a live reconcile runs, the slot is not acknowledged past the request (a crash
//! delivers it again) and later requests wait their turn.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{oneshot, watch, Notify};

use super::requests::{Request, ViewOutcome};
use super::{EngineError, Loop};
use crate::pg::Lsn;
use crate::reconcile::at_lsn::FENCE_PREFIX;
use crate::reconcile::live::{self, Cut, Exported, Found, Task, HOLD_PREFIX};
use crate::reconcile::ReconcileError;
use crate::source::stream::StreamEvent;

/// A live reconcile in progress.
pub(super) struct Live {
    req: Request,
    started: Instant,
    /// The incremental views compared, each with whether to repair.
    views: Vec<(usize, bool)>,
    /// Fallback views refreshed afterwards (a `refresh all`).
    fallbacks: Vec<usize>,
    /// The hold message's content.
    token: String,
    phase: Phase,
    /// Woken when the task ends.
    pub(super) done: Arc<Notify>,
    task: tokio::task::JoinHandle<Result<Found, ReconcileError>>,
}

enum Phase {
    /// The task waits for writers and creates its slot; the stream is applied as usual until
    /// the hold message.
    Starting {
        cut: oneshot::Receiver<Cut>,
        exported: oneshot::Sender<Exported>,
    },
    /// C is known: nothing past it goes into a batch until the targets at C are exported.
    Cutting {
        lsn: Lsn,
        fence: String,
        exporter: tokio_postgres::Client,
        exported: oneshot::Sender<Exported>,
        held_since: Instant,
    },
    /// The targets at C are exported (or the task failed first): the task finishes alone.
    Comparing,
}

impl Drop for Live {
    fn drop(&mut self) {
        // An engine that stops or reconnects leaves the request to be served again.
        self.task.abort();
    }
}

/// Where a stream event stands with respect to the live reconcile's cut.
pub(super) enum Mark {
    /// Nothing to do with it.
    None,
    /// The hold message: apply what came before, then wait for C.
    Hold,
    /// Past C: cut the batch before it.
    Cut,
}

impl Loop<'_> {
    /// Starts a live reconcile of `views` for `req` (claimed already).
    pub(super) async fn start_live(
        &mut self,
        req: Request,
        started: Instant,
        views: Vec<(usize, bool)>,
        fallbacks: Vec<usize>,
    ) -> Result<(), EngineError> {
        let (pinned, slot) = self.pinned_plans(&views).await?;
        let task = Task {
            db: self.prepared.db.clone(),
            id: req.id,
            slot,
            publication: self.cfg.publication.clone(),
            views: pinned,
            wait: Duration::from_millis(self.cfg.reconcile_wait_ms),
        };
        let token = task.hold_token();
        let (cut_tx, cut_rx) = oneshot::channel();
        let (exported_tx, exported_rx) = oneshot::channel();
        let done = Arc::new(Notify::new());
        let wake = done.clone();
        let handle = tokio::spawn(async move {
            let found = task.run(cut_tx, exported_rx).await;
            wake.notify_one();
            found
        });
        // The slot stays before the request's message until it is served (see
        // `Loop::queue_request`); a scheduled one has none, and this cap does no harm.
        self.progress.cap_ack(self.progress.targets());
        tracing::info!(id = %req.id, kind = req.kind.as_str(), views = views.len(), "reconciling beside the stream");
        self.live = Some(Live {
            req,
            started,
            views,
            fallbacks,
            token,
            phase: Phase::Starting {
                cut: cut_rx,
                exported: exported_tx,
            },
            done,
            task: handle,
        });
        Ok(())
    }

    /// Where `ev` stands with respect to the live reconcile's cut, if one is in progress.
    pub(super) fn live_mark(&self, ev: &StreamEvent) -> Mark {
        let Some(live) = &self.live else {
            return Mark::None;
        };
        match (&live.phase, ev) {
            (Phase::Starting { .. }, StreamEvent::Message { prefix, content })
                if prefix == HOLD_PREFIX && content == live.token.as_bytes() =>
            {
                Mark::Hold
            }
            (Phase::Cutting { lsn, .. }, StreamEvent::Transaction { end_lsn, .. })
                if end_lsn > lsn =>
            {
                Mark::Cut
            }
            (Phase::Cutting { lsn, .. }, StreamEvent::Part { final_lsn, .. })
                if final_lsn > lsn =>
            {
                Mark::Cut
            }
            (Phase::Cutting { fence, .. }, StreamEvent::Message { prefix, content })
                if prefix == FENCE_PREFIX && content == fence.as_bytes() =>
            {
                Mark::Cut
            }
            _ => Mark::None,
        }
    }

    /// After the hold message (and the batch before it): waits until the task knows C. A stop
    /// meanwhile ends the wait (the loop then stops).
    pub(super) async fn hold_for_cut(
        &mut self,
        shutdown: &mut watch::Receiver<bool>,
    ) -> Result<(), EngineError> {
        let Some(live) = self.live.as_mut() else {
            return Ok(());
        };
        let Phase::Starting { cut, exported } =
            std::mem::replace(&mut live.phase, Phase::Comparing)
        else {
            return Ok(());
        };
        let held_since = Instant::now();
        let cut = tokio::select! {
            cut = cut => cut,
            _ = shutdown.changed() => return Ok(()),
        };
        // Without C the task failed; its error is the request's result.
        if let Ok(Cut {
            lsn,
            fence,
            exporter,
        }) = cut
        {
            live.phase = Phase::Cutting {
                lsn,
                fence,
                exporter,
                exported,
                held_since,
            };
        }
        Ok(())
    }

    /// The batch up to C is applied: once its targets commit, exports their snapshot for the
    /// task, and the engine goes on.
    pub(super) async fn cut(&mut self) -> Result<(), EngineError> {
        self.settle().await?;
        let Some(live) = self.live.as_mut() else {
            return Ok(());
        };
        let Phase::Cutting {
            lsn,
            exporter,
            exported,
            held_since,
            ..
        } = std::mem::replace(&mut live.phase, Phase::Comparing)
        else {
            return Ok(());
        };
        debug_assert!(self.progress.targets() <= lsn);
        match live::export(exporter).await {
            Ok(e) => {
                // A task gone already has its error in its result.
                let _ = exported.send(e);
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot export the targets' snapshot; the reconcile fails")
            }
        }
        let paused = held_since.elapsed();
        self.metrics
            .reconcile_pause_max_us
            .fetch_max(paused.as_micros() as u64, Ordering::Relaxed);
        tracing::info!(id = %live.req.id, lsn = %lsn, pause_ms = paused.as_secs_f64() * 1000.0, "targets exported at the reconcile's LSN; applying on");
        Ok(())
    }

    /// Serves the end of a live reconcile whose task finished: the views whose target differed
    /// are reconciled again, held, then the request's result is recorded.
    pub(super) async fn finish_live(&mut self) -> Result<(), EngineError> {
        let Some(mut live) = self.live.take_if(|l| l.task.is_finished()) else {
            return Ok(());
        };
        // Finished: this does not wait. A task that panicked found nothing.
        let found = (&mut live.task)
            .await
            .unwrap_or(Err(ReconcileError::EngineGone));
        let (req, started) = (live.req.clone(), live.started);
        let outcome = match found {
            Err(e) => Err(e.to_string()),
            Ok(found) => {
                tracing::info!(id = %req.id, lsn = %found.lsn, recompute_ms = found.recompute.as_millis() as u64, "compared at one LSN beside the stream");
                let (mut outcomes, recheck) = self.sort_found(&live.views, found.views);
                let mut lsn = found.lsn;
                if !recheck.is_empty() {
                    // Held: the state decides whether the target can be repaired.
                    let views: Vec<(usize, bool)> =
                        recheck.iter().map(|i| live.views[*i]).collect();
                    match self.reconcile(req.id, &views).await? {
                        Ok((at, again)) => {
                            lsn = at;
                            for (i, o) in recheck.iter().zip(again) {
                                outcomes[*i] = o;
                            }
                        }
                        Err(e) => {
                            for i in &recheck {
                                outcomes[*i].error = Some(e.clone());
                            }
                        }
                    }
                }
                outcomes.extend(self.refresh_fallbacks(req.id, &live.fallbacks).await);
                Ok((lsn, outcomes))
            }
        };
        self.finish(&req, started, outcome).await
    }

    /// Per view, the outcome of its comparison at C, and the indexes of those whose target
    /// differed.
    fn sort_found(
        &self,
        views: &[(usize, bool)],
        found: Vec<Result<crate::reconcile::Report, String>>,
    ) -> (Vec<ViewOutcome>, Vec<usize>) {
        let mut outcomes = Vec::new();
        let mut recheck = Vec::new();
        for (i, ((v, _), report)) in views.iter().zip(found).enumerate() {
            let mut o = ViewOutcome {
                view: self.prepared.plans[*v].name.to_string(),
                ..ViewOutcome::default()
            };
            match report {
                Ok(r) if r.diffs.is_empty() => o.compared = Some(r),
                Ok(_) => recheck.push(i),
                Err(e) => o.error = Some(e),
            }
            outcomes.push(o);
        }
        (outcomes, recheck)
    }
}
