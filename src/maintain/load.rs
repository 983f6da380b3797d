//! The initial load's row pass: every source row of a snapshot stored, filed in the time index
//! and folded into the views, without the per-change path's lookups and memtable writes.
//!
//! A snapshot's rows are all new and none is read back before the load ends, so the row-level
//! work per row is independent of every other row: its stored image and time-index entries are
//! computed on as many threads as the views fold on, and go to bulk writers
//! ([`crate::state::bulk`]) that are ingested as table files when the load ends. The views then
//! fold the chunk exactly as a batch of inserts ([`Maintainer::apply`]): the groups, and so the
//! targets, are those of the incremental path, and the stored images and entries are the bytes
//! that path stores (`tests.rs` checks a bulk load against inserts).
//!
//! Until [`Maintainer::finish_load`] ingests them, the images and time entries are not in the
//! store: nothing may read rows or change the date in between. The caller (`setup::load`) marks
//! the snapshot done only after the ingestion and a flush, so a crash at any point rebuilds.

use std::time::Duration;

use crate::state::bulk::{BulkWriter, TableFiles};
use crate::state::keys::{self, CF_ROWS, CF_TIME};
use crate::state::store::StoreError;
use crate::value::Value;

use super::rows::RowDelta;
use super::threads;
use super::{MaintainError, Maintainer, PARALLEL_MIN_ROWS};

/// A bulk load under way: the writers of the table being loaded, and the tables whose table
/// files are being written on threads of their own while the next table loads.
#[derive(Default)]
pub(super) struct BulkLoad {
    open: Option<(usize, LoadSink)>,
    finishing: Vec<Finishing>,
    /// What the open table's load has cost so far, for the debug log at its end.
    spent: Spent,
}

/// A table's load so far: rows, the row pass's time, and each view's fold time and groups.
#[derive(Default)]
struct Spent {
    rows: u64,
    row_pass: Duration,
    views: Vec<(Duration, u64)>,
}

/// One table's writers: its row images and its rows' time-index entries.
struct LoadSink {
    rows: BulkWriter,
    time: BulkWriter,
}

type Files = Result<[TableFiles; 2], StoreError>;

/// A table's table files: being written, or written on the caller's thread (no other thread
/// could be started).
enum Finishing {
    Thread(std::thread::JoinHandle<Files>),
    Done(Files),
}

impl LoadSink {
    /// Both writers' table files, side by side.
    fn finish(self) -> Files {
        let mut files = threads::each_on_a_thread(
            "deltamv-merge",
            vec![self.rows, self.time],
            BulkWriter::finish,
        )
        .into_iter();
        match (files.next(), files.next()) {
            (Some(rows), Some(time)) => Ok([rows?, time?]),
            _ => Err(StoreError::Bulk("a table's writers were lost".into())),
        }
    }
}

/// One thread's share of a chunk's row pass: encoded row records and time-index keys.
#[derive(Default)]
struct Encoded {
    rows: Vec<(Vec<u8>, Vec<u8>)>,
    time: Vec<Vec<u8>>,
}

impl Maintainer {
    /// Starts a bulk load into the (emptied) store, clearing what a crashed one left aside; a
    /// [`Self::load`] without it starts one itself.
    pub fn begin_load(&mut self) -> Result<(), MaintainError> {
        self.store.clear_bulk()?;
        self.load = Some(BulkLoad::default());
        for view in &mut self.views {
            view.set_bulk_load(true);
        }
        Ok(())
    }

    /// Loads a chunk of `table`'s snapshot rows (full-width images, unread columns NULL).
    pub fn load(&mut self, table: usize, rows: &[Vec<Value>]) -> Result<(), MaintainError> {
        if self.load.is_none() {
            self.begin_load()?;
        }
        if self
            .load
            .as_ref()
            .is_some_and(|l| l.open.as_ref().is_some_and(|o| o.0 != table))
        {
            self.finish_table();
        }
        let mut sink = match self.load.as_mut().and_then(|l| l.open.take()) {
            Some((_, sink)) => sink,
            None => LoadSink {
                rows: self.store.bulk_writer(CF_ROWS, table)?,
                time: self.store.bulk_writer(CF_TIME, table)?,
            },
        };
        self.begin(rows.len());
        let started = std::time::Instant::now();
        let parallel = rows.len() >= PARALLEL_MIN_ROWS;
        let threads = if parallel { self.threads } else { 1 };
        let parts: Vec<&[Vec<Value>]> = rows.chunks(rows.len().div_ceil(threads).max(1)).collect();
        let this = &*self;
        let encoded =
            threads::each_on_a_thread("deltamv-load", parts, |part| this.encode_rows(table, part));
        for part in encoded {
            let part = part?;
            for (k, v) in &part.rows {
                sink.rows.put(k, v)?;
            }
            for k in &part.time {
                sink.time.put(k, &[])?;
            }
        }
        if let Some(load) = self.load.as_mut() {
            load.open = Some((table, sink));
        }
        self.stats.row_pass_micros = started.elapsed().as_micros() as u64;
        let deltas: Vec<RowDelta<'_>> = rows
            .iter()
            .map(|row| RowDelta {
                table,
                image: self.project(table, row),
                sign: 1,
                only: None,
            })
            .collect();
        let dates = self.dates();
        self.fold_views(&deltas, Some(&dates), parallel)?;
        if let Some(load) = self.load.as_mut() {
            let spent = &mut load.spent;
            spent.rows += rows.len() as u64;
            spent.row_pass += Duration::from_micros(self.stats.row_pass_micros);
            spent.views.resize(self.views.len(), (Duration::ZERO, 0));
            for (view, (time, groups)) in self.views.iter().zip(&mut spent.views) {
                *time += view.batch_cost;
                *groups += view.stats.groups;
            }
        }
        Ok(())
    }

    /// The stored record and time-index key of each row, as an insert stores them.
    fn encode_rows(&self, table: usize, rows: &[Vec<Value>]) -> Result<Encoded, MaintainError> {
        let mut out = Encoded {
            rows: Vec::with_capacity(rows.len()),
            time: Vec::new(),
        };
        for row in rows {
            let image = self.project(table, row);
            let rk = keys::row_key(table as u16, &self.key_of(table, &image));
            let (record, time) = self.row_entries(table, &rk, &image)?;
            out.time.extend(time);
            out.rows.push((rk, record));
        }
        Ok(out)
    }

    /// The table being loaded is complete: its table files are written on a thread of their own
    /// while the next table loads.
    pub fn finish_table(&mut self) {
        let Some(load) = self.load.as_mut() else {
            return;
        };
        let Some((table, sink)) = load.open.take() else {
            return;
        };
        let spent = std::mem::take(&mut load.spent);
        let views: Vec<String> = (self.views.iter().zip(&spent.views))
            .filter(|(_, (_, groups))| *groups > 0)
            .map(|(v, (time, groups))| {
                format!("{}={}ms/{groups}g", v.plan.name.name, time.as_millis())
            })
            .collect();
        tracing::debug!(
            table = %self.tables[table].name,
            rows = spent.rows,
            row_pass_ms = spent.row_pass.as_millis(),
            views = views.join(" "),
            "table loaded"
        );
        // Taken by the thread, or by this one if no thread could be started.
        let sink = std::sync::Arc::new(std::sync::Mutex::new(Some(sink)));
        let take = |sink: &std::sync::Mutex<Option<LoadSink>>| -> Files {
            match sink.lock().ok().and_then(|mut s| s.take()) {
                Some(sink) => sink.finish(),
                None => Err(StoreError::Bulk("a table's writers were lost".into())),
            }
        };
        let theirs = std::sync::Arc::clone(&sink);
        let thread = std::thread::Builder::new().name("deltamv-merge".into());
        load.finishing
            .push(match thread.spawn(move || take(&theirs)) {
                Ok(handle) => Finishing::Thread(handle),
                Err(_) => Finishing::Done(take(&sink)),
            });
    }

    /// Ends a bulk load: every table's row images and time-index entries ingested into the
    /// store (not durable until the store's next flush). Returns the number of rows.
    pub fn finish_load(&mut self) -> Result<u64, MaintainError> {
        self.finish_table();
        for view in &mut self.views {
            view.set_bulk_load(false);
        }
        let Some(load) = self.load.take() else {
            return Ok(0);
        };
        let mut rows = 0;
        for finishing in load.finishing {
            let files = match finishing {
                Finishing::Thread(handle) => match handle.join() {
                    Ok(files) => files,
                    Err(panic) => std::panic::resume_unwind(panic),
                },
                Finishing::Done(files) => files,
            };
            let [row_images, time_index] = files?;
            rows += self.store.ingest(row_images)?;
            self.store.ingest(time_index)?;
        }
        Ok(rows)
    }
}
