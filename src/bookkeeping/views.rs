//! `deltamv.views`: one row per view, with its mode, its state (`ok` or `failed` with the
//! error) and the row count of its target, kept exactly by the transactions that write it.

use tokio_postgres::GenericClient;

use crate::pg::{sql_err, SqlError};

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
    tx.execute(
        "UPDATE deltamv.views v SET rows = v.rows + d.delta, last_change_at = now()
           FROM unnest($1::text[], $2::int8[]) AS d(view_name, delta)
          WHERE v.view_name = d.view_name",
        &[&names, &delta],
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
