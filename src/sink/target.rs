//! Target tables: creation, batched upserts, and the applied LSN.
//!
//! A target is created with `CREATE TABLE ... AS <view query> WITH NO DATA`, so PostgreSQL itself
//! decides its column names and types; the planner's inferred types are checked against them.
//! Each batch writes only the changed groups, with absolute values. A group's new row updates
//! its old one in place, by key (of a top-k partition, only the rows of the ranks that changed,
//! by key and rank), and is inserted when there was none; groups that went are deleted by key.
//! Targets leave a fifth of each page free, so most such updates are HOT: PostgreSQL rewrites
//! the row beside the old one and touches no index, about half the work of a DELETE and an
//! INSERT (measured on a 400k-row target, 37k rows per batch: 130-230 ms against 300-400 ms).
//! Keys with NULLs, whole top-k partitions, and targets with a unique index over other columns
//! are deleted and inserted instead. Each statement is prepared, with one text array per
//! column as parameters (`unnest`), and they are sent together: a batch costs one round trip
//! per view whatever its size, and no temporary tables churn the catalog. Each execution is
//! planned for its own arrays, over targets analyzed at init and indexed by their key, so a
//! batch finds its groups through the index. The transaction around them is
//! [`super::write`]'s.

use bytes::Bytes;
use futures_util::SinkExt;
use thiserror::Error;
use tokio_postgres::types::{ToSql, Type};
use tokio_postgres::{Client, Statement, Transaction};

use super::params::{push_texts, TextColumn};
use crate::change::TargetChange;
use crate::pg::{quote_ident, sql_err, SqlError};
use crate::plan::ViewPlan;
use crate::value::{SqlType, Value};

#[derive(Debug, Error)]
pub enum SinkError {
    #[error(transparent)]
    Sql(#[from] SqlError),
    #[error("{view} already exists as a {kind}; drop it (or rename it) so deltamv can maintain a table of that name")]
    WrongKind { view: String, kind: String },
    #[error("target {view}: column {column} is {theirs}, but the view now yields {ours} (a source column or the view's SQL changed): drop the table {view} and run `deltamv init --resync` (if neither changed, please report this view)")]
    TypeMismatch {
        view: String,
        column: String,
        ours: String,
        theirs: String,
    },
}

/// A target column: its name and its type as PostgreSQL prints it (`format_type`).
#[derive(Clone, Debug)]
pub struct TargetColumn {
    pub name: String,
    pub type_name: String,
}

/// A view's target as the sink writes it.
#[derive(Clone)]
pub struct TargetTable {
    pub plan_name: String,
    pub table: String,
    pub columns: Vec<String>,
    pub types: Vec<String>,
    pub key_columns: Vec<usize>,
    /// A top-k view's rank column ([`ViewPlan::rank_column`]): its changes can name the ranks
    /// they rewrite.
    pub rank_column: Option<usize>,
}

impl TargetTable {
    pub fn new(plan: &ViewPlan, columns: Vec<TargetColumn>) -> Self {
        TargetTable {
            plan_name: plan.name.to_string(),
            table: plan.name.quoted(),
            types: columns.iter().map(|c| c.type_name.clone()).collect(),
            columns: columns.into_iter().map(|c| c.name).collect(),
            key_columns: plan.key_columns.clone(),
            rank_column: plan.rank_column(),
        }
    }

    /// `SELECT c1::type1, ... FROM unnest($1::text[], ...) s(c1, ...)` over the given columns:
    /// values travel as text arrays (one parameter per column) and PostgreSQL types them.
    fn unnest_select(&self, cols: &[usize]) -> String {
        let params: Vec<String> = (1..=cols.len()).map(|i| format!("${i}::text[]")).collect();
        let names: Vec<String> = (1..=cols.len()).map(|i| format!("c{i}")).collect();
        let casts: Vec<String> = cols
            .iter()
            .zip(&names)
            .map(|(c, n)| {
                format!(
                    "s.{n}::{} AS {}",
                    self.types[*c],
                    quote_ident(&self.columns[*c])
                )
            })
            .collect();
        format!(
            "SELECT {} FROM unnest({}) AS s({})",
            casts.join(", "),
            params.join(", "),
            names.join(", ")
        )
    }

    /// `DELETE` of the rows whose `cols` equal one of the parameter arrays' tuples.
    fn delete_matching(&self, cols: &[usize]) -> String {
        let names: Vec<String> = cols
            .iter()
            .map(|i| quote_ident(&self.columns[*i]))
            .collect();
        format!(
            "DELETE FROM {} WHERE ({}) IN ({})",
            self.table,
            names.join(", "),
            self.unnest_select(cols)
        )
    }

    /// Rows written in place: an `UPDATE` of the rows whose `by` columns match one of the
    /// parameter arrays' rows, then an `INSERT` of the rows that matched none (new groups).
    fn upsert_by(&self, by: &[usize]) -> String {
        let name = |i: &usize| quote_ident(&self.columns[*i]);
        let set: Vec<String> = (0..self.columns.len())
            .filter(|i| !by.contains(i))
            .map(|i| format!("{0} = s.{0}", name(&i)))
            .collect();
        // A view of its key columns alone: a no-op assignment, so the statement stays valid.
        let set = match set.is_empty() {
            true => format!("{0} = s.{0}", name(&by[0])),
            false => set.join(", "),
        };
        let matches = |a: &str, b: &str| {
            by.iter()
                .map(|i| format!("{a}.{0} = {b}.{0}", name(i)))
                .collect::<Vec<_>>()
                .join(" AND ")
        };
        let returned: Vec<String> = by.iter().map(|i| format!("t.{}", name(i))).collect();
        let all: Vec<usize> = (0..self.columns.len()).collect();
        format!(
            "WITH s AS ({select}),
                  u AS (UPDATE {table} t SET {set} FROM s WHERE {ts} RETURNING {returned})
             INSERT INTO {table} ({cols}) SELECT {cols} FROM s
              WHERE NOT EXISTS (SELECT FROM u WHERE {us})",
            select = self.unnest_select(&all),
            table = self.table,
            ts = matches("t", "s"),
            returned = returned.join(", "),
            cols = self.column_list(),
            us = matches("u", "s"),
        )
    }

    pub(super) fn column_list(&self) -> String {
        self.columns
            .iter()
            .map(|c| quote_ident(c))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// Creates the target of `plan` if missing (with its declared indexes) and returns its columns,
/// checked against the planner's types. Runs inside the caller's transaction.
pub async fn ensure_target(
    tx: &Transaction<'_>,
    plan: &ViewPlan,
) -> Result<Vec<TargetColumn>, SinkError> {
    let view = plan.name.to_string();
    let kind = tx
        .query_opt(
            "SELECT c.relkind::text FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
              WHERE n.nspname = $1 AND c.relname = $2",
            &[&plan.name.schema, &plan.name.name],
        )
        .await
        .map_err(sql_err(format!("looking up {view}")))?
        .map(|r| r.get::<_, String>(0));
    match kind.as_deref() {
        None => {
            let sql = format!(
                "CREATE SCHEMA IF NOT EXISTS {}; CREATE TABLE {} WITH (fillfactor = {TARGET_FILLFACTOR}) AS {} WITH NO DATA",
                quote_ident(&plan.name.schema),
                plan.name.quoted(),
                plan.query_sql
            );
            tx.batch_execute(&sql)
                .await
                .map_err(sql_err(format!("creating target {view}")))?;
            for idx in &plan.index_sql {
                tx.batch_execute(idx)
                    .await
                    .map_err(sql_err(format!("creating index on {view}: {idx}")))?;
            }
        }
        Some("r") => {}
        Some(k) => {
            let kind = match k {
                "m" => "materialized view",
                "v" => "view",
                _ => "relation of another kind",
            };
            return Err(SinkError::WrongKind {
                view,
                kind: kind.into(),
            });
        }
    }
    // A column of an enum or domain type is checked as what it stands for.
    let sql = format!(
        "SELECT a.attname::text, bt.base_oid, format_type(a.atttypid, a.atttypmod),
                coalesce(bt.base_kind, '')
           FROM pg_attribute a {}
          WHERE a.attrelid = $1::text::regclass AND a.attnum > 0 AND NOT a.attisdropped
          ORDER BY a.attnum",
        crate::pg::catalog::base_type_lateral("a.atttypid")
    );
    let rows = tx
        .query(&sql, &[&plan.name.quoted()])
        .await
        .map_err(sql_err(format!("reading the columns of {view}")))?;
    let ours = plan.output_types();
    if rows.len() != ours.len() {
        return Err(SinkError::TypeMismatch {
            view,
            column: "(count)".into(),
            ours: format!("{} columns", ours.len()),
            theirs: format!(
                "{} columns; drop the old target table if the view changed",
                rows.len()
            ),
        });
    }
    let mut names = Vec::new();
    for (r, ty) in rows.iter().zip(ours) {
        let name: String = r.get(0);
        let oid: Option<i64> = r.get(1);
        let kind: String = r.get(3);
        let theirs = oid.and_then(|o| SqlType::from_base_type(o as u32, &kind));
        if theirs != Some(ty) {
            return Err(SinkError::TypeMismatch {
                view,
                column: name,
                ours: ty.pg_name().into(),
                theirs: r.get(2),
            });
        }
        names.push(TargetColumn {
            name,
            type_name: r.get(2),
        });
    }
    Ok(names)
}

/// Gives `plan`'s target an index on its group key if none of its indexes starts with a key
/// column (a view file need not declare one). Each batch deletes the changed groups by key:
/// without such an index that is a scan of the whole target per batch, and the scans' cost grows
/// with every row version a long snapshot, such as a reconcile's recomputation, keeps from being
/// pruned. Returns whether it created one.
pub async fn ensure_key_index<C: tokio_postgres::GenericClient>(
    client: &C,
    plan: &ViewPlan,
    columns: &[TargetColumn],
) -> Result<bool, SqlError> {
    let keys: Vec<&str> = plan
        .key_columns
        .iter()
        .filter_map(|k| columns.get(*k).map(|c| c.name.as_str()))
        .collect();
    if keys.is_empty() {
        return Ok(false);
    }
    let view = plan.name.to_string();
    let covered: bool = client
        .query_one(
            // A target missing here (dropped by hand) is not this function's to report: the
            // view fails with the fix named when it is next written.
            "SELECT to_regclass($1) IS NULL OR EXISTS (
               SELECT 1 FROM pg_index i
                WHERE i.indrelid = to_regclass($1) AND i.indisvalid AND i.indpred IS NULL
                  AND (i.indkey::int2[])[0] IN (SELECT a.attnum FROM pg_attribute a
                        WHERE a.attrelid = to_regclass($1) AND a.attname = ANY($2)))",
            &[&plan.name.quoted(), &keys],
        )
        .await
        .map_err(sql_err(format!("looking up the indexes of {view}")))?
        .get(0);
    if covered {
        return Ok(false);
    }
    let cols: Vec<String> = keys.iter().map(|k| quote_ident(k)).collect();
    let sql = format!(
        "CREATE INDEX ON {} ({})",
        plan.name.quoted(),
        cols.join(", ")
    );
    client
        .batch_execute(&sql)
        .await
        .map_err(sql_err(format!("indexing the group key of {view}: {sql}")))?;
    tracing::info!(view = %view, key = %cols.join(", "), "indexed the target's group key (its view file declares no index on it)");
    Ok(true)
}

/// Appends one COPY text line of a row of `t`, each value as PostgreSQL prints it in its
/// column: a `real` column's value as the float4 it is (`0.1`, not the float8 digits of 0.1f).
pub(super) fn copy_line(out: &mut String, t: &TargetTable, values: &[Value]) {
    for (i, v) in values.iter().enumerate() {
        if i > 0 {
            out.push('\t');
        }
        match v {
            Value::Float(f) if t.types.get(i).is_some_and(|ty| ty == "real") => {
                crate::value::write_float4(out, *f as f32)
            }
            _ => v.write_copy_text(out),
        }
    }
    out.push('\n');
}

/// Streams `text` (COPY text format) into `COPY <table> (<columns>) FROM STDIN`.
pub(super) async fn copy_in(
    tx: &Transaction<'_>,
    table: &str,
    columns: &str,
    text: String,
) -> Result<(), tokio_postgres::Error> {
    let sink = tx
        .copy_in(&format!("COPY {table} ({columns}) FROM STDIN"))
        .await?;
    futures_util::pin_mut!(sink);
    sink.send(Bytes::from(text)).await?;
    sink.finish().await?;
    Ok(())
}

/// Room left in each page of a target when it is filled, so that a group's new row can go
/// into its old row's page: PostgreSQL then updates it without touching the indexes (a HOT
/// update), about half the work of deleting the row and inserting a new one.
const TARGET_FILLFACTOR: u32 = 80;

/// The statements that write one target, prepared once per connection.
pub struct TargetWriter {
    pub target: TargetTable,
    delete: Statement,
    delete_null_keys: Statement,
    /// For a top-k target: its rank column, and a DELETE of rows by key and rank.
    delete_ranks: Option<(usize, Statement)>,
    insert: Statement,
    /// Rows updated in place by key (an aggregate target) or by key and rank (a top-k
    /// target), where [`updates_in_place`] allows it.
    update: Option<Statement>,
}

impl TargetWriter {
    /// Prepares: a DELETE of the changed groups by key (index-friendly `IN`), its twin for keys
    /// containing NULL (GROUP BY puts NULLs in one group; `=` never matches them), for a top-k
    /// target a DELETE by key and rank, and an INSERT of the new rows.
    pub async fn prepare(
        client: &Client,
        target: TargetTable,
    ) -> Result<TargetWriter, tokio_postgres::Error> {
        let keys = &target.key_columns;
        let key_names: Vec<String> = keys
            .iter()
            .map(|i| quote_ident(&target.columns[*i]))
            .collect();
        let all: Vec<usize> = (0..target.columns.len()).collect();
        let text_arrays = |n: usize| vec![Type::TEXT_ARRAY; n];
        let delete_sql = if keys.is_empty() {
            format!("DELETE FROM {}", target.table)
        } else {
            target.delete_matching(keys)
        };
        let delete_null_sql = if keys.is_empty() {
            "SELECT 1 WHERE false".to_string()
        } else {
            let same = key_names
                .iter()
                .map(|k| format!("t.{k} IS NOT DISTINCT FROM s.{k}"))
                .collect::<Vec<_>>();
            let any_null = key_names
                .iter()
                .map(|k| format!("s.{k} IS NULL"))
                .collect::<Vec<_>>();
            format!(
                "DELETE FROM {} t USING ({}) s WHERE {} AND ({})",
                target.table,
                target.unnest_select(keys),
                same.join(" AND "),
                any_null.join(" OR ")
            )
        };
        let insert_sql = format!(
            "INSERT INTO {} ({}) {}",
            target.table,
            target.column_list(),
            target.unnest_select(&all)
        );
        let delete = client
            .prepare_typed(
                &delete_sql,
                &text_arrays(if keys.is_empty() { 0 } else { keys.len() }),
            )
            .await?;
        let delete_null_keys = client
            .prepare_typed(
                &delete_null_sql,
                &text_arrays(if keys.is_empty() { 0 } else { keys.len() }),
            )
            .await?;
        let insert = client
            .prepare_typed(&insert_sql, &text_arrays(all.len()))
            .await?;
        let delete_ranks = match target.rank_column {
            Some(rank) => {
                let cols: Vec<usize> = keys.iter().copied().chain([rank]).collect();
                let sql = target.delete_matching(&cols);
                let statement = client.prepare_typed(&sql, &text_arrays(cols.len())).await?;
                Some((rank, statement))
            }
            None => None,
        };
        let by: Vec<usize> = keys.iter().copied().chain(target.rank_column).collect();
        let update = match !keys.is_empty() && updates_in_place(client, &target, &by).await? {
            true => Some(
                client
                    .prepare_typed(&target.upsert_by(&by), &text_arrays(all.len()))
                    .await?,
            ),
            false => None,
        };
        Ok(TargetWriter {
            target,
            delete,
            delete_null_keys,
            delete_ranks,
            insert,
            update,
        })
    }

    /// Writes one view's changed groups inside `tx`: absolute values, so a repeat is harmless.
    /// Returns by how many rows the target grew (negative: shrank), as PostgreSQL counted the
    /// rows deleted and inserted, for [`record_row_deltas`].
    pub async fn write(
        &self,
        tx: &Transaction<'_>,
        changes: &[TargetChange],
    ) -> Result<i64, tokio_postgres::Error> {
        let t = &self.target;
        let mut keys = vec![TextColumn::with_capacity(changes.len()); t.key_columns.len()];
        // Keys and ranks of the rows rewritten one by one (top-k changes that name ranks).
        let mut ranked = vec![TextColumn::default(); t.key_columns.len() + 1];
        let mut rows = vec![TextColumn::default(); t.columns.len()];
        // Rows updated in place (or inserted when new).
        let mut updated = vec![TextColumn::default(); t.columns.len()];
        let (mut null_key, mut whole) = (false, 0usize);
        let in_place = self.update.is_some();
        for ch in changes {
            match (&ch.ranks, &self.delete_ranks) {
                (Some(ranks), Some((rank, _))) => {
                    for r in ranks {
                        match ch.rows.iter().find(|row| &row[*rank] == r) {
                            Some(row) if in_place => push_texts(&mut updated, row),
                            row => {
                                push_texts(&mut ranked, ch.key.iter().chain([r]));
                                if let Some(row) = row {
                                    push_texts(&mut rows, row);
                                }
                            }
                        }
                    }
                }
                // One row for a key without NULLs: written in place.
                (None, None)
                    if in_place && ch.rows.len() == 1 && !ch.key.iter().any(Value::is_null) =>
                {
                    push_texts(&mut updated, &ch.rows[0]);
                }
                _ => {
                    whole += 1;
                    null_key |= ch.key.iter().any(Value::is_null);
                    push_texts(&mut keys, &ch.key);
                    for row in &ch.rows {
                        push_texts(&mut rows, row);
                    }
                }
            }
        }

        // Sent together, without waiting for each reply (PostgreSQL runs them in this order):
        // one round trip instead of two or three, which is what a small batch waits for.
        let (key_params, row_params) = (text_params(&keys), text_params(&rows));
        let ranked_params = text_params(&ranked);
        let ranked_delete = (self.delete_ranks.as_ref()).filter(|_| !ranked[0].is_empty());
        let delete = execute_if(tx, (whole > 0).then_some(&self.delete), &key_params);
        let delete_ranks = execute_if(tx, ranked_delete.map(|(_, d)| d), &ranked_params);
        let delete_null = execute_if(tx, null_key.then_some(&self.delete_null_keys), &key_params);
        let has_rows = rows.first().is_some_and(|c| !c.is_empty());
        let insert = execute_if(tx, has_rows.then_some(&self.insert), &row_params);
        let updated_params = text_params(&updated);
        let has_updates = updated.first().is_some_and(|c| !c.is_empty());
        let update = execute_if(
            tx,
            self.update.as_ref().filter(|_| has_updates),
            &updated_params,
        );
        let (deleted, deleted_ranks, deleted_null, inserted, new_in_place) =
            futures_util::try_join!(delete, delete_ranks, delete_null, insert, update)?;
        Ok((inserted + new_in_place) as i64 - (deleted + deleted_ranks + deleted_null) as i64)
    }
}

/// Whether target `t`'s rows may be updated in place by the columns `by` (its key, or key and
/// rank). An `UPDATE` checks unique indexes and exclusion constraints row by row, so two rows
/// swapping values under an index over other columns (two agents trading ranks, say) would
/// collide mid-statement, where deleting both and inserting both never does. So only when
/// every such index covers `by`'s columns alone, whose values an update keeps. The answer is
/// taken when the statements are prepared: an index added later while the engine runs fails
/// the view loudly (a unique violation), it never writes wrong rows.
async fn updates_in_place(
    client: &Client,
    t: &TargetTable,
    by: &[usize],
) -> Result<bool, tokio_postgres::Error> {
    let names: Vec<&str> = by.iter().map(|i| t.columns[*i].as_str()).collect();
    let row = client
        .query_one(
            "SELECT NOT EXISTS (
               SELECT 1 FROM pg_index i
                WHERE i.indrelid = $1::text::regclass AND (i.indisunique OR i.indisexclusion)
                  AND (i.indexprs IS NOT NULL OR i.indpred IS NOT NULL OR EXISTS (
                       SELECT 1 FROM unnest(i.indkey::int2[]) k
                         JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k
                        WHERE a.attname <> ALL($2))))",
            &[&t.table, &names],
        )
        .await?;
    Ok(row.get(0))
}

/// Executes `statement` if there is one to run, else counts no rows.
async fn execute_if(
    tx: &Transaction<'_>,
    statement: Option<&Statement>,
    params: &[&(dyn ToSql + Sync)],
) -> Result<u64, tokio_postgres::Error> {
    match statement {
        Some(s) => tx.execute(s, params).await,
        None => Ok(0),
    }
}

fn text_params(cols: &[TextColumn]) -> Vec<&(dyn ToSql + Sync)> {
    cols.iter().map(|c| c as &(dyn ToSql + Sync)).collect()
}

/// Appends rows shaped as target `t`'s to `table` (the target, or a table of its columns).
pub async fn copy_rows_into(
    tx: &Transaction<'_>,
    t: &TargetTable,
    table: &str,
    rows: &[Vec<Value>],
) -> Result<(), tokio_postgres::Error> {
    let mut text = String::new();
    for r in rows {
        copy_line(&mut text, t, r);
    }
    copy_in(tx, table, &t.column_list(), text).await
}
