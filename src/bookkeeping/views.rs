//! `deltamv.views`: one row per view, with its mode, its state (`ok` or `failed` with the
//! error) and the row count of its target, kept exactly by the transactions that write it.

use tokio_postgres::GenericClient;

use crate::pg::{quote_literal, sql_err, SqlError};

/// The views recorded as failed, with why.
pub async fn failed<C: GenericClient>(client: &C) -> Result<Vec<(String, String)>, SqlError> {
    let rows = client
        .query(
            "SELECT view_name, coalesce(last_error, '') FROM deltamv.views WHERE state = 'failed'",
            &[],
        )
        .await
        .map_err(sql_err("reading view states"))?;
    Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
}

/// Marks a view failed with why, in `client`'s transaction when it is one (so the failure is
/// recorded with the batch that found it). The view stays failed until the next `deltamv init`.
pub async fn mark_failed<C: GenericClient>(
    client: &C,
    view: &str,
    why: &str,
) -> Result<(), tokio_postgres::Error> {
    client
        .execute(
            "UPDATE deltamv.views SET state = 'failed', last_error = $2, updated_at = now() WHERE view_name = $1",
            &[&view, &why],
        )
        .await
        .map(drop)
}

/// Adds each view's row delta to its row count in `deltamv.views` (inside the transaction that
/// wrote the rows, so `deltamv.view_status` shows the exact count without counting). Deltas are
/// the rows PostgreSQL reports deleted and inserted, so concurrent writers add up exactly.
pub async fn record_row_deltas<C: tokio_postgres::GenericClient>(
    tx: &C,
    deltas: &[(String, i64)],
) -> Result<(), tokio_postgres::Error> {
    if deltas.is_empty() {
        return Ok(());
    }
    let (names, delta): (Vec<&str>, Vec<i64>) =
        deltas.iter().map(|(n, d)| (n.as_str(), *d)).unzip();
    // Typed parameters: parsed, bound and run in one round trip, not prepared first.
    tx.execute_typed(
        "UPDATE deltamv.views v SET rows = v.rows + d.delta, last_change_at = now()
           FROM unnest($1::text[], $2::int8[]) AS d(view_name, delta)
          WHERE v.view_name = d.view_name",
        &[
            (&names, tokio_postgres::types::Type::TEXT_ARRAY),
            (&delta, tokio_postgres::types::Type::INT8_ARRAY),
        ],
    )
    .await?;
    Ok(())
}

/// Sets the row count of views whose target was filled or rewritten whole (the initial load).
pub async fn record_rows<C: tokio_postgres::GenericClient>(
    tx: &C,
    view: &str,
    rows: i64,
) -> Result<(), tokio_postgres::Error> {
    tx.execute(
        "UPDATE deltamv.views SET rows = $2 WHERE view_name = $1",
        &[&view, &rows],
    )
    .await?;
    Ok(())
}

/// The views a previous `init` recorded (none before the first).
pub async fn known<C: GenericClient>(client: &C) -> Result<Vec<String>, SqlError> {
    let exists: bool = client
        .query_one("SELECT to_regclass('deltamv.views') IS NOT NULL", &[])
        .await
        .map_err(sql_err("looking up deltamv.views"))?
        .get(0);
    if !exists {
        return Ok(Vec::new());
    }
    Ok(client
        .query("SELECT view_name FROM deltamv.views", &[])
        .await
        .map_err(sql_err("reading deltamv.views"))?
        .iter()
        .map(|r| r.get(0))
        .collect())
}

/// How a view is maintained.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Incremental: recorded `loading` until the initial load commits it `ok`.
    Incremental,
    /// A materialized view refreshed in full: `ok` from its creation.
    Fallback,
}

/// Records (or updates) a view's definition. An incremental view starts `loading` and loses
/// any earlier error; a fallback view keeps its state.
pub async fn record<C: GenericClient>(
    client: &C,
    view: &str,
    file: &str,
    query_sql: &str,
    mode: Mode,
) -> Result<(), SqlError> {
    let sql = match mode {
        Mode::Incremental => {
            "INSERT INTO deltamv.views (view_name, file, query_sql, state, last_error, updated_at)
             VALUES ($1, $2, $3, 'loading', NULL, now())
             ON CONFLICT (view_name) DO UPDATE SET file = EXCLUDED.file, query_sql = EXCLUDED.query_sql,
                 state = 'loading', last_error = NULL, updated_at = now()"
        }
        Mode::Fallback => {
            "INSERT INTO deltamv.views (view_name, file, query_sql, state, last_error, mode, updated_at)
             VALUES ($1, $2, $3, 'ok', NULL, 'fallback', now())
             ON CONFLICT (view_name) DO UPDATE SET file = EXCLUDED.file, query_sql = EXCLUDED.query_sql,
                 mode = 'fallback', updated_at = now()"
        }
    };
    client
        .execute(sql, &[&view, &file, &query_sql])
        .await
        .map_err(sql_err(format!("recording the view {view}")))?;
    Ok(())
}

/// Marks every view `ok` after the initial load (in its transaction), and the targets fresh.
pub async fn all_loaded<C: GenericClient>(client: &C) -> Result<(), SqlError> {
    client
        .batch_execute(
            "UPDATE deltamv.views SET state = 'ok', last_change_at = now(), updated_at = now();
             UPDATE deltamv.progress SET caught_up_at = now();",
        )
        .await
        .map_err(sql_err("recording view state"))
}

/// The statement that counts the rows of `table` (a view's target or materialized view,
/// quoted) into `view`'s record: for batches that must count in the transaction that changed
/// the rows (a fallback refresh, a reconcile's repair).
pub fn count_rows_sql(view: &str, table: &str) -> String {
    format!(
        "UPDATE deltamv.views SET rows = (SELECT count(*) FROM {table}) WHERE view_name = {};",
        quote_literal(view)
    )
}

/// Counts the rows of `table` into `view`'s record.
pub async fn count_rows<C: GenericClient>(
    client: &C,
    view: &str,
    table: &str,
) -> Result<(), SqlError> {
    client
        .batch_execute(&count_rows_sql(view, table))
        .await
        .map_err(sql_err(format!("counting the rows of {view}")))
}

/// Records a fallback view's last refresh: `ok` (and changed now), or `retrying` with the error.
pub async fn refreshed<C: GenericClient>(
    client: &C,
    view: &str,
    error: Option<&str>,
) -> Result<(), SqlError> {
    let state = if error.is_some() { "retrying" } else { "ok" };
    client
        .execute(
            "UPDATE deltamv.views SET state = $2, last_error = $3, updated_at = now(),
                 last_change_at = CASE WHEN $3::text IS NULL THEN now() ELSE last_change_at END
              WHERE view_name = $1",
            &[&view, &state, &error],
        )
        .await
        .map_err(sql_err(format!("recording the refresh of {view}")))?;
    Ok(())
}

/// The views whose row count is not known yet, with their relation (quoted): bookkeeping from a
/// version that did not keep it, or a fallback view whose first refresh failed.
pub async fn uncounted<C: GenericClient>(client: &C) -> Result<Vec<(String, String)>, SqlError> {
    Ok(client
        .query(
            "SELECT v.view_name, format('%I.%I', n.nspname, c.relname)
               FROM deltamv.views v
               JOIN pg_class c ON c.relkind IN ('r', 'm', 'p')
               JOIN pg_namespace n ON n.oid = c.relnamespace AND n.nspname || '.' || c.relname = v.view_name
              WHERE v.rows IS NULL",
            &[],
        )
        .await
        .map_err(sql_err("looking up views without a row count"))?
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect())
}
