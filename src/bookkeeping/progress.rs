//! `deltamv.progress`: per replication slot, the LSN the targets reflect (T in
//! [`crate::engine::durability`]), written in the same transaction as the target rows, and when
//! the targets were last known fresh.

use tokio_postgres::{Client, GenericClient};

use crate::pg::wal::pg_micros_to_unix_secs;
use crate::pg::{quote_literal, sql_err, Lsn, SqlError};

/// Records the position the targets reflect (inside the batch's transaction).
pub async fn record_progress(
    tx: &impl GenericClient,
    slot: &str,
    lsn: Lsn,
    commit_time_micros: Option<i64>,
) -> Result<(), tokio_postgres::Error> {
    let commit = commit_time_micros.map(|m| format!("to_timestamp({})", pg_micros_to_unix_secs(m)));
    let sql = format!(
        "INSERT INTO deltamv.progress (slot_name, applied_lsn, applied_commit_time, updated_at)
         VALUES ({slot}, {lsn}::pg_lsn, {commit}, now())
         ON CONFLICT (slot_name) DO UPDATE SET applied_lsn = EXCLUDED.applied_lsn,
             applied_commit_time = coalesce(EXCLUDED.applied_commit_time, deltamv.progress.applied_commit_time),
             updated_at = now()",
        slot = quote_literal(slot),
        lsn = quote_literal(&lsn.to_string()),
        commit = commit.unwrap_or_else(|| "NULL".into()),
    );
    tx.batch_execute(&sql).await
}

/// The applied LSN recorded for `slot`, if any.
pub async fn read_progress(client: &Client, slot: &str) -> Result<Option<Lsn>, SqlError> {
    let exists = client
        .query_opt("SELECT 1 FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = 'deltamv' AND c.relname = 'progress'", &[])
        .await
        .map_err(sql_err("looking up deltamv.progress"))?;
    if exists.is_none() {
        return Ok(None);
    }
    let row = client
        .query_opt(
            "SELECT applied_lsn::text FROM deltamv.progress WHERE slot_name = $1",
            &[&slot],
        )
        .await
        .map_err(sql_err("reading deltamv.progress"))?;
    Ok(row.and_then(|r| r.get::<_, String>(0).parse().ok()))
}

/// Records that everything the server had sent by `at` (protocol time) is applied: the
/// targets are fresh as of then.
pub async fn record_caught_up(client: &Client, slot: &str, at: i64) -> Result<(), SqlError> {
    client
        .execute(
            "UPDATE deltamv.progress SET updated_at = now(), caught_up_at = to_timestamp($2::float8) WHERE slot_name = $1",
            &[&slot, &pg_micros_to_unix_secs(at)],
        )
        .await
        .map_err(sql_err("recording the time the targets caught up"))?;
    Ok(())
}
