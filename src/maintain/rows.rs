//! The row-level pass of a batch: the stored image of every source row, and the rows' entries
//! in the time index.
//!
//! Every change becomes images entering and leaving the views ([`RowDelta`]): an insert one
//! entering, a delete the stored image leaving, an update both (the stored image patched with
//! the columns PostgreSQL did not send), so REPLICA IDENTITY DEFAULT is enough. The pass runs
//! over the changes in order, because a row changed twice in a batch must find the image its
//! first change stored; the views then fold the images on their own (see [`super::view`]).
//! The stored images the pass reads are read before it, on several threads ([`Prefetched`]).

use std::borrow::Cow;

use rustc_hash::FxHashMap as HashMap;
use serde::{Deserialize, Serialize};

use crate::change::Change;
use crate::state::keys::{self, CF_ROWS, CF_TIME};
use crate::state::store::StoreError;
use crate::value::Value;

use super::{threads, MaintainError, Maintainer, PARALLEL_MIN_ROWS};

#[derive(Serialize, Deserialize)]
pub(super) struct RowRecord {
    pub image: Vec<Value>,
    /// Per temporal view: the date filed in the time index.
    pub revisit: Vec<(u16, i32)>,
}

/// A [`RowRecord`] written from a borrowed image (the same encoding): the batch's rows are
/// encoded where they lie, not copied.
#[derive(Serialize)]
struct RowRecordRef<'a> {
    image: &'a [Value],
    revisit: &'a [(u16, i32)],
}

/// The date a row with these per-view revisits is filed under in the time index: the earliest.
pub(super) fn first_revisit(revisit: &[(u16, i32)]) -> Option<i32> {
    revisit.iter().map(|(_, d)| *d).min()
}

/// Reads a stored row image ([`keys::encode_record`]).
pub(super) fn decode_row(bytes: &[u8]) -> Result<RowRecord, StoreError> {
    keys::decode_record(bytes).map_err(|e| StoreError::Corrupt {
        cf: CF_ROWS,
        detail: e.to_string(),
    })
}

/// A row image entering (`sign` 1) or leaving (-1) the first stage of its table's views: what
/// the row-level pass of a batch hands to the views' folds.
pub(super) struct RowDelta<'a> {
    pub table: usize,
    pub image: Cow<'a, [Value]>,
    pub sign: i64,
    /// A midnight's revisit ([`super::midnight`]): the one view the image is for, and the date
    /// it is contributed at (the old one when it leaves, the new one when it enters). `None`:
    /// every view of the table, at its date.
    pub only: Option<(usize, i32)>,
}

/// The stored records of the rows a batch's changes read, read before the row pass: on
/// several threads and in one MultiGet per thread instead of a lookup per change. An update's
/// or a delete's row lies anywhere in the table, so each is about a block read and
/// decompressed, and the pass runs in change order on one thread while nothing else folds.
/// Valid for a key as long as the batch has not written it: the pass writes only into the
/// store's pending layer, which it asks first ([`Maintainer::read_row`]).
pub(super) type Prefetched = HashMap<Vec<u8>, Option<RowRecord>>;

impl Maintainer {
    /// The row key `change` reads first: the inserted row's (a row stored under it is replaced),
    /// the updated row's old one, the deleted row's. `None` for a truncate, which scans.
    fn read_key(&self, change: &Change) -> Option<Vec<u8>> {
        let (table, key) = match change {
            Change::Insert { table, row } => {
                (*table, self.key_of(*table, &self.project(*table, row)))
            }
            Change::Update {
                table,
                old_key: Some(key),
                ..
            }
            | Change::Delete { table, key } => (*table, key.clone()),
            Change::Update { table, row, .. } => {
                (*table, self.key_of(*table, &self.project(*table, row)))
            }
            Change::Truncate { .. } => return None,
        };
        Some(keys::row_key(table as u16, &key))
    }

    /// The records of the rows `changes` read ([`Prefetched`]).
    pub(super) fn prefetch_rows(&self, changes: &[Change]) -> Result<Prefetched, MaintainError> {
        let mut row_keys: Vec<Vec<u8>> = changes.iter().filter_map(|c| self.read_key(c)).collect();
        row_keys.sort_unstable();
        row_keys.dedup();
        let refs: Vec<&[u8]> = row_keys.iter().map(Vec::as_slice).collect();
        let records = self.read_rows(&refs)?;
        Ok(row_keys.into_iter().zip(records).collect())
    }

    /// The stored record of row `rk`, as of the changes before this one in the batch.
    fn read_row(
        &mut self,
        prefetched: &mut Prefetched,
        rk: &[u8],
    ) -> Result<Option<RowRecord>, StoreError> {
        self.stats.row_reads += 1;
        if !self.store.is_pending(CF_ROWS, rk) {
            if let Some(record) = prefetched.remove(rk) {
                return Ok(record);
            }
        }
        self.store.read(CF_ROWS, rk, decode_row)
    }

    /// The records of the rows `row_keys` (sorted), read in parts on up to `--fold-threads`
    /// threads. A midnight's due rows, like a batch's updated and deleted ones, lie all over the
    /// table (ids need not follow time), so each is about a block read and decompressed: at
    /// 1M + 1M rows, 545 of the 597 ms of a midnight's row pass. No view folds while they are
    /// read. Their blocks are not kept in the block cache ([`Store::read_many_once`]):
    /// a row is read once per batch, and its block would push out the groups' blocks. At
    /// 5M + 5M rows, a 1M-change catch-up took 99.4 and 99.1 us of CPU per change against
    /// 112.3 with them kept (one host at half speed, `bench/results/`).
    ///
    /// [`Store::read_many_once`]: crate::state::store::Store::read_many_once
    pub(super) fn read_rows(
        &self,
        row_keys: &[&[u8]],
    ) -> Result<Vec<Option<RowRecord>>, MaintainError> {
        let parts = self
            .threads
            .min(row_keys.len().div_ceil(PARALLEL_MIN_ROWS))
            .max(1);
        let per_part = row_keys.len().div_ceil(parts);
        let store = &self.store;
        let read = |part: &[&[u8]]| store.read_many_once(CF_ROWS, part, decode_row);
        let mut records = Vec::with_capacity(row_keys.len());
        for part in threads::each_on_a_thread(
            "deltamv-read",
            row_keys.chunks(per_part.max(1)).collect(),
            read,
        ) {
            records.extend(part?);
        }
        Ok(records)
    }

    pub(super) fn key_of(&self, table: usize, row: &[Value]) -> Vec<Value> {
        self.tables[table]
            .key
            .iter()
            .map(|i| row.get(*i).cloned().unwrap_or(Value::Null))
            .collect()
    }

    fn missing(&self, table: usize, key: &[Value]) -> MaintainError {
        MaintainError::MissingRow {
            table: self.tables[table].name.to_string(),
            key: key
                .iter()
                .map(|v| v.to_sql_text())
                .collect::<Vec<_>>()
                .join(", "),
        }
    }

    /// The row-level part of one change: stored images and the rows' time index, and the images
    /// entering and leaving the views (`deltas`).
    pub(super) fn apply_change<'a>(
        &mut self,
        change: &'a Change,
        prefetched: &mut Prefetched,
        deltas: &mut Vec<RowDelta<'a>>,
    ) -> Result<(), MaintainError> {
        match change {
            Change::Insert { table, row } => {
                let table = *table;
                let row = self.project(table, row);
                let rk = keys::row_key(table as u16, &self.key_of(table, &row));
                if let Some(old) = self.read_row(prefetched, &rk)? {
                    tracing::warn!(table = %self.tables[table].name, "insert of a key already stored; replacing it");
                    self.remove_row(table, &rk, old, deltas);
                }
                self.insert_row(table, rk, row, deltas)
            }
            Change::Update {
                table,
                old_key,
                row,
                unchanged,
            } => {
                let table = *table;
                let mut row = self.project(table, row);
                let old_rk = match old_key {
                    Some(key) => keys::row_key(table as u16, key),
                    None => keys::row_key(table as u16, &self.key_of(table, &row)),
                };
                let old = match self.read_row(prefetched, &old_rk)? {
                    Some(old) => old,
                    None => {
                        let key = old_key.clone().unwrap_or_else(|| self.key_of(table, &row));
                        return Err(self.missing(table, &key));
                    }
                };
                if !unchanged.is_empty() {
                    let patched = row.to_mut();
                    for c in unchanged {
                        if let (Some(slot), Some(prev)) = (patched.get_mut(*c), old.image.get(*c)) {
                            *slot = prev.clone();
                        }
                    }
                }
                self.remove_row(table, &old_rk, old, deltas);
                let rk = keys::row_key(table as u16, &self.key_of(table, &row));
                self.insert_row(table, rk, row, deltas)
            }
            Change::Delete { table, key } => {
                let table = *table;
                let rk = keys::row_key(table as u16, key);
                let old = self
                    .read_row(prefetched, &rk)?
                    .ok_or_else(|| self.missing(table, key))?;
                self.remove_row(table, &rk, old, deltas);
                Ok(())
            }
            Change::Truncate { table } => {
                let table = *table;
                for (rk, bytes) in
                    self.store
                        .scan_prefix(CF_ROWS, &keys::table_prefix(table as u16), None)?
                {
                    let old = decode_row(&bytes)?;
                    self.remove_row(table, &rk, old, deltas);
                }
                Ok(())
            }
        }
    }

    /// Stores a row's image, files it in the time index for its temporal views (not failed),
    /// and hands the image to the views.
    fn insert_row<'a>(
        &mut self,
        table: usize,
        rk: Vec<u8>,
        image: Cow<'a, [Value]>,
        deltas: &mut Vec<RowDelta<'a>>,
    ) -> Result<(), MaintainError> {
        let (record, time) = self.row_entries(table, &rk, &image)?;
        if let Some(key) = time {
            self.store.put(CF_TIME, key, &());
        }
        self.store.put_encoded(CF_ROWS, rk, record);
        deltas.push(RowDelta {
            table,
            image,
            sign: 1,
            only: None,
        });
        Ok(())
    }

    /// What storing a row writes: its record, which lists the date each temporal view (not
    /// failed) must revisit it, and its one time-index key (whose value is empty), at the
    /// earliest of those dates.
    pub(super) fn row_entries(
        &self,
        table: usize,
        rk: &[u8],
        image: &[Value],
    ) -> Result<(Vec<u8>, Option<Vec<u8>>), MaintainError> {
        let mut revisit = Vec::new();
        for &v in &self.table_views[table] {
            let view = &self.views[v];
            if view.failed.is_some() {
                continue;
            }
            if let Some(next) = view.row_revisit(image, view.date)? {
                revisit.push((v as u16, next));
            }
        }
        let time = first_revisit(&revisit).map(|d| keys::row_time_key(table as u16, d, rk));
        let rec = RowRecordRef {
            image,
            revisit: &revisit,
        };
        Ok((keys::encode_record(&rec), time))
    }

    /// Drops a row's stored image and time-index entries, and hands the image to the views to
    /// retract.
    fn remove_row(
        &mut self,
        table: usize,
        rk: &[u8],
        rec: RowRecord,
        deltas: &mut Vec<RowDelta<'_>>,
    ) {
        if let Some(d) = first_revisit(&rec.revisit) {
            self.store
                .delete(CF_TIME, keys::row_time_key(table as u16, d, rk));
        }
        self.store.delete(CF_ROWS, rk.to_vec());
        deltas.push(RowDelta {
            table,
            image: Cow::Owned(rec.image),
            sign: -1,
            only: None,
        });
    }
}
