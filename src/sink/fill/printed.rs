//! A target's rows as PostgreSQL prints them, held in the engine to tell which rows of a
//! resync are already there.
//!
//! The rows are read with `COPY (SELECT ctid, ...) TO STDOUT` under fixed output settings
//! ([`PRINTED_AS_WRITTEN`]): then a row's line is byte for byte the COPY line the engine
//! writes for a row of the same values ([`super::super::target::copy_line`]), and two rows
//! print alike exactly when a reader sees them alike. Comparing text needs no knowledge of
//! the column types: 1.5 and 1.50, 0 and -0, enums, intervals, arrays all print as they are.
//! Where the engine's text of a value would differ from PostgreSQL's, the row is rewritten:
//! more work, never a wrong row.
//!
//! The lines are kept back to back in one buffer, found by a hash of their bytes and compared
//! whole: a hash collision costs a comparison, never a row. Each line keeps its row's `ctid`,
//! which names the rows to delete in the same transaction (the target is locked against
//! writers meanwhile, so no row moves).

use futures_util::{pin_mut, TryStreamExt};
use rustc_hash::{FxHashMap, FxHasher};
use std::hash::Hasher;
use tokio_postgres::Transaction;

use crate::sink::target::TargetTable;

/// The output settings under which PostgreSQL prints values as the engine writes them:
/// timestamps with time zone in UTC, ISO dates, intervals in PostgreSQL's style, the shortest
/// exact floats.
const PRINTED_AS_WRITTEN: [(&str, &str); 4] = [
    ("TimeZone", "UTC"),
    ("DateStyle", "ISO, MDY"),
    ("IntervalStyle", "postgres"),
    ("extra_float_digits", "1"),
];

/// No row at this index: the end of a chain of lines with one hash.
const NONE: u32 = u32::MAX;

/// One target row read.
struct Line {
    /// Where the line (its ctid, a tab, the row's text) starts in `bytes`.
    from: usize,
    /// The length of its ctid's text.
    ctid_len: u16,
    /// Where its row's text starts, from `from` (past the ctid and its tab).
    skip: u16,
    /// The length of the row's text (without its newline).
    len: u32,
    /// Taken by an identical new row: stays.
    kept: bool,
    /// The next line with the same hash.
    next: u32,
}

/// Every row of one target, as printed.
pub(super) struct PrintedRows {
    bytes: Vec<u8>,
    lines: Vec<Line>,
    /// The first line of each hash.
    first: FxHashMap<u64, u32>,
}

fn hash(line: &[u8]) -> u64 {
    let mut h = FxHasher::default();
    h.write(line);
    h.finish()
}

impl PrintedRows {
    /// Reads every row of `target` inside `tx`, which must hold a lock that keeps writers out.
    pub(super) async fn read(
        tx: &Transaction<'_>,
        target: &TargetTable,
    ) -> Result<PrintedRows, tokio_postgres::Error> {
        let names: Vec<&str> = PRINTED_AS_WRITTEN.iter().map(|(n, _)| *n).collect();
        let saved = tx
            .query_one(
                "SELECT array_agg(current_setting(n) ORDER BY i) \
                 FROM unnest($1::text[]) WITH ORDINALITY AS s(n, i)",
                &[&names],
            )
            .await?;
        let saved: Vec<String> = saved.get(0);
        let values: Vec<&str> = PRINTED_AS_WRITTEN.iter().map(|(_, v)| *v).collect();
        set_all(tx, &names, &values).await?;
        let read = Self::copy_out(tx, target).await?;
        // The rest of the transaction prints as before.
        let saved: Vec<&str> = saved.iter().map(String::as_str).collect();
        set_all(tx, &names, &saved).await?;
        Ok(read)
    }

    async fn copy_out(
        tx: &Transaction<'_>,
        target: &TargetTable,
    ) -> Result<PrintedRows, tokio_postgres::Error> {
        let mut rows = PrintedRows {
            bytes: Vec::new(),
            lines: Vec::new(),
            first: FxHashMap::default(),
        };
        let stream = tx
            .copy_out(&format!(
                "COPY (SELECT ctid, {} FROM {}) TO STDOUT",
                target.column_list(),
                target.table
            ))
            .await?;
        pin_mut!(stream);
        // Where the line being read began (PostgreSQL sends a row per message, but nothing
        // here depends on it).
        let mut line_start = 0;
        while let Some(chunk) = stream.try_next().await? {
            rows.bytes.extend_from_slice(&chunk);
            while let Some(end) = rows.bytes[line_start..].iter().position(|b| *b == b'\n') {
                rows.add(line_start, line_start + end);
                line_start += end + 1;
            }
        }
        Ok(rows)
    }

    /// Files the line at `bytes[from..to]` (`ctid`, tab, the row's text).
    fn add(&mut self, from: usize, to: usize) {
        let raw = &self.bytes[from..to];
        // A ctid prints as `(block,item)`: some twenty bytes at most, before the first tab.
        let ctid_len = raw.iter().position(|b| *b == b'\t').unwrap_or(raw.len());
        let start = (from + ctid_len + 1).min(to);
        let index = self.lines.len() as u32;
        let next = (self.first)
            .insert(hash(&self.bytes[start..to]), index)
            .unwrap_or(NONE);
        self.lines.push(Line {
            from,
            ctid_len: ctid_len as u16,
            skip: (start - from) as u16,
            len: (to - start) as u32,
            kept: false,
            next,
        });
    }

    fn text(&self, l: &Line) -> &[u8] {
        let start = l.from + l.skip as usize;
        &self.bytes[start..start + l.len as usize]
    }

    /// Whether a target row not yet kept prints as `line` (without its newline); if so, that
    /// row is kept.
    pub(super) fn keep(&mut self, line: &[u8]) -> bool {
        let mut at = self.first.get(&hash(line)).copied().unwrap_or(NONE);
        while at != NONE {
            let l = &self.lines[at as usize];
            if !l.kept && self.text(l) == line {
                self.lines[at as usize].kept = true;
                return true;
            }
            at = l.next;
        }
        false
    }

    /// The ctids of the rows no new row kept, as text (`(block,item)`).
    pub(super) fn not_kept(&self) -> Vec<String> {
        (self.lines.iter().filter(|l| !l.kept))
            .map(|l| {
                let ctid = &self.bytes[l.from..l.from + l.ctid_len as usize];
                String::from_utf8_lossy(ctid).into_owned()
            })
            .collect()
    }
}

/// Sets each setting of `names` to the value at its index, for the rest of the transaction.
async fn set_all(
    tx: &Transaction<'_>,
    names: &[&str],
    values: &[&str],
) -> Result<(), tokio_postgres::Error> {
    tx.execute(
        "SELECT set_config(n, v, true) FROM unnest($1::text[], $2::text[]) AS s(n, v)",
        &[&names, &values],
    )
    .await
    .map(drop)
}
