//! The control plane: connections, server checks, the source catalog, publication and slot.
//!
//! Everything here runs on ordinary SQL connections (tokio-postgres) and fails with a message that
//! names the setting or privilege to fix, because these are the errors an operator meets first.

use thiserror::Error;
use tokio_postgres::Client;

use crate::pg::catalog::base_type_lateral;
use crate::pg::{
    describe, quote_ident, quote_literal, sql_err, ColumnInfo, ConnectError, Lsn, QualifiedName,
    SqlError, TableInfo,
};
use crate::pgtime::PgTimeZone;
use crate::value::SqlType;

#[derive(Debug, Error)]
pub enum ControlError {
    #[error(transparent)]
    Connect(#[from] ConnectError),
    #[error("wal_level is '{0}', but logical replication needs 'logical': set wal_level = logical in postgresql.conf and restart PostgreSQL")]
    WalLevel(String),
    #[error("role {0} may not stream changes (it lacks the REPLICATION attribute): ALTER ROLE {0} REPLICATION as an administrator, or connect as deltamv_worker from schema/roles.sql")]
    NoReplication(String),
    #[error("all {max} replication slots are in use (max_replication_slots = {max}): drop an unused one (SELECT slot_name FROM pg_replication_slots WHERE NOT active) or raise max_replication_slots and restart PostgreSQL")]
    NoFreeSlot { max: i32 },
    #[error("all {max} WAL senders are busy (max_wal_senders = {max}): stop an unused replication client or raise max_wal_senders and restart PostgreSQL")]
    NoFreeWalSender { max: i32 },
    #[error("source table {0} does not exist (create it, e.g. with schema/sources.sql, or fix the view's FROM)")]
    MissingTable(QualifiedName),
    #[error("source table {0} has no primary key: deltamv identifies rows by their primary key (REPLICA IDENTITY DEFAULT)")]
    NoPrimaryKey(QualifiedName),
    #[error(transparent)]
    Sql(#[from] SqlError),
    #[error("replication slot {0} stayed active: stop the other consumer streaming from it")]
    SlotBusy(String),
    #[error("source table {} is partitioned: deltamv must learn of partitions attached, detached, dropped or truncated, which PostgreSQL 15 leaves out of the replication stream, through its event trigger deltamv_partitions, and only a superuser can create an event trigger: run `deltamv init` once as a superuser (later runs may use deltamv_worker)", tables.join(", "))]
    PartitionTrigger { tables: Vec<String> },
    #[error("the server's TimeZone: {0}")]
    TimeZone(String),
}

/// Checks that the server and this role can do logical replication through `slot`: wal_level,
/// the REPLICATION attribute, a free replication slot (unless `slot` exists) and a free WAL
/// sender. Each failure names the setting to change.
pub async fn check_server(client: &Client, slot: &str) -> Result<(), ControlError> {
    let row = client
        .query_one(
            "SELECT current_setting('wal_level'),
                    (SELECT rolreplication OR rolsuper FROM pg_roles WHERE rolname = current_user),
                    current_user::text,
                    current_setting('max_replication_slots')::int,
                    (SELECT count(*)::int FROM pg_replication_slots),
                    EXISTS (SELECT 1 FROM pg_replication_slots WHERE slot_name = $1),
                    current_setting('max_wal_senders')::int,
                    (SELECT count(*)::int FROM pg_stat_replication)",
            &[&slot],
        )
        .await
        .map_err(sql_err("checking the server's replication settings"))?;
    let level: String = row.get(0);
    if level != "logical" {
        return Err(ControlError::WalLevel(level));
    }
    if !row.get::<_, Option<bool>>(1).unwrap_or(false) {
        return Err(ControlError::NoReplication(row.get(2)));
    }
    let (max_slots, slots, ours): (i32, i32, bool) = (row.get(3), row.get(4), row.get(5));
    if !ours && slots >= max_slots {
        return Err(ControlError::NoFreeSlot { max: max_slots });
    }
    let (max_senders, senders): (i32, i32) = (row.get(6), row.get(7));
    if senders >= max_senders {
        return Err(ControlError::NoFreeWalSender { max: max_senders });
    }
    Ok(())
}

/// The server's TimeZone setting, which DATE(), CURRENT_DATE and interval arithmetic follow.
pub async fn server_timezone(client: &Client) -> Result<PgTimeZone, ControlError> {
    let row = client
        .query_one("SELECT current_setting('TimeZone')", &[])
        .await
        .map_err(sql_err("reading TimeZone"))?;
    let name: String = row.get(0);
    PgTimeZone::parse(&name).map_err(|e| ControlError::TimeZone(e.to_string()))
}

/// Whether a libc collation name orders text by bytes.
fn byte_order(collate: &str) -> bool {
    matches!(collate, "C" | "POSIX")
}

/// The database's default collation when it does not order text by bytes (PostgreSQL 15 may
/// take it from ICU: `datlocprovider = 'i'`).
pub async fn default_collation(client: &Client) -> Result<Option<String>, ControlError> {
    let row = client
        .query_one(
            "SELECT to_jsonb(d)::text FROM pg_database d WHERE d.datname = current_database()",
            &[],
        )
        .await
        .map_err(sql_err("reading the database's collation"))?;
    let text: String = row.get(0);
    let v: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
    let field = |k: &str| v.get(k).and_then(|x| x.as_str()).unwrap_or("").to_string();
    let collate = field("datcollate");
    Ok(match field("datlocprovider").as_str() {
        "i" => {
            let locale = [field("daticulocale"), field("datlocale")].concat();
            Some(format!(
                "the database's default collation (ICU locale {locale:?})"
            ))
        }
        _ if byte_order(&collate) => None,
        _ => Some(format!(
            "the database's default collation ({collate:?}; create the database with LC_COLLATE 'C', or give the column COLLATE \"C\")"
        )),
    })
}

/// Reads the columns and primary key of each table (the key may be empty: only incremental
/// views need one, see [`require_key`]). Columns are typed with their domains resolved to the
/// base type and enums as [`SqlType::Enum`]; stored generated columns come with their
/// expression, and text columns with their collation when it is not byte order.
pub async fn load_tables(
    client: &Client,
    names: &[QualifiedName],
) -> Result<Vec<TableInfo>, ControlError> {
    let default = default_collation(client).await?;
    let mut out = Vec::new();
    for name in names {
        let sql = format!(
            "SELECT a.attname::text, a.atttypid::int8, format_type(a.atttypid, a.atttypmod),
                    coalesce(a.attnum = ANY(i.indkey::int2[]), false),
                    bt.base_oid, coalesce(bt.base_kind, ''),
                    a.attgenerated::text,
                    CASE WHEN a.attgenerated <> '' THEN pg_get_expr(d.adbin, d.adrelid) END,
                    a.attcollation::int8, coll.collname::text, coll.collprovider::text,
                    coll.collcollate::text, coalesce(coll.collisdeterministic, true)
               FROM pg_attribute a
               JOIN pg_class c ON c.oid = a.attrelid
               JOIN pg_namespace n ON n.oid = c.relnamespace
               LEFT JOIN pg_index i ON i.indrelid = c.oid AND i.indisprimary
               LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
               LEFT JOIN pg_collation coll ON coll.oid = a.attcollation
               {}
              WHERE n.nspname = $1 AND c.relname = $2 AND c.relkind IN ('r', 'p')
                AND a.attnum > 0 AND NOT a.attisdropped
              ORDER BY a.attnum",
            base_type_lateral("a.atttypid")
        );
        let rows = client
            .query(&sql, &[&name.schema, &name.name])
            .await
            .map_err(sql_err(format!("reading the columns of {name}")))?;
        if rows.is_empty() {
            return Err(ControlError::MissingTable(name.clone()));
        }
        let mut columns = Vec::new();
        let mut key = Vec::new();
        for (i, r) in rows.iter().enumerate() {
            let oid: i64 = r.get(1);
            let base_oid: Option<i64> = r.get(4);
            let base_kind: String = r.get(5);
            let generated: String = r.get(6);
            let expression: Option<String> = r.get(7);
            let collation_oid: i64 = r.get(8);
            let collname: Option<String> = r.get(9);
            let provider: Option<String> = r.get(10);
            let collate: Option<String> = r.get(11);
            let deterministic: bool = r.get(12);
            let collation = match (collation_oid, provider.as_deref()) {
                (0, _) => None,
                (_, Some("d")) | (_, None) => default.clone(),
                (_, Some("c")) if byte_order(collate.as_deref().unwrap_or("")) => None,
                _ => Some(format!(
                    "collation {:?}",
                    collname.clone().unwrap_or_default()
                )),
            };
            let refusal = (!deterministic).then(|| {
                format!(
                    "its collation {:?} is nondeterministic (values that compare equal may differ in bytes, which deltamv does not implement)",
                    collname.clone().unwrap_or_default()
                )
            });
            columns.push(ColumnInfo {
                name: r.get(0),
                ty: base_oid.and_then(|b| SqlType::from_base_type(b as u32, &base_kind)),
                type_name: r.get(2),
                type_oid: oid as u32,
                collation,
                refusal,
                generated: if generated.is_empty() {
                    None
                } else {
                    Some(expression.unwrap_or_default())
                },
            });
            if r.get::<_, bool>(3) {
                key.push(i);
            }
        }
        out.push(TableInfo {
            name: name.clone(),
            columns,
            key,
            default_collation: default.clone(),
        });
    }
    Ok(out)
}

/// Incremental views identify rows by the primary key.
pub fn require_key(table: &TableInfo) -> Result<(), ControlError> {
    if table.key.is_empty() {
        return Err(ControlError::NoPrimaryKey(table.name.clone()));
    }
    Ok(())
}

/// Whether `name` is an ordinary table with a primary key (`None`: no such table).
pub async fn table_has_key(
    client: &Client,
    name: &QualifiedName,
) -> Result<Option<bool>, ControlError> {
    let row = client
        .query_opt(
            "SELECT EXISTS (SELECT 1 FROM pg_index i WHERE i.indrelid = c.oid AND i.indisprimary)
               FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
              WHERE n.nspname = $1 AND c.relname = $2 AND c.relkind IN ('r', 'p')",
            &[&name.schema, &name.name],
        )
        .await
        .map_err(sql_err(format!("looking up {name}")))?;
    Ok(row.map(|r| r.get(0)))
}

/// Creates the publication for `tables`, or sets its table list if it exists. It publishes
/// through partition roots: a partitioned source's changes arrive under its own name (see
/// [`crate::source::partitions`]), never under a leaf's that no view reads.
pub async fn ensure_publication<C: tokio_postgres::GenericClient>(
    client: &C,
    publication: &str,
    tables: &[QualifiedName],
) -> Result<(), ControlError> {
    let current: Option<(Vec<String>, bool)> = client
        .query_opt(
            "SELECT coalesce((SELECT array_agg(schemaname || '.' || tablename ORDER BY 1)
                                FROM pg_publication_tables WHERE pubname = p.pubname), '{}'),
                    p.pubviaroot
               FROM pg_publication p WHERE p.pubname = $1",
            &[&publication],
        )
        .await
        .map_err(sql_err("looking up the publication"))?
        .map(|r| (r.get(0), r.get(1)));
    let wanted: Vec<String> = tables.iter().map(|t| t.to_string()).collect();
    let list = tables
        .iter()
        .map(|t| t.quoted())
        .collect::<Vec<_>>()
        .join(", ");
    let name = quote_ident(publication);
    let mut sql = Vec::new();
    match current {
        Some((have, via_root)) => {
            // Already right: nothing to change (a worker without table ownership could not).
            if !(have.len() == wanted.len() && wanted.iter().all(|w| have.contains(w))) {
                sql.push(format!("ALTER PUBLICATION {name} SET TABLE {list}"));
            }
            // The setting matters only for partitioned tables (and may need the publication's
            // owner, whom a worker role is not).
            if !via_root && any_partitioned(client, tables).await? {
                sql.push(format!(
                    "ALTER PUBLICATION {name} SET (publish_via_partition_root = true)"
                ));
            }
        }
        None => sql.push(format!(
            "CREATE PUBLICATION {name} FOR TABLE {list} WITH (publish_via_partition_root = true)"
        )),
    }
    for sql in sql {
        client.batch_execute(&sql).await.map_err(sql_err(format!(
            "publishing the source tables (an administrator can run: {sql})"
        )))?;
    }
    Ok(())
}

/// Whether any of `tables` is partitioned.
async fn any_partitioned<C: tokio_postgres::GenericClient>(
    client: &C,
    tables: &[QualifiedName],
) -> Result<bool, ControlError> {
    let names: Vec<String> = tables.iter().map(|t| t.quoted()).collect();
    let row = client
        .query_one(
            "SELECT EXISTS (SELECT 1 FROM unnest($1::text[]) AS t(name)
                             WHERE (SELECT relkind FROM pg_class WHERE oid = to_regclass(t.name)) = 'p')",
            &[&names],
        )
        .await
        .map_err(sql_err("looking up partitioned source tables"))?;
    Ok(row.get(0))
}

/// Whether the logical slot exists.
/// The replication slot as the server sees it.
#[derive(Debug)]
pub struct SlotInfo {
    /// How far the consumer confirmed (`confirmed_flush_lsn`).
    pub confirmed_lsn: Option<Lsn>,
    /// The server removed WAL the slot still needed (`wal_status = 'lost'`): it can never
    /// stream again.
    pub lost: bool,
    /// The walsender streaming from it right now.
    pub holder: Option<SlotHolder>,
}

#[derive(Debug)]
pub struct SlotHolder {
    pub pid: i32,
    pub application: String,
    /// Pid, application, client address and start, for an operator.
    pub description: String,
}

/// Looks up the slot; `None` when it does not exist.
pub async fn slot_info(client: &Client, slot: &str) -> Result<Option<SlotInfo>, ControlError> {
    let row = client
        .query_opt(
            "SELECT s.confirmed_flush_lsn::text, coalesce(s.wal_status = 'lost', false),
                    s.active_pid, coalesce(r.application_name, ''),
                    format('walsender pid %s for %s from %s, connected since %s',
                        s.active_pid, coalesce(nullif(r.application_name, ''), 'an unnamed client'),
                        coalesce(host(r.client_addr), 'a local socket'),
                        coalesce(to_char(r.backend_start AT TIME ZONE 'UTC',
                                         'YYYY-MM-DD HH24:MI:SS \"UTC\"'), 'unknown'))
               FROM pg_replication_slots s LEFT JOIN pg_stat_replication r ON r.pid = s.active_pid
              WHERE s.slot_name = $1",
            &[&slot],
        )
        .await
        .map_err(sql_err("looking up the replication slot"))?;
    let Some(row) = row else { return Ok(None) };
    let confirmed: Option<String> = row.get(0);
    let pid: Option<i32> = row.get(2);
    Ok(Some(SlotInfo {
        confirmed_lsn: confirmed.as_deref().and_then(|t| t.parse().ok()),
        lost: row.get(1),
        holder: pid.map(|pid| SlotHolder {
            pid,
            application: row.get(3),
            description: row.get(4),
        }),
    }))
}

/// Ends a walsender (this process's own, left over from a cut connection).
pub async fn terminate_backend(client: &Client, pid: i32) -> Result<(), ControlError> {
    client
        .execute("SELECT pg_terminate_backend($1)", &[&pid])
        .await
        .map_err(sql_err("ending a stale walsender"))?;
    Ok(())
}

/// Drops the slot (terminating a walsender that still holds it).
pub async fn drop_slot(client: &Client, slot: &str) -> Result<(), ControlError> {
    let sql = format!(
        "SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots WHERE slot_name = {0} AND active_pid IS NOT NULL;
         SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = {0};",
        quote_literal(slot)
    );
    for _ in 0..50 {
        match client.batch_execute(&sql).await {
            Ok(()) => return Ok(()),
            Err(e) if describe(&e).contains("is active") => {
                tokio::time::sleep(std::time::Duration::from_millis(100)).await
            }
            Err(e) => return Err(SqlError::new(format!("dropping slot {slot}"), e).into()),
        }
    }
    Err(ControlError::SlotBusy(slot.into()))
}
