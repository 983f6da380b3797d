//! Partitioned source tables, kept exact through every way rows enter or leave a partition tree.
//!
//! The publication publishes through the root (`publish_via_partition_root`), so inserts, updates
//! and deletes on any partition arrive under the root's name, and an UPDATE that moves a row to
//! another partition arrives as a delete and an insert. Four things change a root's rows without
//! a row change in PostgreSQL 15's logical stream, and each would leave the views silently stale:
//! ATTACH PARTITION (its rows join), DETACH PARTITION (its rows leave), DROP TABLE of an attached
//! partition, and TRUNCATE of one partition (pgoutput skips a partition's TRUNCATE when it
//! publishes via the root). So deltamv records the leaves of each partitioned source in
//! `deltamv.partitions`, and:
//! - an event trigger at the end of every DDL command compares each root's leaves with the record;
//!   a new leaf's rows are emitted as `insert`, a detached leaf's rows as `delete`, as
//!   transactional logical messages (prefix [`PARTITION_PREFIX`]) in the same transaction, hence
//!   in order with the writes around them;
//! - a BEFORE TRUNCATE trigger on every leaf emits its rows as `delete` before they go;
//! - a leaf dropped while attached has no rows left to read: the event trigger emits `lost`, and
//!   the engine fails the views reading that root, naming the partition and the fix (detach
//!   before dropping, which is exact; or `deltamv init --resync`).
//!
//! Rows travel as text in the root's column order, rendered by each type's output function with
//! the replication session's settings, so they parse exactly as pgoutput's tuples do. Creating an
//! event trigger needs a superuser: `init` refuses a partitioned source when none is installed
//! and it cannot install one, instead of maintaining it without it.

use serde::Deserialize;
use tokio_postgres::GenericClient;

use super::control::ControlError;
use crate::pg::sql_err;
use crate::pg::QualifiedName;

/// Prefix of the messages the partition triggers emit.
pub const PARTITION_PREFIX: &str = "deltamv.partition";

/// Rows per message: bounds a message's size however large the partition.
const ROWS_PER_MESSAGE: u32 = 1000;

/// Bookkeeping and functions (idempotent). The event trigger itself is created by [`ensure`],
/// which needs a superuser.
fn ddl() -> String {
    format!(
        r#"
CREATE SCHEMA IF NOT EXISTS deltamv;
CREATE TABLE IF NOT EXISTS deltamv.partition_roots (
    root oid PRIMARY KEY,
    schema_name text NOT NULL,
    table_name text NOT NULL
);
CREATE TABLE IF NOT EXISTS deltamv.partitions (
    root oid NOT NULL,
    leaf oid NOT NULL,
    leaf_name text NOT NULL,
    PRIMARY KEY (root, leaf)
);
COMMENT ON TABLE deltamv.partitions IS 'Leaf partitions of the partitioned sources deltamv maintains, as its triggers last saw them';
-- Emits the rows of `leaf` as messages {{op, schema, table, leaf, columns, rows}} in root's
-- column order; returns how many rows.
CREATE OR REPLACE FUNCTION deltamv.emit_partition_rows(root oid, leaf oid, op text) RETURNS bigint
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog SET datestyle = 'ISO' SET timezone = 'UTC'
SET intervalstyle = 'postgres' SET extra_float_digits = 3 AS $f$
DECLARE
    cols text[];
    exprs text;
    schema_name text;
    table_name text;
    n bigint;
BEGIN
    SELECT n.nspname, c.relname INTO schema_name, table_name
      FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.oid = root;
    SELECT array_agg(a.attname::text ORDER BY a.attnum),
           string_agg(format('CASE WHEN %1$I IS NULL THEN NULL ELSE format(''%%s'', %1$I) END', a.attname),
                      ', ' ORDER BY a.attnum)
      INTO cols, exprs
      FROM pg_attribute a
     WHERE a.attrelid = root AND a.attnum > 0 AND NOT a.attisdropped AND a.attgenerated = '';
    EXECUTE format(
        'SELECT coalesce(sum(n), 0) FROM (
             SELECT count(*) AS n,
                    pg_logical_emit_message(true, %L, json_build_object(
                        ''op'', %L, ''schema'', %L, ''table'', %L, ''leaf'', %L,
                        ''columns'', %L::text[], ''rows'', json_agg(r))::text)
               FROM (SELECT (row_number() OVER () - 1) / {rows} AS chunk, ARRAY[%s]::text[] AS r FROM %s) x
              GROUP BY chunk) m',
        '{prefix}', op, schema_name, table_name, leaf::regclass::text, cols, exprs, leaf::regclass)
      INTO n;
    RETURN n;
END $f$;
-- Compares each maintained root's leaves with the record: new leaves' rows join, detached
-- leaves' rows leave, dropped leaves are reported lost.
CREATE OR REPLACE FUNCTION deltamv.on_partition_ddl() RETURNS event_trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog AS $f$
DECLARE
    r record;
BEGIN
    IF NOT EXISTS (SELECT 1 FROM deltamv.partition_roots) THEN
        RETURN;
    END IF;
    FOR r IN SELECT p.root, p.leaf, p.leaf_name FROM deltamv.partitions p
              WHERE NOT EXISTS (SELECT 1 FROM pg_partition_tree(p.root) t WHERE t.relid = p.leaf AND t.isleaf)
    LOOP
        DELETE FROM deltamv.partitions WHERE root = r.root AND leaf = r.leaf;
        IF EXISTS (SELECT 1 FROM pg_class WHERE oid = r.leaf) THEN
            PERFORM deltamv.emit_partition_rows(r.root, r.leaf, 'delete');
            EXECUTE format('DROP TRIGGER IF EXISTS deltamv_partition_truncate ON %s', r.leaf::regclass);
        ELSE
            PERFORM pg_logical_emit_message(true, '{prefix}', json_build_object(
                'op', 'lost', 'schema', s.schema_name, 'table', s.table_name, 'leaf', r.leaf_name,
                'columns', '{{}}'::text[], 'rows', '[]'::json)::text)
              FROM deltamv.partition_roots s WHERE s.root = r.root;
        END IF;
    END LOOP;
    FOR r IN SELECT s.root, t.relid AS leaf FROM deltamv.partition_roots s, pg_partition_tree(s.root) t
              WHERE t.isleaf AND t.relid <> s.root
                AND NOT EXISTS (SELECT 1 FROM deltamv.partitions p WHERE p.root = s.root AND p.leaf = t.relid)
    LOOP
        INSERT INTO deltamv.partitions VALUES (r.root, r.leaf, r.leaf::regclass::text);
        PERFORM deltamv.emit_partition_rows(r.root, r.leaf, 'insert');
        EXECUTE format('CREATE OR REPLACE TRIGGER deltamv_partition_truncate BEFORE TRUNCATE ON %s
                        FOR EACH STATEMENT EXECUTE FUNCTION deltamv.on_partition_truncate()', r.leaf::regclass);
    END LOOP;
END $f$;
-- TRUNCATE of one partition is not published via the root: its rows leave as deletes first.
-- (A TRUNCATE of the root fires this on every leaf too; the root's own TRUNCATE follows.)
CREATE OR REPLACE FUNCTION deltamv.on_partition_truncate() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog AS $f$
BEGIN
    PERFORM deltamv.emit_partition_rows(p.root, p.leaf, 'delete')
       FROM deltamv.partitions p WHERE p.leaf = TG_RELID;
    RETURN NULL;
END $f$;
REVOKE ALL ON FUNCTION deltamv.emit_partition_rows(oid, oid, text) FROM PUBLIC;
"#,
        rows = ROWS_PER_MESSAGE,
        prefix = PARTITION_PREFIX,
    )
}

/// Makes sure every partitioned table in `published` is watched: bookkeeping, functions, the
/// event trigger and a TRUNCATE trigger per leaf. With `reset` (a fresh snapshot follows), the
/// record of leaves is taken anew from the catalog; otherwise the triggers' own record stands,
/// since it is what the stream has been told. Returns the partitioned sources.
pub async fn ensure<C: GenericClient>(
    client: &C,
    published: &[QualifiedName],
    reset: bool,
) -> Result<Vec<QualifiedName>, ControlError> {
    let mut roots = Vec::new();
    for name in published {
        let row = client
            .query_opt(
                "SELECT c.oid::int8 FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                  WHERE n.nspname = $1 AND c.relname = $2 AND c.relkind = 'p'",
                &[&name.schema, &name.name],
            )
            .await
            .map_err(sql_err(format!("looking up whether {name} is partitioned")))?;
        if let Some(r) = row {
            roots.push((name.clone(), r.get::<_, i64>(0)));
        }
    }
    let has_schema: bool = client
        .query_one(
            "SELECT to_regclass('deltamv.partition_roots') IS NOT NULL",
            &[],
        )
        .await
        .map_err(sql_err("looking up deltamv.partition_roots"))?
        .get(0);
    if roots.is_empty() {
        if has_schema {
            // No partitioned source (any more): nothing to watch.
            client
                .batch_execute(
                    "DELETE FROM deltamv.partitions; DELETE FROM deltamv.partition_roots;",
                )
                .await
                .map_err(sql_err("clearing deltamv.partitions"))?;
        }
        return Ok(Vec::new());
    }
    let row = client
        .query_one(
            "SELECT EXISTS (SELECT 1 FROM pg_event_trigger WHERE evtname = 'deltamv_partitions' AND evtenabled <> 'D'),
                    (SELECT rolsuper FROM pg_roles WHERE rolname = current_user),
                    to_regprocedure('deltamv.on_partition_ddl()') IS NOT NULL",
            &[],
        )
        .await
        .map_err(sql_err("looking up deltamv's event trigger"))?;
    let (installed, superuser, functions): (bool, bool, bool) =
        (row.get(0), row.get(1), row.get(2));
    if !installed && !superuser {
        return Err(ControlError::PartitionTrigger {
            tables: roots.iter().map(|(n, _)| n.to_string()).collect(),
        });
    }
    // Only their owner (a superuser) may replace the functions; another role uses them as they are.
    if superuser || !functions {
        client
            .batch_execute(&ddl())
            .await
            .map_err(sql_err("creating deltamv's partition triggers"))?;
    }
    if !installed {
        client
            .batch_execute(
                "DROP EVENT TRIGGER IF EXISTS deltamv_partitions;
                 CREATE EVENT TRIGGER deltamv_partitions ON ddl_command_end
                     EXECUTE FUNCTION deltamv.on_partition_ddl();",
            )
            .await
            .map_err(sql_err("creating the event trigger deltamv_partitions"))?;
    }
    let oids: Vec<i64> = roots.iter().map(|(_, oid)| *oid).collect();
    let schemas: Vec<&str> = roots.iter().map(|(n, _)| n.schema.as_str()).collect();
    let tables: Vec<&str> = roots.iter().map(|(n, _)| n.name.as_str()).collect();
    client
        .execute(
            "DELETE FROM deltamv.partition_roots WHERE root::int8 <> ALL($1)",
            &[&oids],
        )
        .await
        .map_err(sql_err("recording partitioned sources"))?;
    // After a reset every leaf is recorded anew below; otherwise only other roots' go.
    client
        .execute(
            "DELETE FROM deltamv.partitions WHERE $2 OR root::int8 <> ALL($1)",
            &[&oids, &reset],
        )
        .await
        .map_err(sql_err("recording partitions"))?;
    client
        .execute(
            "INSERT INTO deltamv.partition_roots (root, schema_name, table_name)
             SELECT o::oid, s, t FROM unnest($1::int8[], $2::text[], $3::text[]) AS u(o, s, t)
             ON CONFLICT (root) DO NOTHING",
            &[&oids, &schemas, &tables],
        )
        .await
        .map_err(sql_err("recording partitioned sources"))?;
    // Leaves not yet recorded (all of them after a reset) are recorded without emitting their
    // rows: the snapshot that follows, or the triggers' own messages, account for them.
    let fresh = client
        .query(
            "INSERT INTO deltamv.partitions (root, leaf, leaf_name)
             SELECT s.root, t.relid, t.relid::regclass::text
               FROM deltamv.partition_roots s, pg_partition_tree(s.root) t
              WHERE t.isleaf AND t.relid <> s.root
             ON CONFLICT (root, leaf) DO NOTHING
             RETURNING leaf::regclass::text",
            &[],
        )
        .await
        .map_err(sql_err("recording partitions"))?;
    if !reset && !fresh.is_empty() {
        tracing::warn!(
            partitions = fresh.len(),
            "partitions appeared while the event trigger did not watch them"
        );
    }
    let leaves = client
        .query(
            "SELECT p.leaf::regclass::text FROM deltamv.partitions p
              WHERE NOT EXISTS (SELECT 1 FROM pg_trigger t
                                 WHERE t.tgrelid = p.leaf AND t.tgname = 'deltamv_partition_truncate')",
            &[],
        )
        .await
        .map_err(sql_err("reading deltamv.partitions"))?;
    for leaf in leaves {
        let leaf: String = leaf.get(0);
        client
            .batch_execute(&format!(
                "CREATE OR REPLACE TRIGGER deltamv_partition_truncate BEFORE TRUNCATE ON {leaf}
                     FOR EACH STATEMENT EXECUTE FUNCTION deltamv.on_partition_truncate()"
            ))
            .await
            .map_err(sql_err(format!("creating the TRUNCATE trigger on {leaf}")))?;
    }
    Ok(roots.into_iter().map(|(n, _)| n).collect())
}

/// What a partition message asks: rows joining or leaving a root, or a partition lost.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PartitionOp {
    Insert,
    Delete,
    Lost,
}

/// One message of the partition triggers.
#[derive(Debug, Deserialize)]
pub struct PartitionMessage {
    pub op: PartitionOp,
    pub schema: String,
    pub table: String,
    /// The partition, schema-qualified as PostgreSQL prints it.
    pub leaf: String,
    /// The root's columns, in the order of each row's values.
    pub columns: Vec<String>,
    pub rows: Vec<Vec<Option<String>>>,
}

impl PartitionMessage {
    pub fn parse(content: &[u8]) -> Result<PartitionMessage, String> {
        serde_json::from_slice(content).map_err(|e| e.to_string())
    }

    pub fn root(&self) -> QualifiedName {
        QualifiedName::new(&self.schema, &self.table)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_parse_as_the_triggers_write_them() {
        let m = PartitionMessage::parse(
            br#"{"op" : "delete", "schema" : "public", "table" : "agent_runs", "leaf" : "agent_runs_2026_01", "columns" : ["id","status"], "rows" : [["1","completed"], ["2",null]]}"#,
        )
        .expect("parses");
        assert_eq!(m.op, PartitionOp::Delete);
        assert_eq!(m.root(), QualifiedName::new("public", "agent_runs"));
        assert_eq!(m.rows[1], vec![Some("2".to_string()), None]);
        assert!(PartitionMessage::parse(br#"{"op":"merge"}"#).is_err());
    }
}
