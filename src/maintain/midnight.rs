//! A date change: the source rows and groups filed in the time index for the dates passed are
//! revisited (see the module doc of [`super`]), every row and group when the clock went back.
//!
//! The source rows due are gathered from every view that moves first, so a row due in several
//! views (a day leaving the 30-day window of four views at once) is read, re-filed and written
//! once, not once per view; they are read in chunks of sorted keys with one batched lookup each,
//! and their retractions at the old date and additions at the new one are folded like a batch's
//! images, the views on several threads.

use std::borrow::Cow;

use crate::change::TargetChange;
use crate::state::keys::{self, CF_ROWS, CF_TIME};

use super::rows::{decode_row, RowDelta};
use super::{MaintainError, Maintainer, PARALLEL_MIN_ROWS};

/// Due source rows read and folded at a time: bounds the images held when every row of a
/// table is due (the clock went back).
const DUE_ROWS_CHUNK: usize = 16_384;

impl Maintainer {
    /// Moves every temporal view to `today`: revisits the source rows and the groups filed for
    /// the dates passed (every one when the clock went back), innermost first.
    pub fn advance_dates(&mut self, today: i32) -> Result<Vec<Vec<TargetChange>>, MaintainError> {
        self.begin(0);
        let before = self.dates();
        let mut moving = Vec::new();
        for (v, view) in self.views.iter_mut().enumerate() {
            if view.is_temporal() && view.failed.is_none() && view.date != today {
                moving.push(v);
            } else {
                view.set_date(today);
            }
        }
        // (row key, view) for every source row due, sorted by row key: a row's views together.
        let mut due: Vec<(Vec<u8>, usize)> = Vec::new();
        for &v in &moving {
            for rk in self.due_rows(v, today)? {
                due.push((rk, v));
            }
        }
        due.sort_unstable();
        let mut rest = &due[..];
        while !rest.is_empty() {
            // Up to DUE_ROWS_CHUNK distinct rows, never splitting one row's views.
            let (mut end, mut rows) = (0, 0);
            while end < rest.len() {
                if end == 0 || rest[end].0 != rest[end - 1].0 {
                    if rows == DUE_ROWS_CHUNK {
                        break;
                    }
                    rows += 1;
                }
                end += 1;
            }
            let (chunk, later) = rest.split_at(end);
            self.revisit_rows(chunk, &before, today)?;
            rest = later;
        }
        for &v in &moving {
            let old = before[v];
            self.views[v].due_groups(&self.store, old, today)?;
            self.views[v].set_date(today);
        }
        self.fold_views(&[], Some(&before), true)
    }

    /// The keys of view `v`'s source rows due when its date moves to `today`.
    fn due_rows(&self, v: usize, today: i32) -> Result<Vec<Vec<u8>>, MaintainError> {
        let view = &self.views[v];
        if view.row_components.is_empty() {
            return Ok(vec![]);
        }
        Ok(if today > view.date {
            let upto = keys::time_key(v as u16, today.saturating_add(1), &[]);
            self.store
                .scan_prefix(CF_TIME, &keys::time_prefix(v as u16), Some(&upto))?
                .into_iter()
                .filter_map(|(k, _)| keys::split_time_key(&k).map(|(_, rk)| rk.to_vec()))
                .collect()
        } else {
            let prefix = keys::table_prefix(view.table as u16);
            self.store
                .scan_prefix(CF_ROWS, &prefix, None)?
                .into_iter()
                .map(|(k, _)| k)
                .collect()
        })
    }

    /// Revisits the due rows of `chunk` ((row key, view), sorted by row key): each row is read
    /// once, retracted from each of its views at the view's old date (`before`) and added at
    /// `today`, re-filed in their time indexes, and written once.
    fn revisit_rows(
        &mut self,
        chunk: &[(Vec<u8>, usize)],
        before: &[i32],
        today: i32,
    ) -> Result<(), MaintainError> {
        let mut row_keys: Vec<&[u8]> = chunk.iter().map(|(rk, _)| rk.as_slice()).collect();
        row_keys.dedup();
        self.stats.row_reads += row_keys.len() as u64;
        let records = self.store.read_many(CF_ROWS, &row_keys, decode_row)?;
        // Each row's record, and per view an entry out of the time index and one into it.
        self.store.reserve(CF_ROWS, row_keys.len());
        self.store.reserve(CF_TIME, 2 * chunk.len());
        let mut revisited = Vec::with_capacity(row_keys.len());
        let mut at = 0;
        for (rk, rec) in row_keys.iter().zip(records) {
            let start = at;
            while at < chunk.len() && chunk[at].0.as_slice() == *rk {
                at += 1;
            }
            let Some(mut rec) = rec else {
                continue;
            };
            let views = &chunk[start..at];
            for &(_, v) in views {
                rec.revisit.retain(|(w, d)| {
                    if *w as usize == v {
                        self.store.delete(CF_TIME, keys::time_key(*w, *d, rk));
                        false
                    } else {
                        true
                    }
                });
                if let Some(next) = self.views[v].row_revisit(&rec.image, today)? {
                    self.store
                        .put(CF_TIME, keys::time_key(v as u16, next, rk), &());
                    rec.revisit.push((v as u16, next));
                }
            }
            self.store
                .put_encoded(CF_ROWS, rk.to_vec(), keys::encode_record(&rec));
            revisited.push((views, rec.image));
        }
        let mut deltas = Vec::with_capacity(revisited.len() * 2);
        for (views, image) in &revisited {
            for &(_, v) in *views {
                let table = self.views[v].table;
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
        let parallel = deltas.len() >= PARALLEL_MIN_ROWS;
        self.fold_views(&deltas, None, parallel)?;
        Ok(())
    }
}
