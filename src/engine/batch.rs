//! The batch loop: events from the stream gathered into batches, folded into state on the
//! state thread, written to the targets, then the state committed (in that order: see
//! [`super::durability`]). Large transactions are folded part by part; a view whose SQL fails
//! on the data, or whose target can no longer be written, fails alone.
//!
//! Midnights: before each batch, if the server-zone date has changed, the date moves (see
//! [`super::midnight`]).

use std::collections::HashMap;
use std::time::Duration;

use tokio::sync::watch;

use super::live_reconcile::Mark;
use super::pipeline::Visible;
use super::{requests, EngineError, Loop};
use crate::bookkeeping::views;
use crate::change::{Change, TargetChange};
use crate::maintain::MaintainError;
use crate::pg::{sql_err, Lsn, QualifiedName};
use crate::source::stream::{SchemaBreak, SourceStream, StreamEvent};
use crate::state::keys;
use crate::state::meta;
use crate::state::store::Durability;

/// A large transaction folded part by part (see [`StreamEvent::Part`]) while the rest arrives.
#[derive(Default)]
pub(super) struct Parts {
    /// Target rows of the parts so far, per view, by encoded group key (later parts win).
    deltas: Vec<HashMap<Vec<u8>, TargetChange>>,
    touched: Vec<QualifiedName>,
}

impl Parts {
    /// Takes `later` target rows over the parts' own (later parts win per group; the ranks
    /// changed add up).
    fn absorb(&mut self, later: Vec<Vec<TargetChange>>) {
        if self.deltas.len() < later.len() {
            self.deltas.resize_with(later.len(), HashMap::new);
        }
        for (rows, later) in self.deltas.iter_mut().zip(later) {
            for change in later {
                let key = keys::encode(&change.key);
                let merged = match rows.remove(&key) {
                    Some(earlier) => earlier.then(change),
                    None => change,
                };
                rows.insert(key, merged);
            }
        }
    }

    /// The parts' target rows updated by `later` ones (the transaction's last part and the
    /// transactions after it in the batch).
    fn merged(mut self, later: Vec<Vec<TargetChange>>) -> Vec<Vec<TargetChange>> {
        self.absorb(later);
        self.deltas
            .into_iter()
            .map(|rows| rows.into_values().collect())
            .collect()
    }
}

/// One committed source transaction waiting in a batch.
pub(super) struct PendingTxn {
    end_lsn: Lsn,
    commit_time_micros: i64,
    changes: Vec<Change>,
    touched: Vec<QualifiedName>,
}

/// How long the stream must stay quiet before a non-full batch is applied (see `Loop::run`).
const BATCH_LINGER: Duration = Duration::from_millis(2);

/// A batch whose newest transaction committed longer ago than this means a backlog: once the
/// stream goes quiet, it is drained and acknowledged at once (see `Loop::checkpoint`). Batches
/// stay the same size: three and five times larger ones drained a backlog only 10-12% faster,
/// for 150-190 MB more peak memory (2026-12-05).
const BACKLOG_LAG_MICROS: i64 = 1_000_000;

impl Loop<'_> {
    pub(super) async fn run(
        &mut self,
        shutdown: &mut watch::Receiver<bool>,
    ) -> Result<(), EngineError> {
        loop {
            self.advance_clock().await?;
            let mut batch: Vec<PendingTxn> = Vec::new();
            let mut rows = 0usize;
            let mut idle_at: Option<(Lsn, i64)> = None;
            let mut full = false;
            let mut deadline: Option<tokio::time::Instant> = None;
            let mut last_event: Option<tokio::time::Instant> = None;
            let tick = tokio::time::sleep(super::HEARTBEAT);
            tokio::pin!(tick);
            // A live reconcile's marks: its hold message, or the end of its batch at C.
            let (mut hold, mut cut) = (false, false);
            let live_done = self.live.as_ref().map(|l| l.done.clone());
            loop {
                let batch_deadline = async {
                    match deadline {
                        Some(d) => tokio::time::sleep_until(d).await,
                        None => std::future::pending().await,
                    }
                };
                // Adaptive batching: a batch closes when the stream has been quiet for
                // BATCH_LINGER (so a lone transaction is applied at once: low latency when
                // writes are sparse), when it reaches batch_max_rows, or batch_max_ms after it
                // opened (under a steady stream). Transactions arriving while a batch is applied
                // queue up and form the next one, so batches grow with the load (a backlog is
                // applied in full-size batches). `next` keeps a partial transaction in `self`
                // (cancel-safe).
                let quiet = async {
                    match last_event {
                        Some(t) if !batch.is_empty() => {
                            tokio::time::sleep_until(t + BATCH_LINGER).await
                        }
                        _ => std::future::pending().await,
                    }
                };
                let reconciled = async {
                    match &live_done {
                        Some(done) => done.notified().await,
                        None => std::future::pending().await,
                    }
                };
                tokio::select! {
                    ev = self.stream.next() => {
                        let ev = ev?;
                        match self.live_mark(&ev) {
                            Mark::None => {}
                            Mark::Hold => {
                                hold = true;
                                break;
                            }
                            Mark::Cut => {
                                // The event comes again after the cut, in the next batch.
                                if !matches!(ev, StreamEvent::Message { .. }) {
                                    self.stream.put_back(vec![ev]);
                                }
                                cut = true;
                                break;
                            }
                        }
                        match ev {
                            ev @ (StreamEvent::Transaction { .. } | StreamEvent::Part { .. }) => {
                                let queued = batch.len();
                                rows += self.accept(ev, &mut batch).await?;
                                if batch.is_empty() {
                                    // A part applied the transactions before it.
                                    rows = 0;
                                    deadline = None;
                                } else if batch.len() > queued {
                                    last_event = Some(tokio::time::Instant::now());
                                    deadline.get_or_insert_with(|| tokio::time::Instant::now() + Duration::from_millis(self.cfg.batch_max_ms));
                                    if rows >= self.cfg.batch_max_rows {
                                        full = true;
                                        break;
                                    }
                                }
                            }
                            StreamEvent::Message { prefix, content } => {
                                // A request is served after the transactions before it; a fence
                                // or hold message of no reconcile in progress (left by an
                                // interrupted one) means nothing.
                                if prefix == requests::REQUEST_PREFIX {
                                    self.queue_request(&content);
                                    break;
                                }
                            }
                            StreamEvent::Idle { wal_end, server_time_micros } => {
                                // Everything before wal_end has been received; a batch in progress
                                // keeps filling until its deadline (keepalives also arrive mid-backlog).
                                idle_at = Some(idle_at.map_or((wal_end, server_time_micros), |(w, t): (Lsn, i64)| (w.max(wal_end), t.max(server_time_micros))));
                                if batch.is_empty() {
                                    break;
                                }
                            }
                        }
                    },
                    _ = batch_deadline => break,
                    _ = quiet => break,
                    _ = reconciled => break,
                    _ = &mut tick, if batch.is_empty() => break,
                    _ = shutdown.changed() => {
                        if !batch.is_empty() {
                            self.apply(batch).await?;
                        }
                        return self.checkpoint(true).await;
                    }
                }
            }
            if let Some(newest) = batch.last() {
                let lag = crate::pg::wal::pg_micros_now() - newest.commit_time_micros;
                self.lagging = lag > BACKLOG_LAG_MICROS;
                self.submit(batch).await?;
            }
            if cut {
                self.cut().await?;
            }
            if hold {
                self.hold_for_cut(shutdown).await?;
            }
            if let Some((wal_end, server_time)) = idle_at {
                self.idle(wal_end, server_time);
            }
            // Full batches mean a backlog; a keepalive after a batch that was not full, its end.
            self.drained = self.behind && !full && idle_at.is_some();
            self.behind |= full || self.lagging;
            // Requests before the checkpoint: the slot is not acknowledged past a request's
            // message until it is served, so one interrupted by a crash comes again.
            self.serve_requests().await?;
            self.checkpoint(false).await?;
            self.heartbeat().await?;
            if *shutdown.borrow() {
                return self.checkpoint(true).await;
            }
        }
    }

    /// Takes a committed transaction into `batch` (unless the state has it already) or folds a
    /// part of a large one (after applying `batch`, which came before it); returns the source
    /// rows added to `batch`.
    pub(super) async fn accept(
        &mut self,
        ev: StreamEvent,
        batch: &mut Vec<PendingTxn>,
    ) -> Result<usize, EngineError> {
        match ev {
            StreamEvent::Transaction {
                end_lsn,
                commit_time_micros,
                changes,
                touched,
                breaks,
            } => {
                self.schema_breaks(breaks).await?;
                if end_lsn <= self.progress.state() {
                    return Ok(0);
                }
                let rows = changes.len();
                batch.push(PendingTxn {
                    end_lsn,
                    commit_time_micros,
                    changes,
                    touched,
                });
                Ok(rows)
            }
            StreamEvent::Part {
                final_lsn,
                changes,
                touched,
                breaks,
            } => {
                self.schema_breaks(breaks).await?;
                if !batch.is_empty() {
                    self.apply(std::mem::take(batch)).await?;
                }
                self.apply_part(final_lsn, changes, touched).await?;
                Ok(0)
            }
            StreamEvent::Idle { .. } | StreamEvent::Message { .. } => Ok(0),
        }
    }

    /// Applies a batch and waits until its targets are visible (see [`Self::submit`]).
    pub(super) async fn apply(&mut self, batch: Vec<PendingTxn>) -> Result<(), EngineError> {
        self.submit(batch).await?;
        self.settle().await
    }

    /// Applies a batch: state-only for what the targets already reflect, then the rest, whose
    /// target write is left in flight while the loop gathers and folds the next batch (see
    /// [`super::pipeline`]).
    pub(super) async fn submit(&mut self, batch: Vec<PendingTxn>) -> Result<(), EngineError> {
        // The batch holds the last part of a large transaction when parts were folded.
        let parts = self.parts.take();
        let mut touched: Vec<QualifiedName> = Vec::new();
        let part_touched = parts.iter().flat_map(|p| &p.touched);
        for name in part_touched.chain(batch.iter().flat_map(|t| &t.touched)) {
            if !touched.contains(name) {
                touched.push(name.clone());
            }
        }
        let (replay, fresh): (Vec<PendingTxn>, Vec<PendingTxn>) = batch
            .into_iter()
            .partition(|t| t.end_lsn <= self.progress.targets());
        if let Some(last) = replay.last().map(|t| t.end_lsn) {
            let changes: Vec<Change> = replay.into_iter().flat_map(|t| t.changes).collect();
            self.fold(changes).await?;
            self.commit_state(last).await?;
        }
        let Some(last) = fresh.last() else {
            return Ok(());
        };
        // Everything up to the targets' position is in the state: it takes their date before
        // going past them.
        self.align_to_targets().await?;
        let (lsn, commit_time) = (last.end_lsn, last.commit_time_micros);
        let commit_times: Vec<i64> = fresh.iter().map(|t| t.commit_time_micros).collect();
        let source_rows: usize = fresh.iter().map(|t| t.changes.len()).sum();
        let changes: Vec<Change> = fresh.into_iter().flat_map(|t| t.changes).collect();
        let started = std::time::Instant::now();
        // Meanwhile the previous batch's targets commit.
        let deltas = self.fold(changes).await?;
        let deltas = match parts {
            Some(p) => p.merged(deltas),
            None => deltas,
        };
        let fold = started.elapsed();
        // Settles the previous write first: this batch's state goes on top of it.
        self.commit_state(lsn).await?;
        touched.extend(self.changed_views(&deltas));
        let batch = Visible {
            lsn,
            commit_times,
            source_rows,
            target_rows: target_rows(&deltas),
            touched,
            fold,
            date: self.date,
        };
        self.start_write(deltas, Some(commit_time), batch).await
    }

    /// Starts the target write of a batch whose state is committed (the write before it has
    /// settled), skipping failed views.
    pub(super) async fn start_write(
        &mut self,
        deltas: Vec<Vec<TargetChange>>,
        commit_time: Option<i64>,
        batch: Visible,
    ) -> Result<(), EngineError> {
        let skip = self.failed_views().await?;
        self.sink.start(deltas, skip, commit_time, batch)?;
        Ok(())
    }

    /// Waits for the target write in flight, if any: then its batch is visible. Moves T,
    /// fails the views whose targets could not be written, tells the fallback refresher, and
    /// counts the batch.
    pub(super) async fn settle(&mut self) -> Result<(), EngineError> {
        let settled = self.sink.settle();
        let Some(w) = reading_ahead(&mut self.stream, self.cfg.batch_max_rows, settled).await?
        else {
            return Ok(());
        };
        let b = w.batch;
        self.progress.targets_committed(b.lsn);
        self.metrics.write(b.target_rows as u64, w.write);
        for (v, why) in w.failed {
            let name = self.sink.table(v).plan_name.clone();
            self.view_failed(v, &name, why).await?;
        }
        tracing::debug!(
            txns = b.commit_times.len(),
            source_rows = b.source_rows,
            target_rows = b.target_rows,
            fold_ms = b.fold.as_millis() as u64,
            write_ms = w.write.as_millis() as u64,
            "batch applied"
        );
        self.notify(b.touched);
        if !b.commit_times.is_empty() {
            self.record_batch(&b.commit_times, b.source_rows, w.visible_at)
                .await?;
        }
        Ok(())
    }

    /// Counts the batch and each transaction's commit-to-visible latency.
    async fn record_batch(
        &self,
        commit_times: &[i64],
        source_rows: usize,
        visible_at: i64,
    ) -> Result<(), EngineError> {
        let latencies: Vec<u64> = commit_times
            .iter()
            .map(|c| (visible_at - c).max(0) as u64)
            .collect();
        self.metrics.batch(source_rows as u64, &latencies);
        self.record_state_size().await
    }

    /// The state's size and compaction backlog, for `/metrics`: after each batch, and after
    /// each checkpoint (which empties the memtables into table files).
    pub(super) async fn record_state_size(&self) -> Result<(), EngineError> {
        let (size, (pending, running)) = self
            .state
            .call(|m| (m.store().size_bytes(), m.store().compaction_stats()))
            .await?;
        let relaxed = std::sync::atomic::Ordering::Relaxed;
        self.metrics.state_bytes.store(size, relaxed);
        self.metrics
            .compaction_pending_bytes
            .store(pending, relaxed);
        self.metrics.compactions_running.store(running, relaxed);
        Ok(())
    }

    /// The incremental views a batch's target rows change.
    pub(super) fn changed_views(&self, deltas: &[Vec<TargetChange>]) -> Vec<QualifiedName> {
        self.prepared
            .plans
            .iter()
            .zip(deltas)
            .filter(|(_, d)| !d.is_empty())
            .map(|(plan, _)| plan.name.clone())
            .collect()
    }

    /// Tells the fallback refresher which tables and incremental views changed.
    fn notify(&self, changed: Vec<QualifiedName>) {
        let Some(tx) = &self.refresher else { return };
        if !changed.is_empty() {
            let _ = tx.send(changed);
        }
    }

    /// Folds changes into state (in memory); a view whose SQL fails on this data is marked failed
    /// and the batch is folded again without it.
    async fn fold(
        &mut self,
        mut changes: Vec<Change>,
    ) -> Result<Vec<Vec<TargetChange>>, EngineError> {
        loop {
            // The batch travels to the state thread and back (for a retry), never copied.
            let started = std::time::Instant::now();
            let folded = self.state.call(move |m| {
                let r = m.apply(&changes);
                if r.is_err() {
                    m.discard();
                }
                (r, m.stats(), m.view_costs(), changes)
            });
            let (result, stats, views_ms, back) =
                reading_ahead(&mut self.stream, self.cfg.batch_max_rows, folded).await?;
            changes = back;
            match result {
                Ok(deltas) => {
                    let took = started.elapsed();
                    self.metrics.fold(&stats, took);
                    tracing::debug!(
                        changes = stats.changes,
                        groups = stats.groups,
                        group_hits = stats.group_hits,
                        group_reads = stats.group_reads,
                        row_reads = stats.row_reads,
                        group_kb = stats.group_bytes >> 10,
                        row_pass_ms = stats.row_pass_micros / 1000,
                        fold_ms = took.as_millis() as u64,
                        views_ms,
                        "batch folded"
                    );
                    return Ok(deltas);
                }
                Err(MaintainError::View { view, name, error }) => {
                    let why = error.to_string();
                    self.mark_failed(view, &name, &why).await?;
                }
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// Folds the first changes of a large transaction ending after `final_lsn` (see
    /// [`StreamEvent::Part`]) and writes them to the state at once, so memory stays bounded by
    /// a part. They are written without an LSN and marked partial: the transaction's last part
    /// commits them with its LSN and clears the mark. Checkpoints wait until the transaction's
    /// end, but RocksDB flushes a full memtable on its own and when it closes, so an
    /// interruption in between (a crash, an error, a stop) can leave the mark on disk: then
    /// `setup::init` rebuilds the state from a fresh snapshot rather than count the first
    /// parts twice.
    async fn apply_part(
        &mut self,
        final_lsn: Lsn,
        changes: Vec<Change>,
        touched: Vec<QualifiedName>,
    ) -> Result<(), EngineError> {
        if final_lsn < self.progress.state() {
            return Ok(()); // the whole transaction is in the state already
        }
        if final_lsn > self.progress.targets() {
            self.align_to_targets().await?;
        }
        let deltas = self.fold(changes).await?;
        // The held layer may go to RocksDB here: a part's memory is bounded.
        self.commit_held(|m| m.store().commit(&[meta::partial(true)], Durability::Held))
            .await?;
        crate::failpoint::hit("after_part");
        tracing::debug!(%final_lsn, "folded a part of a large transaction");
        let parts = self.parts.get_or_insert_with(Parts::default);
        // Up to the targets' position the transaction only rebuilds state.
        if final_lsn >= self.progress.targets() {
            parts.absorb(deltas);
        }
        parts.touched.extend(touched);
        Ok(())
    }

    /// Fails the views that read a column a schema change took away; the others go on.
    async fn schema_breaks(&mut self, breaks: Vec<SchemaBreak>) -> Result<(), EngineError> {
        if breaks.is_empty() {
            return Ok(());
        }
        let hits = self
            .state
            .call(move |m| {
                let mut out: Vec<(usize, String, String)> = Vec::new();
                for b in &breaks {
                    for v in m.readers(b.table, b.column) {
                        if m.failed(v).is_none() && !out.iter().any(|(x, ..)| *x == v) {
                            out.push((v, m.plan(v).name.to_string(), b.why.clone()));
                        }
                    }
                }
                out
            })
            .await?;
        for (v, name, why) in hits {
            self.mark_failed(v, &name, &why).await?;
        }
        Ok(())
    }

    /// Fails view `v` with why: it is no longer folded or written, and stays failed (in
    /// `deltamv.views` and `status`) until the next `deltamv init`; the others go on.
    pub(super) async fn mark_failed(
        &mut self,
        view: usize,
        name: &str,
        why: &str,
    ) -> Result<(), EngineError> {
        views::mark_failed(&self.prepared.client, name, why)
            .await
            .map_err(sql_err(format!("recording {name} failed")))?;
        self.view_failed(view, name, why.to_string()).await
    }

    /// Takes view `v` out of the maintenance (its failure is recorded already).
    async fn view_failed(
        &mut self,
        view: usize,
        name: &str,
        why: String,
    ) -> Result<(), EngineError> {
        tracing::error!(view = %name, error = %why, "view failed; other views continue");
        self.metrics
            .errors_view
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.state.call(move |m| m.set_failed(view, why)).await?;
        Ok(())
    }

    /// Per incremental view: whether it is failed (a failed view is neither folded, written,
    /// compared nor repaired: it waits for `deltamv init`).
    pub(super) async fn failed_views(&self) -> Result<Vec<bool>, EngineError> {
        let n = self.prepared.plans.len();
        Ok(self
            .state
            .call(move |m| (0..n).map(|v| m.failed(v).is_some()).collect())
            .await?)
    }
}

/// The target rows a batch's changes write: each changed group's rows, or its deletion.
pub(super) fn target_rows(deltas: &[Vec<TargetChange>]) -> usize {
    deltas
        .iter()
        .flat_map(|d| d.iter().map(|c| c.rows.len().max(1)))
        .sum()
}

/// Awaits `work` (a batch folding on the state thread, the write before it settling, a
/// checkpoint's write into RocksDB) while the stream is read and decoded ahead, up to
/// `max_rows` changes (a batch): the next batch is ready when the work ends, instead of being
/// read after it while the state thread waits.
pub(super) async fn reading_ahead<T>(
    stream: &mut SourceStream,
    max_rows: usize,
    work: impl std::future::Future<Output = T>,
) -> T {
    tokio::pin!(work);
    loop {
        tokio::select! {
            biased;
            out = &mut work => return out,
            () = stream.read_ahead(), if stream.ahead() < max_rows => {}
        }
    }
}
