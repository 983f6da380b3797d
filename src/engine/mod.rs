//! The apply loop, and why it is crash-safe.
//!
//! Data moves one way: stream -> batch ([`batch`]) -> state thread (the maintainer) -> sink
//! -> slot acknowledgement ([`durability`], which also carries the crash-safety argument).
//! This file starts the loop and decides, by the error's kind, whether a failure is retried
//! after a reconnect (transient) or stops the engine with its message (definite); errors that
//! concern one view only fail that view and never reach here.
//!
//! Requests: between batches the loop serves refresh and reconcile requests that arrived on the
//! stream, and reconciles due on a schedule ([`requests`]); a reconcile compares beside the
//! stream ([`live_reconcile`]), and the slot is not acknowledged past a request until it is
//! served.

mod batch;
mod durability;
mod held_reconcile;
mod live_reconcile;
mod midnight;
mod pipeline;
mod requests;

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use thiserror::Error;
use tokio::sync::watch;

use crate::bookkeeping::progress;
use crate::clock::Clock;
use crate::config::Config;
use crate::maintain::{MaintainError, Maintainer};
use crate::monitor::Metrics;
use crate::pg::{ConnectError, ErrorKind, Lsn, QualifiedName, SqlError};
use crate::setup::{self, Prepared, SetupError};
use crate::sink::write::Targets;
use crate::source::control::ControlError;
use crate::source::stream::{SourceStream, Sources, StreamError};
use crate::state::meta;
use crate::state::store::{Flusher, StoreError};
use crate::state::{StateThread, StateThreadGone};
use durability::Progress;
use pipeline::{SettleError, Sink, WriterLost};

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
    /// A statement of the loop's own failed (the target transaction, bookkeeping).
    #[error(transparent)]
    Sql(#[from] SqlError),
    #[error(transparent)]
    WriterLost(#[from] WriterLost),
}

impl From<SettleError> for EngineError {
    fn from(e: SettleError) -> Self {
        match e {
            SettleError::Write(e) => EngineError::Sql(e),
            SettleError::Lost(e) => EngineError::WriterLost(e),
        }
    }
}

impl EngineError {
    /// Errors worth a reconnect and retry (the connection or server went away) as opposed to
    /// errors that need an operator (bad configuration, an inconsistent state, a privilege or
    /// table the engine's own bookkeeping lost). A failed statement is judged by its SQLSTATE
    /// class ([`ErrorKind`]); the rest by what failed.
    pub fn is_transient(&self) -> bool {
        if self.is_disk_full() {
            return true;
        }
        if let Some(e) = self.sql() {
            return e.kind() == ErrorKind::Transient;
        }
        matches!(
            self,
            EngineError::Stream(StreamError::Replication(_) | StreamError::Ended)
                | EngineError::Setup(
                    SetupError::Control(
                        ControlError::Connect(ConnectError::Refused { .. })
                            | ControlError::SlotBusy(_)
                    ) | SetupError::Connect(ConnectError::Refused { .. })
                )
        )
    }

    /// The failed statement behind this error, if that is what it is.
    fn sql(&self) -> Option<&SqlError> {
        match self {
            EngineError::Sql(e)
            | EngineError::Setup(SetupError::Sql(e))
            | EngineError::Setup(SetupError::Control(ControlError::Sql(e))) => Some(e),
            _ => None,
        }
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
    /// The targets' writer, on its own connection, one batch in flight (see [`pipeline`]).
    sink: Sink,
    /// Where to report changes for fallback views (absent when there are none).
    refresher: Option<tokio::sync::mpsc::UnboundedSender<Vec<QualifiedName>>>,
    stream: SourceStream,
    /// The positions of state, targets and slot (see [`durability`]).
    progress: Progress,
    /// Flushes the state from a blocking thread.
    flusher: Flusher,
    /// A large transaction being folded part by part.
    parts: Option<batch::Parts>,
    /// The checkpoint in flight: what it lets the slot acknowledge, and the flush.
    flushing: Option<(Lsn, tokio::task::JoinHandle<Result<Duration, StoreError>>)>,
    /// State commits held in memory since the last checkpoint.
    dirty: bool,
    /// A checkpoint came due while a target write was in flight: it is taken at the next
    /// state commit, as soon as that write settles (see [`durability`]).
    checkpoint_due: bool,
    /// The checkpoint in flight was taken at a state commit (for the crash tests' failpoint).
    flushing_deferred: bool,
    /// A full-size batch, or one of transactions committed over a second before, was applied
    /// since the last checkpoint: the engine was behind.
    behind: bool,
    /// The last batch's newest transaction committed over a second before it was applied:
    /// a backlog is draining (batches are not full while the walsender decodes more slowly
    /// than a batch's deadline allows).
    lagging: bool,
    /// It was behind, and the stream has just gone idle after a batch that was not full: the
    /// backlog is drained, so the slot is acknowledged without waiting for `checkpoint_ms`.
    drained: bool,
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
    /// The reconcile comparing beside the stream, if any.
    live: Option<live_reconcile::Live>,
    /// The date the views' CURRENT_DATE is at in the state, recorded with each target write.
    date: i32,
    /// The date the targets showed at start, until the state has moved there (see
    /// `Loop::align_to_targets`); `None` once it has, or when the targets did not record one.
    targets_date: Option<i32>,
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
    let shown = progress::read_progress(&prepared.client, &cfg.slot).await?;
    let target_lsn = shown.map_or(state_lsn, |t| t.lsn);
    // The targets are written on a connection of their own, while the next batch folds.
    let sink_client = prepared.db.connect().await.map_err(SetupError::from)?;
    let (targets, unwritable) = Targets::prepare(&sink_client, targets).await?;
    let sink = Sink::new(sink_client, targets, &cfg.slot);
    let tables = prepared.tables.clone();
    let count = tables.len();
    let (referenced, flusher, recorded_ack, date) = state
        .call(move |m| {
            let referenced = (0..count)
                .map(|t| m.referenced(t).to_vec())
                .collect::<Vec<_>>();
            let date = m.dates().into_iter().max();
            let acked = meta::read_acked(m.store());
            (referenced, m.store().flusher(), acked, date)
        })
        .await?;
    let recorded_ack = recorded_ack.map_err(MaintainError::from)?;
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
        crate::source::stream::read_ahead_events(cfg.batch_max_rows),
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
    let tz = prepared.tz;
    let mut lp = Loop {
        cfg,
        clock,
        prepared,
        state,
        sink,
        refresher,
        stream,
        progress: Progress::new(state_lsn, target_lsn, recorded_ack),
        flusher,
        parts: None,
        flushing: None,
        dirty: false,
        checkpoint_due: false,
        flushing_deferred: false,
        behind: false,
        lagging: false,
        drained: false,
        last_checkpoint: Instant::now(),
        last_heartbeat: Instant::now(),
        caught_up_at: None,
        metrics: metrics.clone(),
        requests: VecDeque::new(),
        reconcile_due,
        reconciles: 0,
        live: None,
        date: date.unwrap_or_else(|| clock.today(&tz)),
        targets_date: shown.and_then(|t| t.date),
    };
    requests::close_interrupted(&lp.prepared.client).await?;
    for (v, why) in unwritable {
        let name = lp.sink.table(v).plan_name.clone();
        lp.mark_failed(v, &name, &why).await?;
    }
    let result = lp.run(shutdown).await;
    // A write in flight ends before a reconnect reads the targets' position again.
    lp.sink.abandon().await;
    // A flush in flight holds the RocksDB handle: let it end before a reconnect reopens it.
    if let Some((_, flush)) = lp.flushing.take() {
        let _ = flush.await;
    }
    lp.stream.shutdown().await;
    result
}

/// How often an idle engine records that its targets are fresh, and how often its loop wakes
/// with nothing to do. The time recorded is that of the keepalive answering the previous record,
/// so an idle engine's lag reads up to about twice this: at 1 s it reached 2.1 s, past a 2 s
/// freshness target, with nothing behind.
pub(super) const HEARTBEAT: Duration = Duration::from_millis(500);

impl Loop<'_> {
    /// At most every [`HEARTBEAT`], records when the targets were last known fully fresh. The
    /// write itself produces WAL, so the server answers with another keepalive: an idle engine
    /// keeps showing a small lag, a stopped or blocked one a growing lag.
    async fn heartbeat(&mut self) -> Result<(), EngineError> {
        let Some(at) = self.caught_up_at else {
            return Ok(());
        };
        if self.last_heartbeat.elapsed() < HEARTBEAT {
            return Ok(());
        }
        // Fresh as of the keepalive once the batches before it are visible.
        self.settle().await?;
        self.last_heartbeat = Instant::now();
        self.caught_up_at = None;
        progress::record_caught_up(&self.prepared.client, &self.cfg.slot, at).await?;
        Ok(())
    }
}
