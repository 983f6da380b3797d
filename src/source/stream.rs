//! The data plane: committed transactions from the replication slot, as row changes.
//!
//! pgwire-replication carries the bytes; [`super::pgoutput::decode`] turns them into messages;
//! the relation mapper (`super::relation`) turns those into changes; this module runs the
//! replication client and groups changes per committed transaction with its commit end LSN.
//! Rolled-back transactions never reach a logical slot, so they leave no trace here by
//! construction. While the engine folds a batch, it reads the stream ahead
//! ([`SourceStream::read_ahead`]): decoding the next batch then overlaps the fold instead of
//! following it, and the events wait, in stream order, to be handed out. The session pins
//! DateStyle, TimeZone and extra_float_digits so text values parse exactly (floats round-trip
//! bit for bit).

use std::time::Duration;

use pgwire_replication::config::TlsConfig;
use pgwire_replication::{ReplicationClient, ReplicationConfig, ReplicationEvent};

use crate::pg::tls::Tls;
use thiserror::Error;

use super::partitions::PARTITION_PREFIX;
use super::pgoutput;
use super::relation::Mapper;
pub use super::relation::{SchemaBreak, Sources};
use crate::change::Change;
use crate::pg::DbTarget;
use crate::pg::{Lsn, QualifiedName};
use crate::pgtime::PgTimeZone;

/// Session settings that make pgoutput's text values unambiguous.
pub const SESSION_OPTIONS: &str =
    "-c datestyle=ISO -c timezone=UTC -c intervalstyle=postgres -c extra_float_digits=3";

#[derive(Debug, Error)]
pub enum StreamError {
    #[error("replication connection: {0}")]
    Replication(#[from] pgwire_replication::PgWireError),
    #[error("undecodable pgoutput message: {0}")]
    Decode(#[from] pgoutput::DecodeError),
    #[error("table {table}, column {column}: {detail}")]
    Value {
        table: String,
        column: String,
        detail: String,
    },
    #[error("change for relation {0} before its Relation message")]
    UnknownRelation(u32),
    #[error("the replication stream carries a change to {table}, which is not a source of any view deltamv maintains, so the views cannot be kept exact: {fix}")]
    Unattributed { table: String, fix: String },
    #[error("a partition message ({detail}) cannot be read; was deltamv.emit_partition_rows changed by hand? Run `deltamv init --resync`, which reinstalls it")]
    PartitionMessage { detail: String },
    #[error("the replication stream ended")]
    Ended,
}

/// What the stream yields.
#[derive(Debug)]
pub enum StreamEvent {
    /// A committed transaction that touched the published tables.
    Transaction {
        end_lsn: Lsn,
        commit_time_micros: i64,
        changes: Vec<Change>,
        /// Every published table it changed (also those only fallback views read).
        touched: Vec<QualifiedName>,
        /// Columns views read that this transaction dropped, renamed or retyped.
        breaks: Vec<SchemaBreak>,
    },
    /// The first changes of a large committed transaction still being received (every
    /// [`TXN_PART_ROWS`] changes), so that it is folded piece by piece instead of held whole;
    /// its [`StreamEvent::Transaction`] follows with the rest. `final_lsn` is where its commit
    /// record starts: the transaction ends after an LSN `x` exactly when `final_lsn >= x`.
    Part {
        final_lsn: Lsn,
        changes: Vec<Change>,
        touched: Vec<QualifiedName>,
        breaks: Vec<SchemaBreak>,
    },
    /// The server has sent everything up to `wal_end` and no transaction is open.
    /// `server_time_micros` (since 2000-01-01) is when the server sent it: the walsender sends
    /// these when it has decoded all flushed WAL, so once everything before `wal_end` is
    /// applied, the targets are fresh as of that time.
    Idle {
        wal_end: Lsn,
        server_time_micros: i64,
    },
    /// A message from `pg_logical_emit_message` whose prefix starts with [`MESSAGE_PREFIX`]:
    /// a request (from SQL or the command line) or a reconcile's fence. A non-transactional
    /// message comes where it was written, after every transaction committed before it; a
    /// transactional one right after its transaction.
    Message { prefix: String, content: Vec<u8> },
}

impl StreamEvent {
    /// The row changes it carries.
    fn changes(&self) -> usize {
        match self {
            StreamEvent::Transaction { changes, .. } | StreamEvent::Part { changes, .. } => {
                changes.len()
            }
            StreamEvent::Idle { .. } | StreamEvent::Message { .. } => 0,
        }
    }
}

/// Prefix of the logical messages the engine acts on (others are ignored).
pub const MESSAGE_PREFIX: &str = "deltamv.";

/// Changes of one transaction held before the rest is handed on as a [`StreamEvent::Part`].
pub const TXN_PART_ROWS: usize = 50_000;

pub struct SourceStream {
    client: ReplicationClient,
    /// Maps the decoded messages to changes of the open transaction.
    mapper: Mapper,
    /// `final_lsn` of the open transaction.
    open_final: Lsn,
    /// Transactional messages of the open transaction, handed out after its commit.
    after_commit: Vec<StreamEvent>,
    /// Events to hand out before reading more: put back ([`SourceStream::put_back`]) or read
    /// ahead ([`SourceStream::read_ahead`]), in stream order.
    pending: std::collections::VecDeque<StreamEvent>,
    /// The row changes in `pending`, which bound how far [`SourceStream::read_ahead`] goes.
    pending_changes: usize,
    /// What a read ahead failed with, handed out once the events read before it are.
    failed: Option<StreamError>,
}

impl SourceStream {
    /// Starts streaming from the slot's confirmed position; the slot is acknowledged no further
    /// than `durable_lsn` until [`SourceStream::ack`] says more. The client reads up to
    /// `read_ahead` events ahead of the engine ([`read_ahead_events`]).
    pub async fn start(
        db: &DbTarget,
        slot: &str,
        publication: &str,
        durable_lsn: Lsn,
        sources: Sources,
        tz: PgTimeZone,
        read_ahead: usize,
    ) -> Result<SourceStream, StreamError> {
        let cfg = replication_config(db, slot, publication)
            .with_start_lsn(Lsn::ZERO.into())
            .with_ack_lsn(durable_lsn.into())
            .with_buffer_size(read_ahead);
        let client = ReplicationClient::connect(cfg).await?;
        Ok(SourceStream {
            client,
            mapper: Mapper::new(sources, tz),
            open_final: Lsn::ZERO,
            after_commit: Vec::new(),
            pending: std::collections::VecDeque::new(),
            pending_changes: 0,
            failed: None,
        })
    }

    /// Reports `lsn` as durably applied (the slot may release WAL before it).
    pub fn ack(&self, lsn: Lsn) {
        self.client.update_applied_lsn(lsn.into());
    }

    pub async fn shutdown(mut self) {
        let _ = tokio::time::timeout(Duration::from_secs(3), self.client.shutdown()).await;
    }

    /// Hands `events` out again, in order, before anything else is read.
    pub fn put_back(&mut self, events: Vec<StreamEvent>) {
        for e in events.into_iter().rev() {
            self.pending_changes += e.changes();
            self.pending.push_front(e);
        }
    }

    /// The next committed transaction, idle point or message.
    pub async fn next(&mut self) -> Result<StreamEvent, StreamError> {
        if let Some(e) = self.pending.pop_front() {
            self.pending_changes -= e.changes();
            return Ok(e);
        }
        if let Some(e) = self.failed.take() {
            return Err(e);
        }
        self.read().await
    }

    /// Reads and decodes the next event into the events handed out later, while the engine is
    /// busy with a batch: see [`Self::ahead`]. Cancel-safe, as [`Self::next`] is. An error is
    /// handed out by [`Self::next`] after the events read before it.
    pub async fn read_ahead(&mut self) {
        if self.failed.is_some() {
            return std::future::pending().await;
        }
        // A commit queues its transactional messages, which come after the transaction.
        let at = self.pending.len();
        match self.read().await {
            Ok(e) => {
                self.pending_changes += e.changes();
                self.pending.insert(at, e);
            }
            Err(e) => self.failed = Some(e),
        }
    }

    /// The row changes read but not handed out yet.
    pub fn ahead(&self) -> usize {
        self.pending_changes
    }

    /// Reads the client until the next event to hand out.
    async fn read(&mut self) -> Result<StreamEvent, StreamError> {
        loop {
            let event = self.client.recv().await?.ok_or(StreamError::Ended)?;
            match event {
                ReplicationEvent::Begin { final_lsn, .. } => {
                    self.mapper.open = Some(Vec::new());
                    self.open_final = final_lsn.into();
                }
                ReplicationEvent::XLogData { data, .. } => {
                    let msg = pgoutput::decode(&data)?;
                    self.mapper.handle(msg)?;
                    if let Some(part) = self.full_part() {
                        return Ok(part);
                    }
                }
                ReplicationEvent::Commit {
                    end_lsn,
                    commit_time_micros,
                    ..
                } => {
                    let changes = self.mapper.open.take().unwrap_or_default();
                    self.pending.extend(self.after_commit.drain(..));
                    return Ok(StreamEvent::Transaction {
                        end_lsn: end_lsn.into(),
                        commit_time_micros,
                        changes,
                        touched: std::mem::take(&mut self.mapper.touched),
                        breaks: std::mem::take(&mut self.mapper.breaks),
                    });
                }
                ReplicationEvent::Message {
                    transactional,
                    prefix,
                    content,
                    ..
                } if transactional && prefix == PARTITION_PREFIX && self.mapper.open.is_some() => {
                    self.mapper.partition_rows(&content)?;
                    if let Some(part) = self.full_part() {
                        return Ok(part);
                    }
                }
                ReplicationEvent::Message {
                    transactional,
                    prefix,
                    content,
                    ..
                } if prefix.starts_with(MESSAGE_PREFIX) => {
                    let msg = StreamEvent::Message {
                        prefix,
                        content: content.to_vec(),
                    };
                    if transactional && self.mapper.open.is_some() {
                        self.after_commit.push(msg);
                    } else {
                        return Ok(msg);
                    }
                }
                ReplicationEvent::KeepAlive {
                    wal_end,
                    server_time_micros,
                    ..
                } if self.mapper.open.is_none() => {
                    return Ok(StreamEvent::Idle {
                        wal_end: wal_end.into(),
                        server_time_micros,
                    });
                }
                ReplicationEvent::KeepAlive { .. } | ReplicationEvent::Message { .. } => {}
                ReplicationEvent::StoppedAt { .. } => return Err(StreamError::Ended),
            }
        }
    }

    /// The open transaction's changes so far as a [`StreamEvent::Part`], once they reach
    /// [`TXN_PART_ROWS`].
    fn full_part(&mut self) -> Option<StreamEvent> {
        let open = self.mapper.open.as_mut()?;
        (open.len() >= TXN_PART_ROWS).then(|| StreamEvent::Part {
            final_lsn: self.open_final,
            changes: std::mem::take(open),
            touched: std::mem::take(&mut self.mapper.touched),
            breaks: std::mem::take(&mut self.mapper.breaks),
        })
    }
}

/// How many events the replication client reads ahead of the engine for batches of up to
/// `batch_max_rows` changes: a batch and a half (a row change is an event, and so are each
/// transaction's begin and commit), and never fewer than the client's default of 8192. The
/// engine reads no event while it folds a batch, so with 8192 (about 40% of a 20k-change
/// batch) the walsender had to wait for room until the fold was done (one pair at 5M + 5M:
/// +5%, within the spread; 2026-12-07 steps file in bench/results).
pub fn read_ahead_events(batch_max_rows: usize) -> usize {
    (batch_max_rows.saturating_mul(3) / 2).max(8192)
}

/// A replication config for `db` (host, port, credentials from the URL; session options pinned).
pub fn replication_config(db: &DbTarget, slot: &str, publication: &str) -> ReplicationConfig {
    let c = &db.config;
    let host = match c.get_hosts().first() {
        Some(tokio_postgres::config::Host::Tcp(h)) => h.clone(),
        #[cfg(unix)]
        Some(tokio_postgres::config::Host::Unix(p)) => p.display().to_string(),
        None => "localhost".into(),
    };
    let password = c
        .get_password()
        .map(|p| String::from_utf8_lossy(p).into_owned())
        .unwrap_or_default();
    let tls = match &db.tls {
        Tls::Plain => TlsConfig::disabled(),
        Tls::VerifyFull { root } => {
            TlsConfig::verify_full(Some(root.clone())).with_sni_hostname(host.clone())
        }
    };
    ReplicationConfig::new(
        host,
        c.get_user().unwrap_or("postgres"),
        password,
        c.get_dbname().unwrap_or("postgres"),
        slot,
        publication,
    )
    .with_port(c.get_ports().first().copied().unwrap_or(5432))
    .with_options(SESSION_OPTIONS)
    .with_application_name(application_name(slot))
    .with_tls(tls)
    .with_status_interval(Duration::from_millis(500))
    .with_wakeup_interval(Duration::from_secs(1))
}

/// What the walsender of this process shows as its application: names the engine holding the
/// slot to a second one (see [`crate::setup::init`]). The pid comes first because the server
/// truncates application names to 63 bytes.
pub fn application_name(slot: &str) -> String {
    format!("deltamv pid {} slot {slot}", std::process::id())
}
