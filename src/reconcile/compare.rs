//! The comparison of a view's two sides, the recomputation and the target, read in one
//! snapshot.
//!
//! PostgreSQL does the bulk of it. Each side is evaluated once, and one hash aggregate counts
//! every distinct row +1 per expected and -1 per actual copy. Only rows whose counts do not
//! cancel leave the server (PostgreSQL's equality: numerics by value, NULLs alike, floats
//! exactly). They are matched here by the view's key, with floats within the tolerance.
//!
//! Those rows are not always few. A double precision sum or average whose last bits depend on
//! PostgreSQL's summation order differs from the engine's exact one in most groups: at 5M rows
//! per table a clean comparison of the seed views sent some 340k such rows, and holding them
//! all took the running engine's memory from 250 MB to 700 MB. So the rows come ordered by the
//! view's key and numbered by key (`dense_rank`, PostgreSQL's equality again), and are matched
//! one key at a time as they stream in: the comparison holds one key's rows and the differences
//! it reports, whatever the view's size.

use std::collections::BTreeMap;

use futures_util::{pin_mut, TryStreamExt};
use tokio_postgres::{Client, SimpleQueryMessage, SimpleQueryRow};

use super::{ReconcileError, Report, RowDiff};
use crate::numeric::Numeric;
use crate::pg::sql_err;
use crate::plan::ViewPlan;
use crate::value::SqlType;

/// A row as text, one entry per column (NULL as `None`).
type Row = Vec<Option<String>>;

/// The result's leading columns: the two sides' row counts, the key's number, the copies.
const EXPECTED_ROWS: usize = 0;
const ACTUAL_ROWS: usize = 1;
const KEY_RUN: usize = 2;
const COPIES: usize = 3;
const FIRST_COLUMN: usize = 4;

/// Compares the rows of `expected_sql` with those of `actual_sql` as rows of view `plan`, both
/// read in one REPEATABLE READ snapshot.
pub async fn compare_queries(
    client: &Client,
    plan: &ViewPlan,
    expected_sql: &str,
    actual_sql: &str,
) -> Result<Report, ReconcileError> {
    let columns: Vec<String> = client
        .prepare(actual_sql)
        .await
        .map_err(sql_err(format!("reading {}", plan.name)))?
        .columns()
        .iter()
        .map(|c| c.name().to_string())
        .collect();
    let col = |i: usize| format!("c{}", i + 1);
    let cols = (0..columns.len()).map(col).collect::<Vec<_>>().join(", ");
    let key_order = match plan.key_columns.as_slice() {
        [] => String::new(),
        keys => {
            let keys: Vec<String> = keys.iter().map(|&i| col(i)).collect();
            format!("ORDER BY {}", keys.join(", "))
        }
    };
    let sql = format!(
        "WITH e AS MATERIALIZED (SELECT * FROM ({expected_sql}) AS x({cols})),
              a AS MATERIALIZED (SELECT * FROM ({actual_sql}) AS x({cols})),
              d AS (SELECT sum(side) AS copies, {cols}
                      FROM (SELECT 1 AS side, * FROM e UNION ALL SELECT -1, * FROM a) u
                     GROUP BY {cols} HAVING sum(side) <> 0)
         SELECT (SELECT count(*) FROM e), (SELECT count(*) FROM a), r.*
           FROM (SELECT) one
           LEFT JOIN (SELECT dense_rank() OVER ({key_order}) AS run, d.* FROM d) r ON true
          ORDER BY r.run"
    );
    client
        .batch_execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY; SET LOCAL extra_float_digits = 3; SET LOCAL datestyle = ISO; SET LOCAL work_mem = '256MB'")
        .await
        .map_err(sql_err("starting the comparison"))?;
    let found = differences(client, plan, &sql).await;
    let _ = client.batch_execute("COMMIT").await;
    let (expected_rows, actual_rows, diffs) = found?;
    Ok(Report {
        view: plan.name.to_string(),
        columns,
        expected_rows,
        actual_rows,
        diffs,
    })
}

/// Runs the comparison query and matches its rows key by key as they arrive: the two sides'
/// row counts and the differing rows, ordered by key.
async fn differences(
    client: &Client,
    plan: &ViewPlan,
    sql: &str,
) -> Result<(usize, usize, Vec<RowDiff>), ReconcileError> {
    let context = format!("comparing {}", plan.name);
    let stream = client
        .simple_query_raw(sql)
        .await
        .map_err(sql_err(context.clone()))?;
    pin_mut!(stream);
    let types = plan.output_types();
    let (mut expected_rows, mut actual_rows) = (0, 0);
    let mut key = KeyRows::default();
    let mut diffs = Vec::new();
    while let Some(msg) = stream.try_next().await.map_err(sql_err(context.clone()))? {
        let SimpleQueryMessage::Row(r) = msg else {
            continue;
        };
        let number = |i: usize| integer_at(&r, i, &context);
        expected_rows = number(EXPECTED_ROWS)? as usize;
        actual_rows = number(ACTUAL_ROWS)? as usize;
        if r.get(KEY_RUN).is_none() {
            continue; // no row differs
        }
        let run = number(KEY_RUN)?;
        if key.run != Some(run) {
            diffs.extend(std::mem::take(&mut key).matched(plan, &types));
            key.run = Some(run);
        }
        let copies = number(COPIES)?;
        let row: Row = (FIRST_COLUMN..r.len())
            .map(|i| r.get(i).map(str::to_string))
            .collect();
        let side = if copies > 0 {
            &mut key.expected
        } else {
            &mut key.actual
        };
        side.extend(std::iter::repeat_n(row, copies.unsigned_abs() as usize));
    }
    diffs.extend(key.matched(plan, &types));
    // Rows with equal keys came in one run, matched in order: a stable sort keeps it.
    diffs.sort_by(|x, y| x.key.cmp(&y.key));
    Ok((expected_rows, actual_rows, diffs))
}

fn integer_at(r: &SimpleQueryRow, i: usize, context: &str) -> Result<i64, ReconcileError> {
    r.get(i)
        .and_then(|t| t.parse().ok())
        .ok_or_else(|| ReconcileError::Unreadable {
            context: context.to_string(),
            column: i,
        })
}

/// The differing rows of one key (by PostgreSQL's equality) from both sides.
#[derive(Default)]
struct KeyRows {
    run: Option<i64>,
    expected: Vec<Row>,
    actual: Vec<Row>,
}

impl KeyRows {
    /// The rows that stay unmatched. Within PostgreSQL's key they are grouped again by the
    /// key's text (numerics by value): one row per key for aggregate views, up to k per
    /// partition for top-k views. Within a key, rows are matched in a canonical order.
    fn matched(self, plan: &ViewPlan, types: &[SqlType]) -> Vec<RowDiff> {
        let key_of = |r: &Row| -> Row {
            plan.key_columns
                .iter()
                .map(|i| canonical(types[*i], &r[*i]))
                .collect()
        };
        let group = |rows: Vec<Row>| -> BTreeMap<Row, Vec<Row>> {
            let mut m: BTreeMap<Row, Vec<Row>> = BTreeMap::new();
            for r in rows {
                m.entry(key_of(&r)).or_default().push(r);
            }
            for rows in m.values_mut() {
                rows.sort_by_cached_key(|r| {
                    r.iter()
                        .zip(types)
                        .map(|(v, t)| canonical(*t, v))
                        .collect::<Vec<_>>()
                });
            }
            m
        };
        let (exp, act) = (group(self.expected), group(self.actual));
        let keys: std::collections::BTreeSet<&Row> = exp.keys().chain(act.keys()).collect();
        let mut diffs = Vec::new();
        for k in keys {
            let (e, a) = (
                exp.get(k).map(Vec::as_slice).unwrap_or(&[]),
                act.get(k).map(Vec::as_slice).unwrap_or(&[]),
            );
            for i in 0..e.len().max(a.len()) {
                let (x, y) = (e.get(i), a.get(i));
                let equal = match (x, y) {
                    (Some(x), Some(y)) => {
                        x.iter().zip(y).zip(types).all(|((p, q), t)| same(*t, p, q))
                    }
                    _ => false,
                };
                if !equal {
                    diffs.push(RowDiff {
                        key: k.clone(),
                        expected: x.cloned(),
                        actual: y.cloned(),
                    });
                }
            }
        }
        diffs
    }
}

/// Whether two values of a column are the same: floats within 1e-9 relative, numerics by
/// value, characters ignoring trailing spaces.
fn same(ty: SqlType, a: &Option<String>, b: &Option<String>) -> bool {
    match (a, b) {
        (None, None) => true,
        (Some(x), Some(y)) if x == y => true,
        (Some(x), Some(y)) => match ty {
            SqlType::Float8 | SqlType::Float4 => match (x.parse::<f64>(), y.parse::<f64>()) {
                (Ok(p), Ok(q)) => {
                    (p.is_nan() && q.is_nan())
                        || p == q
                        || (p - q).abs() <= 1e-9 * p.abs().max(q.abs())
                }
                _ => false,
            },
            SqlType::Numeric => {
                matches!((Numeric::parse(x), Numeric::parse(y)), (Ok(p), Ok(q)) if p == q)
            }
            // character values are equal ignoring trailing spaces (bpchareq).
            SqlType::Bpchar => x.trim_end_matches(' ') == y.trim_end_matches(' '),
            _ => false,
        },
        _ => false,
    }
}

/// Key text that matches equal values (numerics by value).
fn canonical(ty: SqlType, v: &Option<String>) -> Option<String> {
    match (ty, v) {
        (SqlType::Numeric, Some(s)) => Numeric::parse(s)
            .map(|n| normalized_numeric(&n))
            .ok()
            .or(v.clone()),
        (SqlType::Bpchar, Some(s)) => Some(s.trim_end_matches(' ').to_string()),
        _ => v.clone(),
    }
}

fn normalized_numeric(n: &Numeric) -> String {
    let s = n.to_string();
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn floats_compare_within_tolerance_and_numerics_by_value() {
        assert!(same(
            SqlType::Float8,
            &Some("1.0000000000001".into()),
            &Some("1".into())
        ));
        assert!(!same(
            SqlType::Float8,
            &Some("1.001".into()),
            &Some("1".into())
        ));
        assert!(same(
            SqlType::Numeric,
            &Some("1.50".into()),
            &Some("1.5".into())
        ));
        assert!(!same(SqlType::Text, &Some("a".into()), &None));
    }
}
