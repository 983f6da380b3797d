//! Filling a target from the engine's state, in `init`'s one transaction: straight in when the
//! target is empty (a first `init`), by difference when it holds rows (`init --resync`).
//!
//! A resync must swap the old rows for the new ones atomically: readers keep the old rows until
//! the transaction commits and never see a target empty or half-filled. Deleting every old row
//! and copying every new one in did that, but wrote every row twice (a dead tuple and a new one)
//! and poured all of them into the WAL, which replicas and archives then carry, and left the
//! target at twice its size for autovacuum. Yet a resync mostly finds what the target already
//! shows: only what changed while the state could not be trusted differs.
//!
//! So a target with rows is refilled through a staging table: the new rows are copied into a
//! temporary table of the columns written (no WAL, no index), then the target rows with no
//! identical new row are deleted and the new rows with no identical target row inserted. Both
//! are hash anti-joins on the whole row (`s = ROW(t.a, ...)`: each column's equality, NULL equal
//! to NULL, as PostgreSQL compares a composite value), so the fill stays linear in the target's
//! size. Refilling `mv_agent_performance`'s 438k unchanged rows wrote 11 kB of WAL this way,
//! 99 MB the old way; it is not faster (the staging copy costs what the target's did, the two
//! anti-joins what its index entries and WAL did: `bench/results/2026-12-06-resync-and-time-index.md`).
//!
//! "Identical" means what a reader sees, the text: equality alone calls 1.5 and 1.50 equal, and
//! 0 and -0, so numerics must also have the same scale and zero floats the same text; a row that
//! differs only so is rewritten. Comparing every row as text instead took 2.5 s per statement on
//! those 438k rows against 0.8 s so. Columns of other types, whose equality may hide other
//! differences (`interval`, enums, arrays, ...), make the target refill the old way: every row
//! deleted and copied in again.

use tokio_postgres::Transaction;

use super::target::{copy_rows_into, TargetTable};
use crate::pg::quote_ident;
use crate::value::Value;

/// The name of the staging table of a refill (one at a time; dropped before the next target).
const STAGING: &str = "pg_temp.deltamv_fill";

/// Memory for the refill's hash tables (`work_mem`, for its transaction only): a target's rows
/// in one batch. At PostgreSQL's default of 4 MB, 438k rows took 1.09 s per anti-join against
/// 0.84 s (2026-12-06).
const HASH_MEMORY: &str = "64MB";

/// When staged row `s` and target row `t` read the same: whole-row equality of the columns
/// written, and what it leaves out of "the same text"; `None` if a column's type may hide
/// differences this does not know of.
fn same_rows(target: &TargetTable) -> Option<String> {
    let written: Vec<String> = (target.columns.iter())
        .map(|c| format!("t.{}", quote_ident(c)))
        .collect();
    let mut same = format!("s = ROW({})", written.join(", "));
    for (name, ty) in target.columns.iter().zip(&target.types) {
        let c = quote_ident(name);
        // `numeric(12,4)`, `character varying(20)`: the type without its modifier.
        match ty.split('(').next().unwrap_or(ty).trim_end() {
            "smallint"
            | "integer"
            | "bigint"
            | "boolean"
            | "uuid"
            | "date"
            | "text"
            | "character varying"
            | "timestamp without time zone"
            | "timestamp with time zone"
            | "time without time zone" => {}
            // Equal numerics print alike at the same scale (NaN and infinities have none).
            "numeric" => same.push_str(&format!(
                " AND scale(s.{c}) IS NOT DISTINCT FROM scale(t.{c})"
            )),
            // Equal floats print alike but for 0 and -0.
            "double precision" | "real" => same.push_str(&format!(
                " AND (s.{c} IS NULL OR s.{c} <> 0 OR s.{c}::text = t.{c}::text)"
            )),
            _ => return None,
        }
    }
    Some(same)
}

/// One target's fill in progress.
pub struct Fill<'a> {
    target: &'a TargetTable,
    /// When the rows go to [`STAGING`] (the target held rows when the fill began): how a staged
    /// row and a target row are told the same ([`same_rows`]).
    staged: Option<String>,
    /// Rows deleted up front (a target refilled whole).
    deleted: usize,
    rows: usize,
}

/// What a fill left in its target: its rows, and how many of them it wrote or deleted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Filled {
    pub rows: usize,
    pub changed: usize,
}

impl<'a> Fill<'a> {
    /// Starts filling `target` inside `tx`: straight in if it is empty, through the staging
    /// table if it holds rows.
    pub async fn begin(
        tx: &Transaction<'_>,
        target: &'a TargetTable,
    ) -> Result<Fill<'a>, tokio_postgres::Error> {
        let filled: bool = tx
            .query_one(
                &format!("SELECT EXISTS (SELECT FROM {})", target.table),
                &[],
            )
            .await?
            .get(0);
        let staged = same_rows(target).filter(|_| filled);
        let mut deleted = 0;
        if staged.is_some() {
            tx.batch_execute(&format!(
                "SET LOCAL work_mem = '{HASH_MEMORY}';
                 CREATE TEMPORARY TABLE {STAGING} ON COMMIT DROP AS SELECT {} FROM {} WITH NO DATA",
                target.column_list(),
                target.table
            ))
            .await?;
        } else if filled {
            deleted = tx
                .execute(&format!("DELETE FROM {}", target.table), &[])
                .await? as usize;
        }
        Ok(Fill {
            target,
            staged,
            deleted,
            rows: 0,
        })
    }

    /// Adds a page of the view's rows.
    pub async fn rows(
        &mut self,
        tx: &Transaction<'_>,
        rows: &[Vec<Value>],
    ) -> Result<(), tokio_postgres::Error> {
        let into = match self.staged {
            Some(_) => STAGING,
            None => &self.target.table,
        };
        copy_rows_into(tx, self.target, into, rows).await?;
        self.rows += rows.len();
        Ok(())
    }

    /// Makes the target hold exactly the rows added, and gathers its planner statistics (inside
    /// the transaction, so they describe the rows written: planned without them, each batch's
    /// delete of the changed groups took a freshly filled target for a large table of few
    /// distinct keys and scanned it whole instead of using the key index).
    pub async fn finish(self, tx: &Transaction<'_>) -> Result<Filled, tokio_postgres::Error> {
        let t = &self.target.table;
        let changed = if let Some(same) = &self.staged {
            let deleted = tx
                .execute(
                    &format!(
                        "DELETE FROM {t} t WHERE NOT EXISTS (SELECT FROM {STAGING} s WHERE {same})"
                    ),
                    &[],
                )
                .await?;
            let inserted = tx
                .execute(
                    &format!(
                        "INSERT INTO {t} ({cols}) SELECT {cols} FROM {STAGING} s \
                         WHERE NOT EXISTS (SELECT FROM {t} t WHERE {same})",
                        cols = self.target.column_list()
                    ),
                    &[],
                )
                .await?;
            tx.batch_execute(&format!("DROP TABLE {STAGING}")).await?;
            (deleted + inserted) as usize
        } else {
            self.deleted + self.rows
        };
        tx.batch_execute(&format!("ANALYZE {t}")).await?;
        Ok(Filled {
            rows: self.rows,
            changed,
        })
    }
}
