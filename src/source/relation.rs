//! Relation mapping, the pure half of the data plane: decoded pgoutput messages in, [`Change`]s
//! of the open transaction out. Relations are matched to the source tables by name (so a column
//! added later does not shift anything), the text values of the referenced columns are parsed,
//! and a referenced column that is dropped, renamed or retyped, or a value that cannot be read,
//! becomes a [`SchemaBreak`] for the views reading it. Its own room because it is pure: no I/O,
//! no replication client (that is `stream`, which feeds it).

use std::collections::HashMap;

use super::partitions::{PartitionMessage, PartitionOp};
use super::pgoutput::{OldTuple, PgOutputMessage, TupleColumn, TupleData};
use super::stream::StreamError;
use crate::change::Change;
use crate::pg::{QualifiedName, TableInfo};
use crate::pgtime::PgTimeZone;
use crate::value::{SqlType, Value};

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

/// The open transaction as mapped so far, and what it is mapped against.
pub(super) struct Mapper {
    tables: Vec<TableInfo>,
    referenced: Vec<Vec<bool>>,
    published: Vec<QualifiedName>,
    tz: PgTimeZone,
    relations: HashMap<u32, RelationMap>,
    /// Every relation announced on the stream, maintained or not.
    names: HashMap<u32, QualifiedName>,
    pub(super) open: Option<Vec<Change>>,
    pub(super) touched: Vec<QualifiedName>,
    pub(super) breaks: Vec<SchemaBreak>,
}

impl Mapper {
    pub(super) fn new(sources: Sources, tz: PgTimeZone) -> Mapper {
        let Sources {
            tables,
            referenced,
            published,
        } = sources;
        Mapper {
            tables,
            referenced,
            published,
            tz,
            relations: HashMap::new(),
            names: HashMap::new(),
            open: None,
            touched: Vec::new(),
            breaks: Vec::new(),
        }
    }

    pub(super) fn handle(&mut self, msg: PgOutputMessage) -> Result<(), StreamError> {
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
    pub(super) fn partition_rows(&mut self, content: &[u8]) -> Result<(), StreamError> {
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
