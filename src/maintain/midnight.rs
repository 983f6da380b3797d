//! A date change: the source rows and groups filed in the time index for the dates passed are
//! revisited (see the module doc of [`super`]), every row and group when the clock went back.
//!
//! A source row has one time-index entry, at the earliest date one of its views must revisit it;
//! its record holds each view's date. So a row due in several views (a day leaving the 30-day
//! window of three views at once) is read, re-filed and written once, not once per view, and
//! only the views whose date passed revisit it. Due rows are read table by table in chunks of
//! sorted keys with one batched lookup each, and their retractions at the old date and additions
//! at the new one are folded like a batch's images, the views on several threads; a chunk's
//! rows are read by the first of those threads out of views while the chunk before folds.
//!
//! Each chunk's writes (the rows' records and time-index entries, the groups finalized early)
//! then go into RocksDB's memtables at once, as a part marked partial, as a large transaction's
//! parts do, instead of waiting in the store's overlay for the date change's commit. Held there
//! to the end, they were its largest cost in memory: at 5M + 5M rows, 600k pending writes of
//! 66 MB took about 150 MB as hash-map entries, and `run` went from 290 to 455 MB during the
//! row pass; the memtables hold the same writes in about 80 MB (`bench/results/`). The price:
//! RocksDB may flush a part to disk before the date change commits (a memtable filled, or the
//! store closed after an error), and a state marked partial is rebuilt from a fresh snapshot at
//! the next start instead of replayed (`setup::trust`). The engine's commit of the date change
//! clears the mark and writes it to the memtables at once (`engine::midnight`).

use std::borrow::Cow;

use crate::change::TargetChange;
use crate::state::keys::{self, CF_ROWS, CF_TIME};
use crate::state::meta;
use crate::state::store::Durability;
use crate::value::Value;

use super::rows::{decode_row, first_revisit, RowDelta, RowRecord};
use super::{threads, MaintainError, Maintainer, PARALLEL_MIN_ROWS};

/// Due source rows read and folded at a time: bounds the images held when every row of a
/// table is due (the clock went back), and between two parts the views' first stages may be
/// finalized early (`ViewFold::finalize_early`). Tests cross parts with every few rows.
const DUE_ROWS_CHUNK: usize = if cfg!(test) { 5 } else { 16_384 };

/// A re-filed row: the views it is due in, and its image.
type Revisited = (Vec<usize>, Vec<Value>);

/// The deltas of the re-filed rows: each image retracted from each view it is due in at the
/// view's old date (`before`), and added at `today`.
fn revisits<'r>(
    table: usize,
    revisited: &'r [Revisited],
    before: &[i32],
    today: i32,
) -> Vec<RowDelta<'r>> {
    let mut deltas = Vec::with_capacity(revisited.len() * 2);
    for (due, image) in revisited {
        for &v in due {
            for (sign, date) in [(-1, before[v]), (1, today)] {
                deltas.push(RowDelta {
                    table,
                    image: Cow::Borrowed(image.as_slice()),
                    sign,
                    only: Some((v, date)),
                });
            }
        }
    }
    deltas
}

impl Maintainer {
    /// Moves every temporal view to `today`: revisits the source rows and the groups filed for
    /// the dates passed (every one when the clock went back), innermost first. The rows' writes
    /// go to RocksDB part by part, marked partial: the caller's commit clears the mark.
    pub fn advance_dates(&mut self, today: i32) -> Result<Vec<Vec<TargetChange>>, MaintainError> {
        self.begin(0);
        let before = self.dates();
        let mut moving = vec![false; self.views.len()];
        for (v, view) in self.views.iter_mut().enumerate() {
            moving[v] = view.is_temporal() && view.failed.is_none() && view.date != today;
            // Rows are retracted at the dates `before` and added at `today`, and groups
            // finalized early are finalized at `today`.
            view.set_date(today);
        }
        for table in 0..self.table_views.len() {
            // The moving views that file this table's rows.
            let views: Vec<usize> = (self.table_views[table].iter().copied())
                .filter(|&v| moving[v] && self.views[v].revisits_rows(before[v], today))
                .collect();
            if views.is_empty() {
                continue;
            }
            let started = std::time::Instant::now();
            let due = self.due_rows(table, &views, &before, today)?;
            let chunks: Vec<Vec<&[u8]>> = (due.chunks(DUE_ROWS_CHUNK))
                .map(|chunk| chunk.iter().map(Vec::as_slice).collect())
                .collect();
            let mut records = match chunks.first() {
                Some(first) => self.read_rows(first)?,
                None => vec![],
            };
            self.stats.row_pass_micros += started.elapsed().as_micros() as u64;
            for (i, chunk) in chunks.iter().enumerate() {
                let started = std::time::Instant::now();
                let revisited = self.refile_rows(table, chunk, records, &views, &before, today)?;
                let deltas = revisits(table, &revisited, &before, today);
                let refiled = started.elapsed();
                records = self.fold_reading(&deltas, chunks.get(i + 1))?;
                let folded = started.elapsed();
                self.write_part()?;
                tracing::debug!(
                    table,
                    rows = chunk.len(),
                    refile_ms = refiled.as_millis() as u64,
                    fold_ms = (folded - refiled).as_millis() as u64,
                    write_ms = (started.elapsed() - folded).as_millis() as u64,
                    "date change: a part of due rows folded"
                );
            }
        }
        let started = std::time::Instant::now();
        for (v, &moves) in moving.iter().enumerate() {
            if moves {
                let old = before[v];
                self.views[v].due_groups(&self.store, old, today)?;
            }
        }
        let due = started.elapsed();
        let out = self.fold_views(&[], Some(&before), true);
        tracing::debug!(
            due_ms = due.as_millis() as u64,
            fold_ms = (started.elapsed() - due).as_millis() as u64,
            "date change: due groups and every touched group finalized"
        );
        out
    }

    /// The keys of `table`'s rows due when `views` (moving, from their dates `before`) move to
    /// `today`, in key order: those filed for a date passed, or every row when the clock went
    /// back for one of them.
    fn due_rows(
        &self,
        table: usize,
        views: &[usize],
        before: &[i32],
        today: i32,
    ) -> Result<Vec<Vec<u8>>, MaintainError> {
        let t = table as u16;
        Ok(if views.iter().all(|&v| today > before[v]) {
            let upto = keys::row_time_key(t, today.saturating_add(1), &[]);
            let mut due: Vec<Vec<u8>> = self
                .store
                .scan_prefix(CF_TIME, &keys::row_time_prefix(t), Some(&upto))?
                .into_iter()
                .filter_map(|(k, _)| keys::split_time_key(&k).map(|(_, rk)| rk.to_vec()))
                .collect();
            due.sort_unstable();
            due
        } else {
            self.store
                .scan_prefix(CF_ROWS, &keys::table_prefix(t), None)?
                .into_iter()
                .map(|(k, _)| k)
                .collect()
        })
    }

    /// Re-files the rows `row_keys` of `table` (sorted; `records` as read): each row due in
    /// one of `views` for the date it was filed at (`before`) is re-filed at `today` in the
    /// time index and its record written once. Returns each such row's due views and image.
    fn refile_rows(
        &mut self,
        table: usize,
        row_keys: &[&[u8]],
        records: Vec<Option<RowRecord>>,
        views: &[usize],
        before: &[i32],
        today: i32,
    ) -> Result<Vec<Revisited>, MaintainError> {
        let started = std::time::Instant::now();
        self.stats.row_reads += row_keys.len() as u64;
        // Each row's record, and its entry out of the time index and into it.
        self.store.reserve(CF_ROWS, row_keys.len());
        self.store.reserve(CF_TIME, 2 * row_keys.len());
        let t = table as u16;
        let mut revisited = Vec::with_capacity(row_keys.len());
        for (rk, rec) in row_keys.iter().zip(records) {
            let Some(mut rec) = rec else {
                continue;
            };
            let filed = first_revisit(&rec.revisit);
            let mut due = Vec::new();
            for &v in views {
                let at = rec.revisit.iter().position(|(w, _)| *w as usize == v);
                if today < before[v] || at.is_some_and(|i| rec.revisit[i].1 <= today) {
                    if let Some(i) = at {
                        rec.revisit.remove(i);
                    }
                    if let Some(next) = self.views[v].row_revisit(&rec.image, today)? {
                        rec.revisit.push((v as u16, next));
                    }
                    due.push(v);
                }
            }
            // A failed view is rebuilt by the next `init`, never revisited: its dates passed
            // would bring the row back at every midnight.
            let folds = &self.views;
            rec.revisit
                .retain(|(w, d)| *d > today || folds[*w as usize].failed.is_none());
            let refiled = first_revisit(&rec.revisit);
            if refiled != filed {
                if let Some(d) = filed {
                    self.store.delete(CF_TIME, keys::row_time_key(t, d, rk));
                }
                if let Some(d) = refiled {
                    self.store.put(CF_TIME, keys::row_time_key(t, d, rk), &());
                }
            } else if due.is_empty() {
                continue;
            }
            self.store
                .put_encoded(CF_ROWS, rk.to_vec(), keys::encode_record(&rec));
            revisited.push((due, rec.image));
        }
        self.stats.row_pass_micros += started.elapsed().as_micros() as u64;
        Ok(revisited)
    }

    /// Folds a part's `deltas` into the views (their first stages finalized early where they
    /// hold many groups) and reads the records of the `next` part's rows on the threads out of
    /// views, in as many pieces as there are threads; returns those. The reads are most of a
    /// row pass (a block read and decompressed per row, the rows being all over the table),
    /// and one view's fold most of the rest (`mv_workspace_metrics`' at 5M + 5M), so the reads
    /// fill the threads that view leaves idle. They do not race the fold's writes: the views
    /// collect theirs until the part is folded, and the parts' rows are distinct. Each row is
    /// read once, so its block is not kept in the block cache, where it would push out the
    /// groups' blocks the fold reads.
    fn fold_reading(
        &mut self,
        deltas: &[RowDelta<'_>],
        next: Option<&Vec<&[u8]>>,
    ) -> Result<Vec<Option<RowRecord>>, MaintainError> {
        let threads = if deltas.len() >= PARALLEL_MIN_ROWS {
            self.threads
        } else {
            1
        };
        let store = &self.store;
        let pieces = match next {
            Some(row_keys) => row_keys
                .chunks(row_keys.len().div_ceil(threads).max(1))
                .collect(),
            None => vec![],
        };
        let reads: Vec<_> = (pieces.into_iter())
            .map(|piece| move || store.read_many_once(CF_ROWS, piece, decode_row))
            .collect();
        let views = &mut self.views;
        let (folded, pieces) = threads::fold_views_then(views, store, threads, deltas, None, reads);
        folded?;
        self.apply_view_writes();
        let mut records = Vec::with_capacity(next.map_or(0, |keys| keys.len()));
        for piece in pieces {
            records.extend(piece?);
        }
        Ok(records)
    }

    /// Writes the date change's pending writes (and anything held before it) into RocksDB's
    /// memtables as a part, marked partial (see the module doc).
    fn write_part(&mut self) -> Result<(), MaintainError> {
        self.store
            .commit(&[meta::partial(true)], Durability::Unlogged)?;
        if crate::failpoint::armed("after_date_part") {
            // The crash test's data never fills a memtable: the part is flushed as RocksDB
            // would flush it, so that the restart finds it on disk with its mark.
            self.store.flush()?;
        }
        crate::failpoint::hit("after_date_part");
        Ok(())
    }
}
