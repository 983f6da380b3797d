//! Creating and updating what `init` leaves in PostgreSQL: the bookkeeping schema, the
//! publication, the targets, the fallback materialized views, the readers' grants and row-level
//! security, and the views' recorded state.
//!
//! Its own room because these are the effects on the database, in one place with the SQL they
//! run, kept apart from the decisions (what to create is decided by `prepare` and the pure
//! [`crate::plan::views`]; whether to resume by [`super::trust`]). It decides nothing: every
//! function does what the prepared plans say, and what runs in one transaction is the caller's
//! choice (`create_objects` runs all of init's creation in one, so a refusal leaves nothing
//! half-created).

use tokio_postgres::Client;

use super::{Prepared, SetupError};
use crate::bookkeeping::{self, views, views::Mode};
use crate::config::Config;
use crate::pg::{sql_err, QualifiedName};
use crate::plan::{FallbackPlan, ViewPlan};
use crate::sink::target::{self, SinkError, TargetColumn};
use crate::source::control;
use crate::source::partitions;

/// Brings the objects of an earlier `init` up to date before the engine resumes on them, and
/// reads the targets' columns: bookkeeping added by newer versions appears without a re-init
/// (all IF NOT EXISTS), the publication and partitions follow the views, new fallback views are
/// created, grants, row counts and row-level security are renewed.
pub(super) async fn update_objects(
    p: &mut Prepared,
    cfg: &Config,
) -> Result<Vec<Vec<TargetColumn>>, SetupError> {
    bookkeeping::install(&p.client).await?;
    control::ensure_publication(&p.client, &cfg.publication, &p.published).await?;
    partitions::ensure(&p.client, &p.published, false).await?;
    ensure_fallbacks(&p.client, &p.fallbacks).await?;
    grant_readers(&p.client, &p.plans, &p.fallbacks).await?;
    count_unknown_rows(&p.client).await?;
    apply_row_security(p).await?;
    let columns = target_columns(p).await?;
    // Targets of an earlier version's init may lack the key index.
    let mut tx = p
        .client
        .transaction()
        .await
        .map_err(sql_err("indexing the targets' keys"))?;
    index_keys(&mut tx, &p.plans, &columns).await?;
    tx.commit()
        .await
        .map_err(sql_err("indexing the targets' keys"))?;
    Ok(columns)
}

/// Gives each target an index on its group key where it has none for it
/// ([`target::ensure_key_index`]). A role that may not create one (it does not own the target)
/// only makes its batches slower, so that is a warning, and the rest of `tx` goes on.
async fn index_keys(
    tx: &mut tokio_postgres::Transaction<'_>,
    plans: &[ViewPlan],
    columns: &[Vec<TargetColumn>],
) -> Result<(), SetupError> {
    for (plan, cols) in plans.iter().zip(columns) {
        let attempt = tx
            .savepoint("dmv_key_index")
            .await
            .map_err(sql_err("indexing the targets' keys"))?;
        let done = match target::ensure_key_index(&attempt, plan, cols).await {
            Ok(_) => attempt.commit().await,
            Err(e) => {
                tracing::warn!(view = %plan.name, error = %e, "the target has no index on its group key, and none could be created: each batch scans it whole; create one on its key columns");
                attempt.rollback().await
            }
        };
        done.map_err(sql_err("indexing the targets' keys"))?;
    }
    Ok(())
}

/// The views a previous `init` recorded (none before the first).
pub(super) async fn known_views(client: &Client) -> Result<Vec<String>, SetupError> {
    Ok(views::known(client).await?)
}

/// Records the views that no longer plan as failed, with why (after `init`, which resets the
/// state of the views it loads).
pub(super) async fn record_broken<C: tokio_postgres::GenericClient>(
    client: &C,
    broken: &[(QualifiedName, String)],
) -> Result<(), SetupError> {
    for (name, why) in broken {
        tracing::error!(view = %name, error = %why, "view failed: it no longer matches its source tables; other views continue");
        views::mark_failed(client, &name.to_string(), why)
            .await
            .map_err(sql_err("recording a failed view"))?;
    }
    Ok(())
}

/// Creates bookkeeping, publication and targets in one transaction; returns target columns.
pub(super) async fn create_objects(
    p: &mut Prepared,
    cfg: &Config,
) -> Result<Vec<Vec<TargetColumn>>, SetupError> {
    let mut tx = p
        .client
        .transaction()
        .await
        .map_err(sql_err("starting the init transaction"))?;
    bookkeeping::install(&tx).await?;
    let mut columns = vec![Vec::new(); p.plans.len()];
    for &i in &p.creation_order {
        let plan = &p.plans[i];
        columns[i] = target::ensure_target(&tx, plan).await?;
        let (name, file) = (plan.name.to_string(), plan.file.display().to_string());
        views::record(&tx, &name, &file, &plan.query_sql, Mode::Incremental).await?;
    }
    index_keys(&mut tx, &p.plans, &columns).await?;
    control::ensure_publication(&tx, &cfg.publication, &p.published).await?;
    // Before the slot's snapshot: the leaves recorded are the ones the snapshot reads.
    partitions::ensure(&tx, &p.published, true).await?;
    ensure_fallbacks(&tx, &p.fallbacks).await?;
    grant_readers(&tx, &p.plans, &p.fallbacks).await?;
    tx.commit().await.map_err(sql_err("committing init"))?;
    Ok(columns)
}

/// Creates the fallback views that do not exist yet (in dependency order, with their declared
/// indexes) and records them in `deltamv.views`. A fresh one is filled at creation.
pub async fn ensure_fallbacks<C: tokio_postgres::GenericClient>(
    client: &C,
    fallbacks: &[FallbackPlan],
) -> Result<(), SetupError> {
    for fb in fallbacks {
        let kind: Option<String> = client
            .query_opt(
                "SELECT c.relkind::text FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                  WHERE n.nspname = $1 AND c.relname = $2",
                &[&fb.name.schema, &fb.name.name],
            )
            .await
            .map_err(sql_err(format!("looking up {}", fb.name)))?
            .map(|r| r.get(0));
        // A new materialized view's rows are counted with its creation; the refresher keeps
        // the count from then on.
        let created = kind.is_none();
        match kind.as_deref() {
            None => {
                let sql = format!(
                    "CREATE SCHEMA IF NOT EXISTS {}; CREATE MATERIALIZED VIEW {} AS {} WITH DATA",
                    crate::pg::quote_ident(&fb.name.schema),
                    fb.name.quoted(),
                    fb.query_sql
                );
                client
                    .batch_execute(&sql)
                    .await
                    .map_err(sql_err(format!("creating fallback view {}", fb.name)))?;
                for idx in &fb.index_sql {
                    client
                        .batch_execute(idx)
                        .await
                        .map_err(sql_err(format!("creating index on {}: {idx}", fb.name)))?;
                }
            }
            Some("m") => {}
            Some(_) => {
                return Err(SinkError::WrongKind {
                    view: fb.name.to_string(),
                    kind: "table (it was maintained incrementally)".into(),
                }
                .into())
            }
        }
        let (name, file) = (fb.name.to_string(), fb.file.display().to_string());
        views::record(client, &name, &file, &fb.query_sql, Mode::Fallback).await?;
        if created {
            views::count_rows(client, &name, &fb.name.quoted()).await?;
        }
    }
    Ok(())
}

/// Counts the rows of views whose count is not known yet (bookkeeping from a version that did
/// not keep it, or a fallback view whose first refresh failed); from then on the writers keep it.
pub(super) async fn count_unknown_rows(client: &Client) -> Result<(), SetupError> {
    for (view, table) in views::uncounted(client).await? {
        views::count_rows(client, &view, &table).await?;
    }
    Ok(())
}

/// Lets `analytics_reader` (where it exists) read every target and fallback view, whichever
/// role runs the engine (see [`crate::access`]).
pub(super) async fn grant_readers<C: tokio_postgres::GenericClient>(
    client: &C,
    plans: &[ViewPlan],
    fallbacks: &[FallbackPlan],
) -> Result<(), SetupError> {
    let names: Vec<&QualifiedName> = plans
        .iter()
        .map(|plan| &plan.name)
        .chain(fallbacks.iter().map(|fb| &fb.name))
        .collect();
    Ok(crate::access::grant_readers(client, &names).await?)
}

/// Row-level security for readers where `tenant_setting` is configured: a target row is visible
/// when its `workspace_id` equals that session setting. The worker owns the targets, so its own
/// writes are not filtered.
pub async fn apply_row_security(p: &Prepared) -> Result<(), SetupError> {
    for plan in &p.plans {
        let name = plan.name.to_string();
        let Some(setting) = &p.settings.view(&name).tenant_setting else {
            continue;
        };
        if !plan.last().output_names.iter().any(|n| n == "workspace_id") {
            return Err(crate::settings::SettingsError::Invalid {
                file: crate::settings::SETTINGS_FILE.into(),
                detail: format!(
                    "tenant_setting for {name} needs a workspace_id column in the view"
                ),
            }
            .into());
        }
        let sql = format!(
            "ALTER TABLE {t} ENABLE ROW LEVEL SECURITY;
             DROP POLICY IF EXISTS deltamv_tenant ON {t};
             CREATE POLICY deltamv_tenant ON {t} FOR SELECT
                 USING (workspace_id::text = current_setting({s}, true));",
            t = plan.name.quoted(),
            s = crate::pg::quote_literal(setting)
        );
        p.client
            .batch_execute(&sql)
            .await
            .map_err(sql_err(format!("row-level security on {name}")))?;
    }
    Ok(())
}

/// Reads the target columns of existing targets (after `init`).
pub async fn target_columns(p: &mut Prepared) -> Result<Vec<Vec<TargetColumn>>, SetupError> {
    let tx = p
        .client
        .transaction()
        .await
        .map_err(sql_err("reading targets"))?;
    let mut out = vec![Vec::new(); p.plans.len()];
    for &i in &p.creation_order {
        out[i] = target::ensure_target(&tx, &p.plans[i]).await?;
    }
    tx.rollback().await.map_err(sql_err("reading targets"))?;
    Ok(out)
}
