//! The data plane: committed transactions from the replication slot, as row changes.
//!
//! pgwire-replication carries the bytes; [`super::pgoutput::decode`] turns them into messages; this
//! module maps relations to the source tables by name (so a column added later does not shift
//! anything), parses the text values of the referenced columns, and groups changes per committed
//! transaction with its commit end LSN. Rolled-back transactions never reach a logical slot, so
//! they leave no trace here by construction. The session pins DateStyle, TimeZone and
//! extra_float_digits so text values parse exactly (floats round-trip bit for bit).

use std::collections::HashMap;
use std::time::Duration;

use pgwire_replication::config::TlsConfig;
use pgwire_replication::{ReplicationClient, ReplicationConfig, ReplicationEvent};

use crate::pg::tls::Tls;
use thiserror::Error;

use super::partitions::{PartitionMessage, PartitionOp, PARTITION_PREFIX};
use super::pgoutput::{self, OldTuple, PgOutputMessage, TupleColumn, TupleData};
use crate::change::Change;
use crate::pg::DbTarget;
use crate::pg::{Lsn, QualifiedName, TableInfo};
use crate::pgtime::PgTimeZone;
use crate::value::{SqlType, Value};

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

/// Prefix of the logical messages the engine acts on (others are ignored).
pub const MESSAGE_PREFIX: &str = "deltamv.";

/// Changes of one transaction held before the rest is handed on as a [`StreamEvent::Part`].
pub const TXN_PART_ROWS: usize = 50_000;

/// A column some view reads that a schema change took away, or whose value in some row cannot
/// be read: the views reading it can no longer be maintained (the engine fails exactly those),
/// while the others go on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SchemaBreak {
    pub table: usize,
    /// Index into the table's columns as planned.
    pub column: usize,
    /// What happened to it, for the view's error.
    pub why: String,
}

/// Where each column of a replicated relation goes in the table's row image.
struct RelationMap {
    table: usize,
    /// Per relation column: (table column index, type) when some view reads it.
    columns: Vec<Option<(usize, SqlType)>>,
    key_positions: Vec<usize>,
}

/// What the stream maps changes to.
pub struct Sources {
    /// The tables incremental views read, in the planner's order.
    pub tables: Vec<TableInfo>,
    /// Per table, per column: whether some view reads it.
    pub referenced: Vec<Vec<bool>>,
    /// Every table the publication publishes (also those only fallback views read): a change to
    /// anything else cannot be attributed to a view, and stops the stream.
    pub published: Vec<QualifiedName>,
}

pub struct SourceStream {
    client: ReplicationClient,
    tables: Vec<TableInfo>,
    referenced: Vec<Vec<bool>>,
    published: Vec<QualifiedName>,
    tz: PgTimeZone,
    relations: HashMap<u32, RelationMap>,
    /// Every relation announced on the stream, maintained or not.
    names: HashMap<u32, QualifiedName>,
    open: Option<Vec<Change>>,
    /// `final_lsn` of the open transaction.
    open_final: Lsn,
    touched: Vec<QualifiedName>,
    breaks: Vec<SchemaBreak>,
    /// Transactional messages of the open transaction, handed out after its commit.
    after_commit: Vec<StreamEvent>,
    /// Events to hand out before reading more (see [`SourceStream::put_back`]).
    pending: std::collections::VecDeque<StreamEvent>,
}

impl SourceStream {
    /// Starts streaming from the slot's confirmed position; the slot is acknowledged no further
    /// than `durable_lsn` until [`SourceStream::ack`] says more.
    pub async fn start(
        db: &DbTarget,
        slot: &str,
        publication: &str,
        durable_lsn: Lsn,
        sources: Sources,
        tz: PgTimeZone,
    ) -> Result<SourceStream, StreamError> {
        let cfg = replication_config(db, slot, publication)
            .with_start_lsn(Lsn::ZERO.into())
            .with_ack_lsn(durable_lsn.into());
        let client = ReplicationClient::connect(cfg).await?;
        let Sources {
            tables,
            referenced,
            published,
        } = sources;
        Ok(SourceStream {
            client,
            tables,
            referenced,
            published,
            tz,
            relations: HashMap::new(),
            names: HashMap::new(),
            open: None,
            open_final: Lsn::ZERO,
            touched: Vec::new(),
            breaks: Vec::new(),
            after_commit: Vec::new(),
            pending: std::collections::VecDeque::new(),
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
            self.pending.push_front(e);
        }
    }

    /// The next committed transaction, idle point or message.
    pub async fn next(&mut self) -> Result<StreamEvent, StreamError> {
        if let Some(e) = self.pending.pop_front() {
            return Ok(e);
        }
        loop {
            let event = self.client.recv().await?.ok_or(StreamError::Ended)?;
            match event {
                ReplicationEvent::Begin { final_lsn, .. } => {
                    self.open = Some(Vec::new());
                    self.open_final = final_lsn.into();
                }
                ReplicationEvent::XLogData { data, .. } => {
                    let msg = pgoutput::decode(&data)?;
                    self.handle(msg)?;
                    if let Some(part) = self.full_part() {
                        return Ok(part);
                    }
                }
                ReplicationEvent::Commit {
                    end_lsn,
                    commit_time_micros,
                    ..
                } => {
                    let changes = self.open.take().unwrap_or_default();
                    self.pending.extend(self.after_commit.drain(..));
                    return Ok(StreamEvent::Transaction {
                        end_lsn: end_lsn.into(),
                        commit_time_micros,
                        changes,
                        touched: std::mem::take(&mut self.touched),
                        breaks: std::mem::take(&mut self.breaks),
                    });
                }
                ReplicationEvent::Message {
                    transactional,
                    prefix,
                    content,
                    ..
                } if transactional && prefix == PARTITION_PREFIX && self.open.is_some() => {
                    self.partition_rows(&content)?;
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
                    if transactional && self.open.is_some() {
                        self.after_commit.push(msg);
                    } else {
                        return Ok(msg);
                    }
                }
                ReplicationEvent::KeepAlive {
                    wal_end,
                    server_time_micros,
                    ..
                } if self.open.is_none() => {
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
        let open = self.open.as_mut()?;
        (open.len() >= TXN_PART_ROWS).then(|| StreamEvent::Part {
            final_lsn: self.open_final,
            changes: std::mem::take(open),
            touched: std::mem::take(&mut self.touched),
            breaks: std::mem::take(&mut self.breaks),
        })
    }

    fn handle(&mut self, msg: PgOutputMessage) -> Result<(), StreamError> {
        match msg {
            PgOutputMessage::Relation(rel) => {
                self.names
                    .insert(rel.id, QualifiedName::new(&rel.namespace, &rel.name));
                let Some(table) = self
                    .tables
                    .iter()
                    .position(|t| t.name.schema == rel.namespace && t.name.name == rel.name)
                else {
                    return Ok(());
                };
                let info = &self.tables[table];
                let mut columns = Vec::new();
                for c in &rel.columns {
                    let idx = info.columns.iter().position(|tc| tc.name == c.name);
                    columns.push(idx.and_then(|i| {
                        let ty = info.columns[i].ty?;
                        // A retyped column is not read as its old type (see below). An enum or
                        // a domain is announced with its own type's OID, as the catalog said.
                        let same_type = if info.columns[i].type_oid != 0 {
                            c.type_oid == info.columns[i].type_oid
                        } else {
                            SqlType::from_oid(c.type_oid) == Some(ty)
                        };
                        (self.referenced[table][i] && same_type).then_some((i, ty))
                    }));
                }
                // ADD COLUMN needs nothing (columns are matched by name); a referenced column
                // that is gone or retyped breaks the views reading it.
                for (i, needed) in self.referenced[table].iter().enumerate() {
                    if !*needed || columns.iter().flatten().any(|(c, _)| *c == i) {
                        continue;
                    }
                    let column = &info.columns[i];
                    let why = match rel.columns.iter().find(|c| c.name == column.name) {
                        Some(c) => format!(
                            "column {} of {} changed type (was {}, now type OID {}): fix the view or the column, then run `deltamv init --resync`",
                            column.name, info.name, column.type_name, c.type_oid
                        ),
                        None => format!(
                            "column {} of {} was dropped or renamed: fix the view or the column, then run `deltamv init --resync`",
                            column.name, info.name
                        ),
                    };
                    self.breaks.push(SchemaBreak {
                        table,
                        column: i,
                        why,
                    });
                }
                let key_positions = info.key.clone();
                self.relations.insert(
                    rel.id,
                    RelationMap {
                        table,
                        columns,
                        key_positions,
                    },
                );
            }
            PgOutputMessage::Insert { relation_id, new } => {
                let Some(map) = self.relations.get(&relation_id) else {
                    return self.unmaintained(relation_id);
                };
                let mut bad = Vec::new();
                let (row, _) = self.row(map, &new, &mut bad)?;
                self.push(Change::Insert {
                    table: map.table,
                    row,
                });
                self.breaks.extend(bad);
            }
            PgOutputMessage::Update {
                relation_id,
                old,
                new,
            } => {
                let Some(map) = self.relations.get(&relation_id) else {
                    return self.unmaintained(relation_id);
                };
                let mut bad = Vec::new();
                let (row, unchanged) = self.row(map, &new, &mut bad)?;
                let old_key = match old {
                    Some(OldTuple::Key(t) | OldTuple::Full(t)) => {
                        let (image, _) = self.row(map, &t, &mut bad)?;
                        Some(
                            map.key_positions
                                .iter()
                                .map(|i| image[*i].clone())
                                .collect(),
                        )
                    }
                    None => None,
                };
                self.push(Change::Update {
                    table: map.table,
                    old_key,
                    row,
                    unchanged,
                });
                self.breaks.extend(bad);
            }
            PgOutputMessage::Delete { relation_id, old } => {
                let Some(map) = self.relations.get(&relation_id) else {
                    return self.unmaintained(relation_id);
                };
                let mut bad = Vec::new();
                let (image, _) = self.row(map, old.tuple(), &mut bad)?;
                let key = map
                    .key_positions
                    .iter()
                    .map(|i| image[*i].clone())
                    .collect();
                self.push(Change::Delete {
                    table: map.table,
                    key,
                });
                self.breaks.extend(bad);
            }
            PgOutputMessage::Truncate { relation_ids, .. } => {
                for id in relation_ids {
                    match self.relations.get(&id) {
                        Some(map) => {
                            let table = map.table;
                            self.push(Change::Truncate { table });
                        }
                        None => self.unmaintained(id)?,
                    }
                }
            }
            _ => {}
        }
        Ok(())
    }

    /// A change to a published table no incremental view reads (fallback views may): only
    /// noted. A change to a table deltamv did not publish (a partition's own name when the
    /// publication no longer publishes via the root, a table added to it by hand) belongs to no
    /// view: dropping it could leave a view silently wrong, so it stops the stream.
    fn unmaintained(&mut self, relation_id: u32) -> Result<(), StreamError> {
        let name = self
            .names
            .get(&relation_id)
            .ok_or(StreamError::UnknownRelation(relation_id))?
            .clone();
        if !self.published.contains(&name) {
            return Err(StreamError::Unattributed {
                table: name.to_string(),
                fix: "if it is a partition of a source, the publication must publish through the root \
                      (ALTER PUBLICATION ... SET (publish_via_partition_root = true)); if it was added \
                      to the publication by hand, remove it (ALTER PUBLICATION ... DROP TABLE); then run \
                      `deltamv init --resync`"
                    .into(),
            });
        }
        self.note(name);
        Ok(())
    }

    /// Rows joining or leaving a partitioned source outside the row stream (see
    /// [`crate::source::partitions`]), as inserts and deletes in the open transaction.
    fn partition_rows(&mut self, content: &[u8]) -> Result<(), StreamError> {
        let msg = PartitionMessage::parse(content)
            .map_err(|detail| StreamError::PartitionMessage { detail })?;
        let root = msg.root();
        let Some(table) = self.tables.iter().position(|t| t.name == root) else {
            // Only fallback views read it: their refresh recomputes it.
            if self.published.contains(&root) {
                self.note(root);
                return Ok(());
            }
            return Err(StreamError::Unattributed {
                table: format!("{root} (partition {})", msg.leaf),
                fix: "it is no longer a source: run `deltamv init`, which stops watching it".into(),
            });
        };
        if msg.op == PartitionOp::Lost {
            let why = format!(
                "partition {} of {root} was dropped while attached, taking its rows with no trace in the replication stream: run `deltamv init --resync`; to expire partitions without a resync, DETACH PARTITION first, then drop the detached table",
                msg.leaf
            );
            for (column, read) in self.referenced[table].iter().enumerate() {
                if *read {
                    self.breaks.push(SchemaBreak {
                        table,
                        column,
                        why: why.clone(),
                    });
                }
            }
            self.note(root);
            return Ok(());
        }
        let info = &self.tables[table];
        let map = RelationMap {
            table,
            columns: msg
                .columns
                .iter()
                .map(|name| {
                    let i = info.columns.iter().position(|c| &c.name == name)?;
                    let ty = info.columns[i].ty?;
                    self.referenced[table][i].then_some((i, ty))
                })
                .collect(),
            key_positions: info.key.clone(),
        };
        let mut bad = Vec::new();
        for values in &msg.rows {
            if values.len() != msg.columns.len() {
                return Err(StreamError::PartitionMessage {
                    detail: format!(
                        "a row of {} has {} values for {} columns",
                        msg.leaf,
                        values.len(),
                        msg.columns.len()
                    ),
                });
            }
            let tuple = TupleData {
                columns: values
                    .iter()
                    .map(|v| match v {
                        Some(text) => TupleColumn::Text(text.clone().into_bytes()),
                        None => TupleColumn::Null,
                    })
                    .collect(),
            };
            let (row, _) = self.row(&map, &tuple, &mut bad)?;
            let change = match msg.op {
                PartitionOp::Insert => Change::Insert { table, row },
                _ => Change::Delete {
                    table,
                    key: map.key_positions.iter().map(|i| row[*i].clone()).collect(),
                },
            };
            self.push(change);
        }
        self.breaks.extend(bad);
        Ok(())
    }

    fn note(&mut self, name: QualifiedName) {
        if !self.touched.contains(&name) {
            self.touched.push(name);
        }
    }

    fn push(&mut self, change: Change) {
        let table = match &change {
            Change::Insert { table, .. }
            | Change::Load { table, .. }
            | Change::Update { table, .. }
            | Change::Delete { table, .. }
            | Change::Truncate { table } => *table,
        };
        self.note(self.tables[table].name.clone());
        self.open.get_or_insert_with(Vec::new).push(change);
    }

    /// Parses a tuple into a row image over the table's columns; also returns the columns that
    /// were not sent because their TOASTed value did not change. A value deltamv cannot
    /// represent (e.g. a timestamp beyond year 294247) is left NULL and reported in `bad`: the
    /// views reading that column fail, the others go on.
    fn row(
        &self,
        map: &RelationMap,
        tuple: &TupleData,
        bad: &mut Vec<SchemaBreak>,
    ) -> Result<(Vec<Value>, Vec<usize>), StreamError> {
        let info = &self.tables[map.table];
        let mut row = vec![Value::Null; info.columns.len()];
        let mut unchanged = Vec::new();
        for (col, target) in tuple.columns.iter().zip(&map.columns) {
            let Some((i, ty)) = target else { continue };
            match col {
                TupleColumn::Null => {}
                TupleColumn::UnchangedToast => unchanged.push(*i),
                TupleColumn::Text(bytes) => {
                    let parsed = std::str::from_utf8(bytes)
                        .map_err(|e| e.to_string())
                        .and_then(|text| {
                            Value::parse_text(text, *ty, &self.tz).map_err(|e| e.to_string())
                        });
                    match parsed {
                        Ok(v) => row[*i] = v,
                        Err(detail) => bad.push(SchemaBreak {
                            table: map.table,
                            column: *i,
                            why: format!(
                                "a value of column {} of {} cannot be read ({detail}): change that row, or the view, then run `deltamv init --resync`",
                                info.columns[*i].name, info.name
                            ),
                        }),
                    }
                }
                TupleColumn::Binary(_) => {
                    return Err(StreamError::Value {
                        table: info.name.to_string(),
                        column: info.columns[*i].name.clone(),
                        detail: "binary format values are not expected (the slot uses text)".into(),
                    })
                }
            }
        }
        Ok((row, unchanged))
    }
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
