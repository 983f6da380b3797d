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
//! So a target with rows is refilled by difference: the target rows with no identical new row
//! are deleted and the new rows with no identical target row inserted. "Identical" means what a
//! reader sees, the text: equality alone calls 1.5 and 1.50 equal, and 0 and -0.
//!
//! - **In the engine** ([`printed`]), for a target up to [`Config::resync_memory_mb`]: its rows
//!   are read as PostgreSQL prints them and held; each new row's COPY line is looked up there,
//!   and only the new rows not found travel (to a staging table, then into the target after the
//!   rows not kept are deleted by `ctid`). Any column type compares, since text is compared.
//!   Unchanged, `mv_agent_performance`'s 614k rows at 5M + 5M are read back in about 1.1 s
//!   and nothing is written, against 2.2-3.6 s for `init`'s copy of them; but the read must
//!   come before the rows are read out of the state, where `init`'s copy runs beside that. So
//!   `init` locks every target first ([`Fill::lock`]) and reads the next held target's rows
//!   on another connection while one fills ([`Fill::read_held`];
//!   `bench/results/2026-12-07-resync-in-engine.md`, then
//!   `bench/results/2026-12-07-midnight-reads-and-resync-ahead.md`). The table's size on disk
//!   stands for the text held, about as large.
//! - **In PostgreSQL**, for a larger target (the engine's memory stays bounded whatever the
//!   target's size): the new rows are copied into a temporary table of the columns written (no
//!   WAL, no index), then two hash anti-joins on the whole row (`s = ROW(t.a, ...)`: each
//!   column's equality, NULL equal to NULL) delete and insert what differs, with what equality
//!   leaves out of "the same text" checked beside it (the scale of numerics, the sign of zero
//!   floats). It costs about what the first `init`'s copy does
//!   (`bench/results/2026-12-06-resync-and-time-index.md`). Columns of other types, whose
//!   equality may hide other differences (`interval`, enums, arrays, ...), make such a target
//!   refill whole: every row deleted and copied in again.
//!
//! Either way the target is locked against writers (`SHARE ROW EXCLUSIVE`: readers go on) for
//! the transaction, so the rows compared are the rows replaced.
//!
//! [`Config::resync_memory_mb`]: crate::config::Config::resync_memory_mb

mod printed;

use tokio_postgres::Transaction;

use self::printed::PrintedRows;
use super::target::{copy_in, copy_line, copy_rows_into, TargetTable};
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

/// How a fill writes its target.
enum Way {
    /// An empty target: the rows are copied straight in.
    Straight,
    /// The target's rows held ([`printed`]); new rows not among them go to [`STAGING`]
    /// (created with the first).
    Printed { held: PrintedRows, staged: bool },
    /// Every new row goes to [`STAGING`], compared in PostgreSQL by `same` ([`same_rows`]).
    Staged { same: String },
    /// The old rows were deleted; every new row is copied in.
    Whole { deleted: usize },
}

/// How a fill will write its target, decided under the target's lock ([`Fill::lock`]) before
/// any fill of the transaction starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Plan {
    /// The target is empty.
    Straight,
    /// By difference in the engine: the target's rows are to be read and held
    /// ([`Fill::read_held`]).
    Held,
    /// By difference in PostgreSQL, with this test of two rows reading alike.
    Staged(String),
    /// Whole: every old row deleted.
    Whole,
}

/// A target's rows as printed, read for its fill ([`Fill::read_held`]).
pub struct Held(PrintedRows);

/// One target's fill in progress.
pub struct Fill<'a> {
    target: &'a TargetTable,
    way: Way,
    rows: usize,
}

/// What a fill left in its target: its rows, and how many of them it wrote or deleted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Filled {
    pub rows: usize,
    pub changed: usize,
}

impl<'a> Fill<'a> {
    /// Locks `target` against writers for the rest of `tx` and decides how it is filled:
    /// straight in if it is empty; if it holds rows, by difference, in the engine when the
    /// table takes up to `hold_bytes`.
    pub async fn lock(
        tx: &Transaction<'_>,
        target: &TargetTable,
        hold_bytes: u64,
    ) -> Result<Plan, tokio_postgres::Error> {
        let t = &target.table;
        tx.batch_execute(&format!("LOCK TABLE {t} IN SHARE ROW EXCLUSIVE MODE"))
            .await?;
        let size: Option<i64> = tx
            .query_one(
                &format!(
                    "SELECT CASE WHEN EXISTS (SELECT FROM {t}) \
                     THEN pg_relation_size($1::text::regclass) END"
                ),
                &[t],
            )
            .await?
            .get(0);
        Ok(match (size, same_rows(target)) {
            (None, _) => Plan::Straight,
            (Some(size), _) if size as u64 <= hold_bytes => Plan::Held,
            (Some(_), Some(same)) => Plan::Staged(same),
            (Some(_), None) => Plan::Whole,
        })
    }

    /// Reads the rows of `target`, planned [`Plan::Held`], in `tx`: the fill's own transaction
    /// or one of another connection begun after the fill's locked the target, so that both
    /// see the same rows (no writer gets in between) and the rows' `ctid`s name the rows the
    /// fill deletes.
    pub async fn read_held(
        tx: &Transaction<'_>,
        target: &TargetTable,
    ) -> Result<Held, tokio_postgres::Error> {
        PrintedRows::read(tx, target).await.map(Held)
    }

    /// Starts filling `target`, locked in `tx` and planned `plan` ([`Self::lock`]); `held`:
    /// its rows if planned [`Plan::Held`] (read here if `None`).
    pub async fn begin(
        tx: &Transaction<'_>,
        target: &'a TargetTable,
        plan: Plan,
        held: Option<Held>,
    ) -> Result<Fill<'a>, tokio_postgres::Error> {
        let way = match plan {
            Plan::Straight => Way::Straight,
            Plan::Held => Way::Printed {
                held: match held {
                    Some(Held(rows)) => rows,
                    None => PrintedRows::read(tx, target).await?,
                },
                staged: false,
            },
            Plan::Staged(same) => {
                tx.batch_execute(&format!("SET LOCAL work_mem = '{HASH_MEMORY}'"))
                    .await?;
                create_staging(tx, target).await?;
                Way::Staged { same }
            }
            Plan::Whole => Way::Whole {
                deleted: tx
                    .execute(&format!("DELETE FROM {}", target.table), &[])
                    .await? as usize,
            },
        };
        Ok(Fill {
            target,
            way,
            rows: 0,
        })
    }

    /// Adds a page of the view's rows.
    pub async fn rows(
        &mut self,
        tx: &Transaction<'_>,
        rows: &[Vec<Value>],
    ) -> Result<(), tokio_postgres::Error> {
        self.rows += rows.len();
        let t = self.target;
        match &mut self.way {
            Way::Straight | Way::Whole { .. } => copy_rows_into(tx, t, &t.table, rows).await,
            Way::Staged { .. } => copy_rows_into(tx, t, STAGING, rows).await,
            Way::Printed { held, staged } => {
                let mut missing = String::new();
                let mut line = String::new();
                for r in rows {
                    line.clear();
                    copy_line(&mut line, t, r);
                    // Without its newline, as the held rows are.
                    if !held.keep(&line.as_bytes()[..line.len() - 1]) {
                        missing.push_str(&line);
                    }
                }
                if missing.is_empty() {
                    return Ok(());
                }
                if !*staged {
                    create_staging(tx, t).await?;
                    *staged = true;
                }
                copy_in(tx, STAGING, &t.column_list(), missing).await
            }
        }
    }

    /// Makes the target hold exactly the rows added, and gathers its planner statistics (inside
    /// the transaction, so they describe the rows written: planned without them, each batch's
    /// delete of the changed groups took a freshly filled target for a large table of few
    /// distinct keys and scanned it whole instead of using the key index).
    pub async fn finish(self, tx: &Transaction<'_>) -> Result<Filled, tokio_postgres::Error> {
        let t = &self.target.table;
        let cols = self.target.column_list();
        let changed = match &self.way {
            Way::Straight => self.rows as u64,
            Way::Whole { deleted } => (*deleted + self.rows) as u64,
            Way::Printed { held, staged } => {
                let gone = held.not_kept();
                let deleted = if gone.is_empty() {
                    0
                } else {
                    tx.execute(
                        &format!("DELETE FROM {t} WHERE ctid = ANY($1::text[]::tid[])"),
                        &[&gone],
                    )
                    .await?
                };
                let inserted = if *staged {
                    tx.execute(
                        &format!("INSERT INTO {t} ({cols}) SELECT {cols} FROM {STAGING}"),
                        &[],
                    )
                    .await?
                } else {
                    0
                };
                deleted + inserted
            }
            Way::Staged { same } => {
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
                             WHERE NOT EXISTS (SELECT FROM {t} t WHERE {same})"
                        ),
                        &[],
                    )
                    .await?;
                deleted + inserted
            }
        };
        // Dropped now, not at commit: the next target's fill in this transaction creates its own.
        if matches!(
            self.way,
            Way::Staged { .. } | Way::Printed { staged: true, .. }
        ) {
            tx.batch_execute(&format!("DROP TABLE {STAGING}")).await?;
        }
        tx.batch_execute(&format!("ANALYZE {t}")).await?;
        Ok(Filled {
            rows: self.rows,
            changed: changed as usize,
        })
    }
}

/// Creates [`STAGING`] with the columns written into `target`.
async fn create_staging(
    tx: &Transaction<'_>,
    target: &TargetTable,
) -> Result<(), tokio_postgres::Error> {
    tx.batch_execute(&format!(
        "CREATE TEMPORARY TABLE {STAGING} ON COMMIT DROP AS SELECT {} FROM {} WITH NO DATA",
        target.column_list(),
        target.table
    ))
    .await
}
