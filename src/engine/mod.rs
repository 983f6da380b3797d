//! The apply loop, and why it is crash-safe.
//!
//! Positions: T = the LSN recorded in `deltamv.progress` in the same transaction as the target
//! rows, S = the LSN recorded in RocksDB with the state, D = the S of the last checkpoint (the
//! state RocksDB has on disk), A = what the slot was told (confirmed_flush_lsn). Each batch of
//! committed source transactions is folded into state in memory, then (1) the targets and T are
//! committed in one transaction, (2) the state and S are written to RocksDB's memtables in one
//! atomic batch without its write-ahead log ([`Durability::Unlogged`]). Every `checkpoint_ms`
//! (and at a clean stop) (3) the memtables are flushed, all column families atomically, on a
//! blocking thread while later batches go on into fresh memtables; its end makes D the S of
//! the flush's start, and (4) only then is the slot acknowledged up to D (never past T). So A <= D <= S <= T
//! always, and kill -9 at any point leaves a state on disk as of some batch's S' with
//! A <= S' <= T (RocksDB may also flush on its own when a memtable fills; what it persists is
//! still some whole batch, all column families alike):
//! - the slot replays everything after A; transactions with end LSN <= S' are skipped (already
//!   in state), those in (S', T] only rebuild state (the targets already hold their effect;
//!   writing older values again would move readers back in time), and writing resumes after T.
//! - a crash before (1) loses only the batch in memory, which the slot still holds.
//!
//! Why unlogged: a synced write of every touched group per batch cost as much as writing the
//! targets (`bench/results/profile-2026-11-24.md`), and the slot already keeps every change
//! after A, so RocksDB's own log only duplicated it. The price is a replay of at most a
//! checkpoint interval of changes after a crash, and WAL retained on the server for as long.
//!
//! Targets carry absolute values per group, so even a repeated write would be harmless.
//! When the stream is idle and nothing is pending, the slot is acknowledged up to the server's
//! WAL position from its keepalive (after the next checkpoint if state has unflushed writes), so
//! WAL does not pile up while nothing relevant is written.
//!
//! Midnights: before each batch, if the server-zone date has changed, the time index is
//! processed as a batch of its own (see [`crate::maintain`]), written like any other.
//!
//! Requests: between batches the loop serves refresh and reconcile requests that arrived on the
//! stream, and reconciles due on a schedule (`engine::requests`), before the checkpoint, so the slot is
//! never acknowledged past a request that was not served.

mod requests;

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use thiserror::Error;
use tokio::sync::watch;

use std::sync::Arc;

use crate::change::{Change, TargetChange};
use crate::clock::Clock;
use crate::config::Config;
use crate::maintain::{MaintainError, Maintainer};
use crate::monitor::Metrics;
use crate::pg::describe;
use crate::pg::{ConnectError, Lsn, QualifiedName};
use crate::setup::{self, Prepared, SetupError};
use crate::sink::target::{self, TargetWriter};
use crate::source::control;
use crate::source::stream::{SchemaBreak, SourceStream, Sources, StreamError, StreamEvent};
use crate::state::keys;
use crate::state::store::{Durability, Flusher, StoreError};
use crate::state::{StateThread, StateThreadGone};

#[derive(Debug, Error)]
pub enum EngineError {
    #[error(transparent)]
    Setup(#[from] SetupError),
    #[error(transparent)]
    Stream(#[from] StreamError),
    #[error(transparent)]
    Maintain(#[from] MaintainError),
    #[error(transparent)]
    StateThread(#[from] StateThreadGone),
    #[error("writing targets: {0}")]
    Sink(String),
}

impl EngineError {
    /// Errors worth a reconnect and retry (the connection or server went away) as opposed to
    /// errors that need an operator (bad configuration, an inconsistent state).
    pub fn is_transient(&self) -> bool {
        self.is_disk_full()
            || matches!(
                self,
                EngineError::Stream(StreamError::Replication(_) | StreamError::Ended)
                    | EngineError::Sink(_)
                    | EngineError::Setup(
                        SetupError::Control(
                            control::ControlError::Connect(ConnectError::Refused { .. })
                                | control::ControlError::SlotBusy(_)
                        ) | SetupError::Connect(ConnectError::Refused { .. })
                    )
            )
    }

    /// The state's disk is full: applying pauses (the slot keeps every change) and resumes
    /// once RocksDB can write again.
    pub fn is_disk_full(&self) -> bool {
        match self {
            EngineError::Maintain(MaintainError::Store(e))
            | EngineError::Setup(SetupError::Store(e))
            | EngineError::Setup(SetupError::Maintain(MaintainError::Store(e))) => e.is_disk_full(),
            _ => false,
        }
    }
}

/// A large transaction folded part by part (see [`StreamEvent::Part`]) while the rest arrives.
#[derive(Default)]
struct Parts {
    /// Target rows of the parts so far, per view, by encoded group key (later parts win).
    deltas: Vec<HashMap<Vec<u8>, TargetChange>>,
    touched: Vec<QualifiedName>,
}

impl Parts {
    /// Takes `later` target rows over the parts' own (later parts win per group).
    fn absorb(&mut self, later: Vec<Vec<TargetChange>>) {
        if self.deltas.len() < later.len() {
            self.deltas.resize_with(later.len(), HashMap::new);
        }
        for (rows, later) in self.deltas.iter_mut().zip(later) {
            for change in later {
                rows.insert(keys::encode(&change.key), change);
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
struct PendingTxn {
    end_lsn: Lsn,
    commit_time_micros: i64,
    changes: Vec<Change>,
    touched: Vec<QualifiedName>,
}

/// Runs until `shutdown` turns true; reconnects after transient errors.
pub async fn run(
    cfg: &Config,
    metrics: Arc<Metrics>,
    mut shutdown: watch::Receiver<bool>,
) -> Result<(), EngineError> {
    let clock = Clock::new(cfg.clock_file.clone());
    let mut backoff = Duration::from_millis(200);
    loop {
        match run_once(cfg, &clock, &metrics, &mut shutdown).await {
            Ok(()) => return Ok(()),
            Err(e) if e.is_disk_full() && !*shutdown.borrow() => {
                tracing::error!(error = %e, state_dir = %cfg.state_dir.display(), retry_in_ms = backoff.as_millis() as u64,
                    "the state disk is full: applying paused (the slot keeps every change); free space there and it resumes");
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {}
                    _ = shutdown.changed() => return Ok(()),
                }
                backoff = (backoff * 2).min(Duration::from_secs(10));
            }
            Err(e) if e.is_transient() && !*shutdown.borrow() => {
                metrics
                    .errors_connection
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                tracing::warn!(error = %e, retry_in_ms = backoff.as_millis() as u64, "engine interrupted; reconnecting");
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {}
                    _ = shutdown.changed() => return Ok(()),
                }
                backoff = (backoff * 2).min(Duration::from_secs(10));
            }
            Err(e) => return Err(e),
        }
    }
}

struct Loop<'a> {
    cfg: &'a Config,
    clock: &'a Clock,
    prepared: Prepared,
    state: StateThread<Maintainer>,
    writers: Vec<TargetWriter>,
    /// Where to report changes for fallback views (absent when there are none).
    refresher: Option<tokio::sync::mpsc::UnboundedSender<Vec<QualifiedName>>>,
    stream: SourceStream,
    /// LSN of the state in RocksDB (S in the module doc).
    state_lsn: Lsn,
    /// LSN of the targets (T).
    target_lsn: Lsn,
    /// Where the slot may go once the state written so far is on disk: at most T, up to the
    /// server's WAL end when idle.
    ack_ready: Lsn,
    /// What the slot was told.
    acked: Lsn,
    /// Flushes the state from a blocking thread.
    flusher: Flusher,
    /// A large transaction being folded part by part.
    parts: Option<Parts>,
    /// The checkpoint in flight: what it lets the slot acknowledge, and the flush.
    flushing: Option<(Lsn, tokio::task::JoinHandle<Result<Duration, StoreError>>)>,
    /// Unlogged state writes since the last checkpoint.
    dirty: bool,
    last_checkpoint: Instant,
    last_heartbeat: Instant,
    /// Send time of the latest keepalive after which everything received was applied.
    caught_up_at: Option<i64>,
    metrics: Arc<Metrics>,
    /// Requests received from the stream, served after the batch before them.
    requests: VecDeque<requests::Request>,
    /// Per incremental view: when its next scheduled reconcile is due (microseconds since 1970).
    reconcile_due: Vec<Option<i64>>,
    /// Reconciles started by this loop (names their temporary slots).
    reconciles: u32,
}

async fn run_once(
    cfg: &Config,
    clock: &Clock,
    metrics: &Arc<Metrics>,
    shutdown: &mut watch::Receiver<bool>,
) -> Result<(), EngineError> {
    let mut prepared = setup::prepare(cfg).await?;
    let (state, targets, state_lsn) =
        setup::init(&mut prepared, cfg, clock, setup::Start::Run).await?;
    let target_lsn = target::read_progress(&prepared.client, &cfg.slot)
        .await
        .map_err(SetupError::from)?
        .unwrap_or(state_lsn);
    let mut writers = Vec::with_capacity(targets.len());
    for t in targets {
        writers.push(
            TargetWriter::prepare(&prepared.client, t)
                .await
                .map_err(|e| EngineError::Sink(describe(&e)))?,
        );
    }
    let tables = prepared.tables.clone();
    let count = tables.len();
    let (referenced, flusher) = state
        .call(move |m| {
            let referenced = (0..count)
                .map(|t| m.referenced(t).to_vec())
                .collect::<Vec<_>>();
            (referenced, m.store().flusher())
        })
        .await?;
    let sources = Sources {
        tables,
        referenced,
        published: prepared.published.clone(),
    };
    let stream = SourceStream::start(
        &prepared.db,
        &cfg.slot,
        &cfg.publication,
        state_lsn,
        sources,
        prepared.tz,
    )
    .await?;
    tracing::info!(state_lsn = %state_lsn, target_lsn = %target_lsn, "streaming");
    let refresher = (!prepared.fallbacks.is_empty()).then(|| {
        crate::refresher::spawn(
            prepared.db.clone(),
            prepared.fallbacks.clone(),
            &prepared.settings,
            Clock::new(cfg.clock_file.clone()),
            shutdown.clone(),
        )
    });
    let now = clock.now_micros();
    let reconcile_due = prepared
        .plans
        .iter()
        .map(|p| {
            let settings = prepared.settings.view(&p.name.to_string());
            settings.reconcile.as_ref().and_then(|s| s.next_after(now))
        })
        .collect();
    let mut lp = Loop {
        cfg,
        clock,
        prepared,
        state,
        writers,
        refresher,
        stream,
        state_lsn,
        target_lsn,
        ack_ready: state_lsn.min(target_lsn),
        acked: Lsn::ZERO,
        flusher,
        parts: None,
        flushing: None,
        dirty: false,
        last_checkpoint: Instant::now(),
        last_heartbeat: Instant::now(),
        caught_up_at: None,
        metrics: metrics.clone(),
        requests: VecDeque::new(),
        reconcile_due,
        reconciles: 0,
    };
    requests::close_interrupted(&lp.prepared.client)
        .await
        .map_err(|e| EngineError::Sink(describe(&e)))?;
    let result = lp.run(shutdown).await;
    // A flush in flight holds the RocksDB handle: let it end before a reconnect reopens it.
    if let Some((_, flush)) = lp.flushing.take() {
        let _ = flush.await;
    }
    lp.stream.shutdown().await;
    result
}

/// How long the stream must stay quiet before a non-full batch is applied (see `Loop::run`).
const BATCH_LINGER: Duration = Duration::from_millis(2);

impl Loop<'_> {
    async fn run(&mut self, shutdown: &mut watch::Receiver<bool>) -> Result<(), EngineError> {
        loop {
            self.advance_clock().await?;
            let mut batch: Vec<PendingTxn> = Vec::new();
            let mut rows = 0usize;
            let mut idle_at: Option<(Lsn, i64)> = None;
            let mut deadline: Option<tokio::time::Instant> = None;
            let mut last_event: Option<tokio::time::Instant> = None;
            let tick = tokio::time::sleep(Duration::from_secs(1));
            tokio::pin!(tick);
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
                tokio::select! {
                    ev = self.stream.next() => match ev? {
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
                                    break;
                                }
                            }
                        }
                        StreamEvent::Message { prefix, content } => {
                            // A request is served after the transactions before it; a fence
                            // outside a reconcile (left by an interrupted one) means nothing.
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
                    },
                    _ = batch_deadline => break,
                    _ = quiet => break,
                    _ = &mut tick, if batch.is_empty() => break,
                    _ = shutdown.changed() => {
                        if !batch.is_empty() {
                            self.apply(batch).await?;
                        }
                        return self.checkpoint(true).await;
                    }
                }
            }
            if !batch.is_empty() {
                self.apply(batch).await?;
            }
            if let Some((wal_end, server_time)) = idle_at {
                self.idle(wal_end, server_time);
            }
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
    async fn accept(
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
                if end_lsn <= self.state_lsn {
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

    /// Applies a batch: state-only for what the targets already reflect, then the rest.
    async fn apply(&mut self, batch: Vec<PendingTxn>) -> Result<(), EngineError> {
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
            .partition(|t| t.end_lsn <= self.target_lsn);
        if let Some(last) = replay.last().map(|t| t.end_lsn) {
            let changes: Vec<Change> = replay.into_iter().flat_map(|t| t.changes).collect();
            self.fold(changes).await?;
            self.commit_state(last).await?;
        }
        let Some(last) = fresh.last() else {
            return Ok(());
        };
        let (lsn, commit_time) = (last.end_lsn, last.commit_time_micros);
        let commit_times: Vec<i64> = fresh.iter().map(|t| t.commit_time_micros).collect();
        let source_rows: usize = fresh.iter().map(|t| t.changes.len()).sum();
        let changes: Vec<Change> = fresh.into_iter().flat_map(|t| t.changes).collect();
        let started = std::time::Instant::now();
        let deltas = self.fold(changes).await?;
        let deltas = match parts {
            Some(p) => p.merged(deltas),
            None => deltas,
        };
        let folded = started.elapsed();
        crate::failpoint::hit("before_target_commit");
        self.write_targets(&deltas, lsn, Some(commit_time)).await?;
        let written = started.elapsed();
        crate::failpoint::hit("after_target_commit");
        self.commit_state(lsn).await?;
        tracing::debug!(
            txns = commit_times.len(),
            source_rows,
            target_rows = deltas.iter().map(Vec::len).sum::<usize>(),
            fold_ms = folded.as_millis() as u64,
            write_ms = (written - folded).as_millis() as u64,
            commit_ms = (started.elapsed() - written).as_millis() as u64,
            "batch applied"
        );
        self.notify(touched, &deltas);
        self.record_batch(&commit_times, source_rows).await?;
        Ok(())
    }

    /// Counts the batch and each transaction's commit-to-visible latency.
    async fn record_batch(
        &self,
        commit_times: &[i64],
        source_rows: usize,
    ) -> Result<(), EngineError> {
        let now = crate::pg::wal::pg_micros_now();
        let latencies: Vec<u64> = commit_times
            .iter()
            .map(|c| (now - c).max(0) as u64)
            .collect();
        self.metrics.batch(source_rows as u64, &latencies);
        self.record_state_size().await
    }

    /// The state's size and compaction backlog, for `/metrics`: after each batch, and after
    /// each checkpoint (which empties the memtables into table files).
    async fn record_state_size(&self) -> Result<(), EngineError> {
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

    /// Tells the fallback refresher which tables and incremental views changed.
    fn notify(&self, mut changed: Vec<QualifiedName>, deltas: &[Vec<TargetChange>]) {
        let Some(tx) = &self.refresher else { return };
        for (plan, d) in self.prepared.plans.iter().zip(deltas) {
            if !d.is_empty() {
                changed.push(plan.name.clone());
            }
        }
        if !changed.is_empty() {
            let _ = tx.send(changed);
        }
    }

    /// Folds changes into state (in memory); a view whose SQL fails on this data is marked failed
    /// and the batch is folded again without it.
    async fn fold(&mut self, changes: Vec<Change>) -> Result<Vec<Vec<TargetChange>>, EngineError> {
        loop {
            let attempt = changes.clone();
            let result = self.state.call(move |m| {
                let r = m.apply(attempt);
                if r.is_err() {
                    m.discard();
                }
                r
            });
            match result.await? {
                Ok(deltas) => return Ok(deltas),
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
        if final_lsn < self.state_lsn {
            return Ok(()); // the whole transaction is in the state already
        }
        let deltas = self.fold(changes).await?;
        self.state
            .call(|m| {
                m.store()
                    .commit(&[("partial", keys::encode(&true))], Durability::Unlogged)
            })
            .await?
            .map_err(MaintainError::from)?;
        self.dirty = true;
        crate::failpoint::hit("after_part");
        let parts = self.parts.get_or_insert_with(Parts::default);
        // Up to the targets' position the transaction only rebuilds state.
        if final_lsn >= self.target_lsn {
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

    async fn mark_failed(&mut self, view: usize, name: &str, why: &str) -> Result<(), EngineError> {
        tracing::error!(view = %name, error = %why, "view failed; other views continue");
        self.metrics
            .errors_view
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let reason = why.to_string();
        self.state.call(move |m| m.set_failed(view, reason)).await?;
        self.prepared
            .client
            .execute(
                "UPDATE deltamv.views SET state = 'failed', last_error = $2, updated_at = now() WHERE view_name = $1",
                &[&name, &why],
            )
            .await
            .map_err(|e| EngineError::Sink(describe(&e)))?;
        Ok(())
    }

    /// One target transaction for all views, with the applied LSN.
    async fn write_targets(
        &mut self,
        deltas: &[Vec<TargetChange>],
        lsn: Lsn,
        commit_time: Option<i64>,
    ) -> Result<(), EngineError> {
        let sink_err = |e: tokio_postgres::Error| EngineError::Sink(describe(&e));
        let failed: Vec<Option<String>> = {
            let n = self.writers.len();
            self.state
                .call(move |m| (0..n).map(|v| m.failed(v).map(str::to_string)).collect())
                .await?
        };
        // Fast path: every view's statements pipelined in one transaction (a few round trips
        // instead of four per view). A view whose rows its own constraints reject (a data error)
        // rolls this back, and the batch is written again view by view with savepoints, so
        // that view fails alone.
        let tx = self.prepared.client.transaction().await.map_err(sink_err)?;
        let live: Vec<usize> = (0..self.writers.len())
            .filter(|v| !deltas[*v].is_empty() && failed[*v].is_none())
            .collect();
        let writes = live
            .iter()
            .map(|v| self.writers[*v].write(&tx, &deltas[*v]));
        match futures_util::future::try_join_all(writes).await {
            Ok(grown) => {
                let changed: Vec<(String, i64)> = live
                    .iter()
                    .zip(grown)
                    .map(|(v, d)| (self.writers[*v].target.plan_name.clone(), d))
                    .collect();
                commit_targets(tx, &changed, &self.cfg.slot, lsn, commit_time)
                    .await
                    .map_err(sink_err)?;
                return self.targets_committed(lsn, vec![]).await;
            }
            Err(e) if target::is_view_data_error(&e) => {
                tx.rollback().await.map_err(sink_err)?;
            }
            Err(e) => return Err(sink_err(e)),
        }
        let tx = self.prepared.client.transaction().await.map_err(sink_err)?;
        let mut newly_failed = Vec::new();
        let mut changed = Vec::new();
        for (v, (w, changes)) in self.writers.iter().zip(deltas).enumerate() {
            let t = &w.target;
            if changes.is_empty() || failed[v].is_some() {
                continue;
            }
            tx.batch_execute("SAVEPOINT dmv_view")
                .await
                .map_err(sink_err)?;
            match w.write(&tx, changes).await {
                Ok(grown) => {
                    tx.batch_execute("RELEASE SAVEPOINT dmv_view")
                        .await
                        .map_err(sink_err)?;
                    changed.push((t.plan_name.clone(), grown));
                }
                Err(e) if target::is_view_data_error(&e) => {
                    tx.batch_execute("ROLLBACK TO SAVEPOINT dmv_view")
                        .await
                        .map_err(sink_err)?;
                    let why = format!("writing the target failed: {}", describe(&e));
                    tx.execute(
                        "UPDATE deltamv.views SET state = 'failed', last_error = $2, updated_at = now() WHERE view_name = $1",
                        &[&t.plan_name, &why],
                    )
                    .await
                    .map_err(sink_err)?;
                    tracing::error!(view = %t.plan_name, error = %why, "view failed; other views continue");
                    self.metrics
                        .errors_view
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    newly_failed.push((v, why));
                }
                Err(e) => return Err(sink_err(e)),
            }
        }
        commit_targets(tx, &changed, &self.cfg.slot, lsn, commit_time)
            .await
            .map_err(sink_err)?;
        self.targets_committed(lsn, newly_failed).await
    }

    async fn targets_committed(
        &mut self,
        lsn: Lsn,
        newly_failed: Vec<(usize, String)>,
    ) -> Result<(), EngineError> {
        self.target_lsn = self.target_lsn.max(lsn);
        for (v, why) in newly_failed {
            self.state.call(move |m| m.set_failed(v, why)).await?;
        }
        Ok(())
    }

    /// Writes the folded state (unlogged) with its LSN; durable at the next checkpoint.
    async fn commit_state(&mut self, lsn: Lsn) -> Result<(), EngineError> {
        self.state
            .call(move |m| {
                m.commit(
                    lsn,
                    &[("partial", keys::encode(&false))],
                    Durability::Unlogged,
                )
            })
            .await?
            .map_err(MaintainError::from)?;
        self.dirty = true;
        self.state_lsn = self.state_lsn.max(lsn);
        crate::failpoint::hit("after_state_commit");
        self.ack_ready = self.ack_ready.max(self.state_lsn.min(self.target_lsn));
        Ok(())
    }

    /// Makes the state durable every `checkpoint_ms` (or now when `now`, waiting for it), then
    /// lets the slot go as far as that state covers. The flush runs on a blocking thread while
    /// batches go on (writes after it began land in fresh memtables), so a checkpoint does not
    /// stall the stream; its acknowledgement waits for it to finish.
    async fn checkpoint(&mut self, now: bool) -> Result<(), EngineError> {
        if self.parts.is_some() {
            return Ok(()); // no partial transaction on disk (see `apply_part`)
        }
        if let Some((_, flush)) = &self.flushing {
            if !now && !flush.is_finished() {
                return Ok(());
            }
            self.finish_checkpoint().await?;
        }
        if !self.dirty && self.ack_ready > self.acked {
            // Idle with everything on disk: no flush needed. Past the state's LSN the position
            // is recorded first, so that at start a slot confirmed beyond the state's LSN is
            // known to be ours (see `setup::init`); with no unflushed writes, a logged write
            // cannot come back from RocksDB's log without what preceded it.
            let ack = self.ack_ready;
            if ack > self.state_lsn {
                self.record_acked(ack, Durability::Synced).await?;
            }
            self.acked = ack;
            self.stream.ack(ack);
            return Ok(());
        }
        let due =
            now || self.last_checkpoint.elapsed() >= Duration::from_millis(self.cfg.checkpoint_ms);
        if !due || !self.dirty {
            return Ok(());
        }
        let ack = self.ack_ready;
        if ack > self.state_lsn {
            self.record_acked(ack, Durability::Unlogged).await?;
        }
        self.dirty = false;
        self.last_checkpoint = Instant::now();
        let flusher = self.flusher.clone();
        let started = Instant::now();
        let flush = tokio::task::spawn_blocking(move || {
            flusher.flush()?;
            Ok(started.elapsed())
        });
        self.flushing = Some((ack, flush));
        if now {
            self.finish_checkpoint().await?;
        }
        Ok(())
    }

    /// Records in the state how far the slot is about to be acknowledged.
    async fn record_acked(&mut self, ack: Lsn, durability: Durability) -> Result<(), EngineError> {
        self.state
            .call(move |m| {
                m.store()
                    .commit(&[("acked", keys::encode(&ack))], durability)
            })
            .await?
            .map_err(MaintainError::from)?;
        Ok(())
    }

    /// Waits for the flush in flight and acknowledges what it made durable.
    async fn finish_checkpoint(&mut self) -> Result<(), EngineError> {
        let Some((ack, flush)) = self.flushing.take() else {
            return Ok(());
        };
        let took = flush
            .await
            .map_err(|_| StateThreadGone)?
            .map_err(MaintainError::from)?;
        tracing::debug!(ack = %ack, flush_ms = took.as_millis() as u64, "state checkpoint");
        crate::failpoint::hit("after_checkpoint");
        self.acked = self.acked.max(ack);
        self.stream.ack(self.acked);
        self.record_state_size().await
    }

    /// Revisits time-dependent rows when the server-zone date changed.
    async fn advance_clock(&mut self) -> Result<(), EngineError> {
        if self.state_lsn < self.target_lsn {
            // Still rebuilding state up to what the targets show: stay on the state's date until
            // the replay is done, or targets would briefly move back in time.
            return Ok(());
        }
        let today = self.clock.today(&self.prepared.tz);
        let behind = self
            .state
            .call(move |m| (0..m.view_count()).any(|v| m.date(v) != today))
            .await?;
        if !behind {
            return Ok(());
        }
        let deltas = self
            .state
            .call(move |m| {
                let r = m.advance_dates(today);
                if r.is_err() {
                    m.discard();
                }
                r
            })
            .await??;
        tracing::info!(date = %crate::pgtime::format_date(today), "date changed: revisited time-dependent rows");
        let lsn = self.target_lsn;
        self.write_targets(&deltas, lsn, None).await?;
        self.notify(vec![], &deltas);
        self.commit_state(self.state_lsn).await
    }

    /// Everything received is applied and the server has sent everything up to `wal_end`: let
    /// the slot go there, and note that the targets are fresh as of the keepalive's send time.
    fn idle(&mut self, wal_end: Lsn, server_time_micros: i64) {
        if self.state_lsn < self.target_lsn {
            return;
        }
        self.ack_ready = self.ack_ready.max(wal_end);
        self.caught_up_at = Some(server_time_micros);
    }

    /// At most once a second, records when the targets were last known fully fresh. The write
    /// itself produces WAL, so the server answers with another keepalive: an idle engine keeps
    /// showing about zero lag, a stopped or blocked one a growing lag.
    async fn heartbeat(&mut self) -> Result<(), EngineError> {
        let Some(at) = self.caught_up_at else {
            return Ok(());
        };
        if self.last_heartbeat.elapsed() < Duration::from_secs(1) {
            return Ok(());
        }
        self.last_heartbeat = Instant::now();
        self.caught_up_at = None;
        let secs = crate::pg::wal::pg_micros_to_unix_secs(at);
        self.prepared
            .client
            .execute(
                "UPDATE deltamv.progress SET updated_at = now(), caught_up_at = to_timestamp($2::float8) WHERE slot_name = $1",
                &[&self.cfg.slot, &secs],
            )
            .await
            .map_err(|e| EngineError::Sink(describe(&e)))?;
        Ok(())
    }
}

/// Records the changed views (when, and by how many rows each grew) and the applied position,
/// and commits the targets.
async fn commit_targets(
    tx: tokio_postgres::Transaction<'_>,
    changed: &[(String, i64)],
    slot: &str,
    lsn: Lsn,
    commit_time: Option<i64>,
) -> Result<(), tokio_postgres::Error> {
    target::record_row_deltas(&tx, changed).await?;
    target::record_progress(&tx, slot, lsn, commit_time).await?;
    tx.commit().await
}
