//! Reconcile: recompute a view from its SQL and compare it with its target.
//!
//! Two ways to get the two sides at one moment:
//! - with no engine running, PostgreSQL evaluates the view's own query text and the target is
//!   read in the same REPEATABLE READ snapshot ([`compare`]);
//! - while the engine runs (targets move with every batch), the views are recomputed in the
//!   exported snapshot of a temporary slot at LSN C ([`at_lsn::Recomputation`]) and compared
//!   with the targets as the engine committed them at exactly C: through a snapshot the engine
//!   exports there and goes on ([`live`]), or, to repair, with the engine held at C (see
//!   `crate::engine::requests`).
//!
//! Rows are matched by the view's group key ([`compare_queries`], one key at a time); numbers
//! compare by value (1.50 = 1.5) and double precision within 1e-9 relative, the contract's
//! tolerance for float sums whose PostgreSQL result depends on summation order. `--repair` replaces exactly the differing rows in
//! one transaction with the recomputed ones (plain DELETE/INSERT under MVCC: readers are never
//! blocked and see either the old or the repaired rows).

use serde::{Deserialize, Serialize};
use thiserror::Error;
use tokio_postgres::Client;

use crate::pg::quote_ident;
use crate::pg::{sql_err, SqlError};
use crate::plan::ViewPlan;

pub mod at_lsn;
mod compare;
pub mod live;
pub mod offline;

pub use compare::compare_queries;

#[derive(Debug, Error)]
pub enum ReconcileError {
    #[error(transparent)]
    Sql(#[from] SqlError),
    #[error("{context}: column {column} of the comparison is not a number")]
    Unreadable { context: String, column: usize },
    #[error("connecting for the reconcile: {0}")]
    Connect(#[from] crate::pg::ConnectError),
    #[error("taking the reconcile's snapshot: {0}")]
    Snapshot(#[from] crate::source::snapshot::SnapshotError),
    #[error("taking the reconcile's snapshot: waited {waited_ms} ms for write transactions open since before it ({oldest}); retry once they end, or raise --reconcile-wait-ms")]
    WritersOpen { waited_ms: u128, oldest: String },
    #[error("the engine stopped during the reconcile, or could not export its targets' snapshot (its log says which)")]
    EngineGone,
}

/// One differing row: what the view's SQL says and what the target holds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RowDiff {
    pub key: Vec<Option<String>>,
    pub expected: Option<Vec<Option<String>>>,
    pub actual: Option<Vec<Option<String>>>,
}

/// The comparison of one view.
#[derive(Debug, Clone)]
pub struct Report {
    pub view: String,
    pub columns: Vec<String>,
    pub expected_rows: usize,
    pub actual_rows: usize,
    pub diffs: Vec<RowDiff>,
}

/// One view's outcome of a request served by the running engine, as recorded in
/// `deltamv.requests.detail` (written by `crate::engine`, read by [`crate::submit`]).
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct ViewResult {
    pub view: String,
    /// Compared views: rows of the recomputation and of the target.
    pub expected_rows: Option<usize>,
    pub target_rows: Option<usize>,
    pub differing: usize,
    pub repaired: usize,
    /// Rows where the engine's state differs from the view's SQL too.
    pub state_differing: usize,
    pub error: Option<String>,
    /// The first differing rows (all are counted in `differing`).
    pub rows: Vec<RowDiff>,
}

/// What `deltamv.requests.detail` holds.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct RequestDetail {
    pub views: Vec<ViewResult>,
}

/// Compares view `plan` with its target, in one snapshot. `today` replaces CURRENT_DATE when the
/// engine runs on an injected clock (as `DATE 'yyyy-mm-dd'`).
pub async fn compare(
    client: &Client,
    plan: &ViewPlan,
    today: Option<&str>,
) -> Result<Report, ReconcileError> {
    let expected = format!("SELECT * FROM ({}) q", query_at(plan, today));
    let actual = format!("SELECT * FROM {}", plan.name.quoted());
    compare_queries(client, plan, &expected, &actual).await
}

/// The view's recomputation (from source tables only), with CURRENT_DATE pinned to `today`
/// when given.
fn query_at(plan: &ViewPlan, today: Option<&str>) -> String {
    match today {
        Some(d) => replace_current_date(&plan.recompute_sql, d),
        None => plan.recompute_sql.clone(),
    }
}

/// Rewrites CURRENT_DATE (outside quotes) to a date literal.
pub fn replace_current_date(sql: &str, date: &str) -> String {
    let mut out = String::with_capacity(sql.len());
    let mut quote: Option<char> = None;
    let chars: Vec<char> = sql.chars().collect();
    let word: Vec<char> = "current_date".chars().collect();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if let Some(q) = quote {
            out.push(c);
            if c == q {
                quote = None;
            }
            i += 1;
            continue;
        }
        if c == '\'' || c == '"' {
            quote = Some(c);
            out.push(c);
            i += 1;
            continue;
        }
        let boundary_before = i == 0 || !(chars[i - 1].is_alphanumeric() || chars[i - 1] == '_');
        let matches = i + word.len() <= chars.len()
            && chars[i..i + word.len()]
                .iter()
                .zip(&word)
                .all(|(a, b)| a.to_ascii_lowercase() == *b)
            && chars
                .get(i + word.len())
                .is_none_or(|n| !(n.is_alphanumeric() || *n == '_'));
        if boundary_before && matches {
            out.push_str(&format!("DATE '{date}'"));
            i += word.len();
        } else {
            out.push(c);
            i += 1;
        }
    }
    out
}

/// Replaces the differing rows of the target with the recomputed ones, in one transaction.
pub async fn repair(
    client: &Client,
    plan: &ViewPlan,
    report: &Report,
    today: Option<&str>,
) -> Result<usize, ReconcileError> {
    repair_from(client, plan, report, &query_at(plan, today)).await
}

/// Replaces the differing rows of the target with those of `source_sql` (rows of the view), in
/// one transaction.
pub async fn repair_from(
    client: &Client,
    plan: &ViewPlan,
    report: &Report,
    query: &str,
) -> Result<usize, ReconcileError> {
    if report.diffs.is_empty() {
        return Ok(0);
    }
    let keys: Vec<String> = plan
        .key_columns
        .iter()
        .map(|i| quote_ident(&report.columns[*i]))
        .collect();
    let mut values = Vec::new();
    for d in &report.diffs {
        let row = d.expected.as_ref().or(d.actual.as_ref());
        let Some(row) = row else { continue };
        let lits: Vec<String> = plan
            .key_columns
            .iter()
            .map(|i| match &row[*i] {
                Some(s) => format!(
                    "{}::{}",
                    crate::pg::quote_literal(s),
                    plan.output_types()[*i].pg_name()
                ),
                None => "NULL".into(),
            })
            .collect();
        values.push(format!("({})", lits.join(", ")));
    }
    let key_match = |alias: &str| {
        keys.iter()
            .enumerate()
            .map(|(i, k)| format!("{alias}.{k} IS NOT DISTINCT FROM b.column{}", i + 1))
            .collect::<Vec<_>>()
            .join(" AND ")
    };
    let bad = format!("(VALUES {}) b", values.join(", "));
    // Rows that differ were changed behind the engine's back (or by a bug), so the row count it
    // keeps for status (deltamv.views.rows) may be off too: count again, in the same
    // transaction. Only repairs pay for the count; the engine is held meanwhile.
    let sql = format!(
        "BEGIN;
         DELETE FROM {target} t USING {bad} WHERE {tm};
         INSERT INTO {target} SELECT q.* FROM ({query}) q WHERE EXISTS (SELECT 1 FROM {bad} WHERE {qm});
         {count}
         COMMIT;",
        target = plan.name.quoted(),
        count = crate::bookkeeping::views::count_rows_sql(&plan.name.to_string(), &plan.name.quoted()),
        tm = key_match("t"),
        qm = key_match("q"),
    );
    if let Err(e) = client.batch_execute(&sql).await {
        let _ = client.batch_execute("ROLLBACK").await;
        return Err(sql_err(format!("repairing {}", plan.name))(e).into());
    }
    Ok(report.diffs.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn current_date_is_replaced_outside_quotes_only() {
        let sql = "SELECT 'current_date', x FROM t WHERE c >= CURRENT_DATE - 1 AND my_current_date = current_date";
        assert_eq!(
            replace_current_date(sql, "2026-01-02"),
            "SELECT 'current_date', x FROM t WHERE c >= DATE '2026-01-02' - 1 AND my_current_date = DATE '2026-01-02'"
        );
    }
}
