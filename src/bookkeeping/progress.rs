//! `deltamv.progress`: per replication slot, the LSN the targets reflect (T in
//! [`crate::engine::durability`]) and the date their CURRENT_DATE conditions were evaluated at,
//! both written in the same transaction as the target rows, and when the targets were last known
//! fresh.

use tokio_postgres::{Client, GenericClient};

use crate::pg::wal::pg_micros_to_unix_secs;
use crate::pg::{quote_literal, sql_err, Lsn, SqlError};

/// What the targets reflect, as recorded with their rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TargetsAt {
    /// T: the LSN of the last source transaction the targets include.
    pub lsn: Lsn,
    /// The date (days since 1970-01-01) the views' CURRENT_DATE was at; `None` when written
    /// by a version that did not record it.
    pub date: Option<i32>,
}

/// Records the position the targets reflect and the date they were evaluated at (inside the
/// batch's transaction).
pub async fn record_progress(
    tx: &impl GenericClient,
    slot: &str,
    lsn: Lsn,
    date: i32,
    commit_time_micros: Option<i64>,
) -> Result<(), tokio_postgres::Error> {
    let commit = commit_time_micros.map(|m| format!("to_timestamp({})", pg_micros_to_unix_secs(m)));
    let sql = format!(
        "INSERT INTO deltamv.progress (slot_name, applied_lsn, targets_date, applied_commit_time, updated_at)
         VALUES ({slot}, {lsn}::pg_lsn, DATE '1970-01-01' + {date}, {commit}, now())
         ON CONFLICT (slot_name) DO UPDATE SET applied_lsn = EXCLUDED.applied_lsn,
             targets_date = EXCLUDED.targets_date,
             applied_commit_time = coalesce(EXCLUDED.applied_commit_time, deltamv.progress.applied_commit_time),
             updated_at = now()",
        slot = quote_literal(slot),
        lsn = quote_literal(&lsn.to_string()),
        commit = commit.unwrap_or_else(|| "NULL".into()),
    );
    tx.batch_execute(&sql).await
}

/// What the targets of `slot` reflect, if anything was recorded.
pub async fn read_progress(client: &Client, slot: &str) -> Result<Option<TargetsAt>, SqlError> {
    // The table may be missing (nothing initialized yet) or older than its date column (the
    // schema is brought up to date after this read).
    let exists = client
        .query_opt(
            "SELECT EXISTS (SELECT 1 FROM pg_attribute a WHERE a.attrelid = c.oid AND a.attname = 'targets_date' AND NOT a.attisdropped)
             FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = 'deltamv' AND c.relname = 'progress'",
            &[],
        )
        .await
        .map_err(sql_err("looking up deltamv.progress"))?;
    let Some(exists) = exists else {
        return Ok(None);
    };
    let date = if exists.get::<_, bool>(0) {
        "targets_date - DATE '1970-01-01'"
    } else {
        "NULL::integer"
    };
    let row = client
        .query_opt(
            &format!("SELECT applied_lsn::text, {date} FROM deltamv.progress WHERE slot_name = $1"),
            &[&slot],
        )
        .await
        .map_err(sql_err("reading deltamv.progress"))?;
    Ok(row.and_then(|r| {
        let lsn = r.get::<_, String>(0).parse().ok()?;
        Some(TargetsAt {
            lsn,
            date: r.get(1),
        })
    }))
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
