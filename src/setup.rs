//! Preparing the engine and `init`.
//!
//! Everything that can be refused is checked before anything is created: the server (wal_level),
//! the source tables, every view's plan. Then one transaction creates the bookkeeping schema, the
//! publication, the targets and their indexes and checks the targets' column types, so a refusal
//! leaves nothing half-created. The snapshot is loaded into the state store chunk by chunk and the
//! targets are filled in one transaction with the slot's consistent LSN; the state records that
//! LSN and a "snapshot complete" mark last, so a crash anywhere during `init` makes the next
//! `init`/`run` start the snapshot over.
//!
//! A view the planner cannot maintain (but that declares a unique index) becomes a fallback
//! materialized view, recomputed in full after every burst of changes. That is never silent:
//! `init` and `run` log each one with its reason and cost ([`fallback_notice`]), and where
//! `require_incremental` is set they refuse to start instead ([`check_fallbacks`]).

use std::collections::BTreeMap;
use std::path::Path;

use thiserror::Error;
use tokio_postgres::Client;

use crate::change::Change;
use crate::clock::Clock;
use crate::config::Config;
use crate::history::{self, RefreshKind};
use crate::maintain::{MaintainError, Maintainer};
use crate::pg::{describe, sql_err, Catalog, DbTarget, Lsn, QualifiedName, TableInfo};
use crate::pgtime::PgTimeZone;
use crate::plan::parse::{read_views_dir, ViewFile, ViewFileError};
use crate::plan::{
    deps, plan_view, relations, source_tables, FallbackPlan, PlanError, StageInput, ViewError,
    ViewPlan,
};
use crate::settings::{Mode, Settings};
use crate::sink::target::{self, SinkError, TargetColumn, TargetTable};
use crate::source::control::{self, ControlError, BOOKKEEPING_DDL};
use crate::source::partitions;
use crate::source::snapshot::{begin_in_snapshot, SlotSnapshot, SnapshotError, TableCopy};
use crate::state::keys;
use crate::state::store::{Durability, Store, StoreError};
use crate::state::{StateThread, StateThreadGone};

/// Rows per state batch while loading the snapshot.
const SNAPSHOT_CHUNK_ROWS: usize = 20_000;

#[derive(Debug, Error)]
pub enum SetupError {
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    #[error(transparent)]
    Settings(#[from] crate::settings::SettingsError),
    #[error(transparent)]
    Control(#[from] ControlError),
    #[error(transparent)]
    Connect(#[from] crate::pg::ConnectError),
    #[error(transparent)]
    Sql(#[from] crate::pg::SqlError),
    #[error(transparent)]
    Views(#[from] ViewFileError),
    #[error(transparent)]
    Plan(#[from] ViewError),
    #[error(transparent)]
    Sink(#[from] SinkError),
    #[error(transparent)]
    Snapshot(#[from] SnapshotError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Maintain(#[from] MaintainError),
    #[error(transparent)]
    StateThread(#[from] StateThreadGone),
    #[error("replication slot {slot} is in use by {holder}: another engine streams from it; stop that one first (two engines on one slot would each miss changes)")]
    SlotInUse { slot: String, holder: String },
    #[error("replication slot {slot} {why}, so the changes after the targets' position {} can no longer be streamed: run `deltamv init --resync` to rebuild from a fresh snapshot (the targets stay readable until it swaps them in)", target_lsn)]
    SlotGone {
        slot: String,
        why: String,
        target_lsn: Lsn,
    },
    #[error("view {view} is no longer defined, but {dependents} read it: restore its file, or remove or change the dependents first")]
    RemovedInput { view: String, dependents: String },
    #[error("require_incremental is set, and these views cannot be maintained incrementally (each would be a materialized view recomputed in full after every burst of changes): {views}; change them, or set require_incremental = false for them in deltamv.toml to accept the full refreshes")]
    NotIncremental { views: String },
}

/// What `init` says about a view it keeps as a refreshed materialized view: why, and what that
/// costs.
pub fn fallback_notice(fb: &FallbackPlan, settings: &crate::settings::ViewSettings) -> String {
    let reads: Vec<String> = fb.reads.iter().map(|r| r.to_string()).collect();
    let schedule = if settings.schedule.is_some() {
        " and on its schedule"
    } else {
        ""
    };
    format!(
        "view {} ({}) is not incremental: {}. It is kept as a materialized view and refreshed with REFRESH MATERIALIZED VIEW CONCURRENTLY: a full recompute of its query after every burst of changes to {} (at most once per {} ms){schedule}, instead of applying only the changed groups. Set require_incremental = true in deltamv.toml (or run `deltamv init --require-incremental`) to make init fail instead.",
        fb.name,
        fb.file.display(),
        fb.reason,
        reads.join(", "),
        settings.min_interval.as_millis()
    )
}

/// Refuses the fallback views whose settings require the incremental path (a view set to
/// `mode = "fallback"` asked for it and is exempt); warns about the others.
pub fn check_fallbacks(p: &Prepared) -> Result<(), SetupError> {
    let mut refused = Vec::new();
    for fb in &p.fallbacks {
        let settings = p.settings.view(&fb.name.to_string());
        if settings.require_incremental && settings.mode != Mode::Fallback {
            refused.push(format!(
                "{} ({}): {}",
                fb.name,
                fb.file.display(),
                fb.reason
            ));
        } else {
            tracing::warn!("{}", fallback_notice(fb, settings));
        }
    }
    if refused.is_empty() {
        Ok(())
    } else {
        Err(SetupError::NotIncremental {
            views: refused.join("; "),
        })
    }
}

/// Everything known before touching state: connection, zone, sources and plans.
pub struct Prepared {
    pub db: DbTarget,
    pub client: Client,
    pub tz: PgTimeZone,
    pub tables: Vec<TableInfo>,
    /// Sorted by name (positions are view ids in the state store).
    pub plans: Vec<ViewPlan>,
    /// Indexes into `plans`, every view after the views it reads (targets are created so).
    pub creation_order: Vec<usize>,
    /// Views kept as refreshed materialized views, each after the views it reads.
    pub fallbacks: Vec<FallbackPlan>,
    /// The tables in the publication: incremental sources, and tables fallback views read.
    pub published: Vec<QualifiedName>,
    pub settings: Settings,
    pub fingerprint: String,
    /// Views that ran before but no longer plan against the current tables, and why.
    pub broken: Vec<(QualifiedName, String)>,
}

impl Prepared {
    pub fn targets(&self, columns: &[Vec<TargetColumn>]) -> Vec<TargetTable> {
        self.plans
            .iter()
            .zip(columns)
            .map(|(p, c)| TargetTable::new(p, c.clone()))
            .collect()
    }
}

/// Connects, checks the server and plans every view.
pub async fn prepare(cfg: &Config) -> Result<Prepared, SetupError> {
    cfg.validate()?;
    let db = DbTarget::parse(&cfg.database_url)?;
    let client = db.connect().await?;
    control::check_server(&client, &cfg.slot).await?;
    let tz = control::server_timezone(&client).await?;
    let files = read_views_dir(&cfg.views_dir)?;
    let order = deps::dependency_order(&files).map_err(|error| ViewError {
        view: "(all)".into(),
        file: cfg.views_dir.display().to_string(),
        error,
    })?;
    let known = known_views(&client).await?;
    check_removed_inputs(&known, &files)?;
    let settings = Settings::load(&cfg.views_dir)?;
    let mut names: Vec<QualifiedName> = Vec::new();
    for f in &files {
        source_tables(&f.query, &mut names);
    }
    names.retain(|n| !files.iter().any(|f| &f.name == n));
    names.sort();
    let mut loaded = Vec::new();
    for name in &names {
        match control::load_tables(&client, std::slice::from_ref(name)).await {
            Ok(mut t) => loaded.append(&mut t),
            // A name in a fallback view's FROM may be a CTE; incremental views that name a
            // missing table are refused by the planner below.
            Err(ControlError::MissingTable(_)) => {}
            Err(e) => return Err(e.into()),
        }
    }
    let catalog: Catalog = loaded.iter().map(|t| (t.name.clone(), t.clone())).collect();
    let mut planned: BTreeMap<QualifiedName, ViewPlan> = BTreeMap::new();
    let mut fallbacks: Vec<FallbackPlan> = Vec::new();
    let mut topo = Vec::new();
    let mut broken = Vec::new();
    for i in order {
        let f = &files[i];
        let reads = relations(&f.query);
        let forced = settings.view(&f.name.to_string()).mode == Mode::Fallback;
        let reads_fallback = reads
            .iter()
            .find(|r| fallbacks.iter().any(|fb| &fb.name == *r));
        let outcome = match (forced, reads_fallback) {
            (true, _) => Err(PlanError::Unsupported(
                "mode = \"fallback\" in deltamv.toml".into(),
            )),
            (false, Some(fb)) => Err(PlanError::Unsupported(format!(
                "it reads fallback view {fb}"
            ))),
            (false, None) => plan_view(f, &catalog, &planned, &tz).map_err(|e| e.error),
        };
        match outcome {
            Ok(plan) => {
                topo.push(plan.name.clone());
                planned.insert(plan.name.clone(), plan);
            }
            Err(PlanError::Unsupported(reason)) if has_unique_index(f) => fallbacks.push(FallbackPlan {
                name: f.name.clone(),
                file: f.path.clone(),
                query_sql: f.query_sql.clone(),
                index_sql: f.index_sql.clone(),
                reason,
                reads,
            }),
            Err(PlanError::Unsupported(reason)) => {
                return Err(ViewError {
                    view: f.name.to_string(),
                    file: f.path.display().to_string(),
                    error: PlanError::Unsupported(format!(
                        "{reason}; declare a UNIQUE index on the view to keep it as a materialized view that deltamv refreshes"
                    )),
                }
                .into())
            }
            // A view that ran before and no longer plans lost a column it reads to a schema
            // change (DROP, RENAME, type change): it fails alone, the others go on.
            Err(error) if known.contains(&f.name.to_string()) => {
                broken.push((f.name.clone(), format!("{error}; fix the view or the source table, then run `deltamv init --resync`")));
            }
            Err(error) => {
                return Err(ViewError { view: f.name.to_string(), file: f.path.display().to_string(), error }.into())
            }
        }
    }
    let plans: Vec<ViewPlan> = planned.into_values().collect();
    let creation_order = topo
        .iter()
        .filter_map(|n| plans.iter().position(|p| &p.name == n))
        .collect();
    // Incremental views need the primary key of every table they read; fallback views are told
    // about changes to any table with a key (others refresh on their schedule only).
    let mut tables = Vec::new();
    for t in loaded {
        let incremental = plans.iter().any(|p| {
            p.stages
                .iter()
                .any(|s| s.input == StageInput::Table(t.name.clone()))
        });
        if incremental {
            control::require_key(&t)?;
            tables.push(t);
        }
    }
    let mut published: Vec<QualifiedName> = tables.iter().map(|t| t.name.clone()).collect();
    for fb in &fallbacks {
        for r in &fb.reads {
            if published.contains(r) || files.iter().any(|f| &f.name == r) {
                continue;
            }
            match control::table_has_key(&client, r).await? {
                Some(true) => published.push(r.clone()),
                Some(false) => {
                    tracing::warn!(view = %fb.name, table = %r, "table has no primary key: it cannot be published, so the view refreshes on its schedule only")
                }
                None => {}
            }
        }
    }
    published.sort();
    let mut fingerprint = format!("tz={}\n", tz.name());
    for t in &tables {
        let cols: Vec<String> = t
            .columns
            .iter()
            .map(|c| format!("{}:{}", c.name, c.type_name))
            .collect();
        fingerprint.push_str(&format!("table {} ({})\n", t.name, cols.join(",")));
    }
    for p in &plans {
        fingerprint.push_str(&format!(
            "view {}: {}\n{}\n",
            p.name,
            p.query_sql,
            p.index_sql.join(";")
        ));
    }
    Ok(Prepared {
        db,
        client,
        tz,
        tables,
        plans,
        creation_order,
        fallbacks,
        published,
        settings,
        fingerprint,
        broken,
    })
}

fn has_unique_index(f: &ViewFile) -> bool {
    f.index_sql.iter().any(|sql| {
        sql.trim_start()
            .to_uppercase()
            .starts_with("CREATE UNIQUE INDEX")
    })
}

/// The views a previous `init` recorded (none before the first).
async fn known_views(client: &Client) -> Result<Vec<String>, SetupError> {
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

/// Records the views that no longer plan as failed, with why (after `init`, which resets the
/// state of the views it loads).
async fn record_broken<C: tokio_postgres::GenericClient>(
    client: &C,
    broken: &[(QualifiedName, String)],
) -> Result<(), SetupError> {
    for (name, why) in broken {
        tracing::error!(view = %name, error = %why, "view failed: it no longer matches its source tables; other views continue");
        client
            .execute(
                "UPDATE deltamv.views SET state = 'failed', last_error = $2, updated_at = now() WHERE view_name = $1",
                &[&name.to_string(), why],
            )
            .await
            .map_err(sql_err("recording a failed view"))?;
    }
    Ok(())
}

/// A view whose definition was removed while others still read it would silently turn its
/// stale target into a "source table": refuse, naming the dependents.
fn check_removed_inputs(known: &[String], files: &[ViewFile]) -> Result<(), SetupError> {
    for former in known {
        if files.iter().any(|f| &f.name.to_string() == former) {
            continue;
        }
        let readers: Vec<String> = deps::dependents(files)
            .into_iter()
            .filter(|(input, _)| &input.to_string() == former)
            .flat_map(|(_, readers)| readers.into_iter().map(|r| r.to_string()))
            .collect();
        if !readers.is_empty() {
            return Err(SetupError::RemovedInput {
                view: former.clone(),
                dependents: readers.join(", "),
            });
        }
    }
    Ok(())
}

/// What the state directory says about a previous `init`.
/// Why a state with LSN `state`, last acknowledged position `acked`, cannot continue targets at
/// `targets` from a slot confirmed at `slot`; `Ok` when it can.
fn state_trust(state: Lsn, acked: Lsn, targets: Lsn, slot: Option<Lsn>) -> Result<(), String> {
    if state > targets {
        return Err(format!(
            "the state (at {}) is ahead of the targets (at {}): the targets were restored from an older backup or rewritten behind the engine",
            state,
            targets
        ));
    }
    match slot {
        Some(a) if a > state.max(acked) => Err(format!(
            "the slot was confirmed up to {} but the state is at {}: the state directory is older than the slot (restored from a backup, or another engine's)",
            a,
            state
        )),
        _ => Ok(()),
    }
}

/// Opens the state directory; one RocksDB finds corrupt is moved aside (kept for a bug report)
/// and replaced by an empty one, which `init` then fills from a fresh snapshot.
fn open_state(dir: &Path) -> Result<Store, SetupError> {
    match Store::open(dir) {
        Err(StoreError::Damaged { detail, .. }) => {
            let aside = dir.with_extension(format!("corrupt-{}", chrono::Utc::now().timestamp()));
            std::fs::rename(dir, &aside).map_err(|e| StoreError::Open {
                dir: dir.display().to_string(),
                detail: format!(
                    "it is corrupt ({detail}) and cannot be moved aside to {}: {e}",
                    aside.display()
                ),
            })?;
            tracing::error!(corrupt = %detail, moved_to = %aside.display(), "the state directory is corrupt: moved it aside; rebuilding from a fresh snapshot");
            Ok(Store::open(dir)?)
        }
        other => Ok(other?),
    }
}

/// The slot, once no other engine streams from it: this process's own walsender left over
/// from a cut connection is ended; another holder is waited for briefly, then refused by name.
async fn free_slot(client: &Client, slot: &str) -> Result<Option<control::SlotInfo>, SetupError> {
    let ours = crate::source::stream::application_name(slot);
    let started = std::time::Instant::now();
    loop {
        let info = control::slot_info(client, slot).await?;
        match info.as_ref().and_then(|i| i.holder.as_ref()) {
            None => return Ok(info),
            Some(h) if h.application == ours => control::terminate_backend(client, h.pid).await?,
            Some(h) if started.elapsed() >= SLOT_HOLD_WAIT => {
                return Err(SetupError::SlotInUse {
                    slot: slot.to_string(),
                    holder: h.description.clone(),
                })
            }
            Some(_) => {}
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
}

pub fn initialized_lsn(store: &Store, fingerprint: &str) -> Result<Option<Lsn>, StoreError> {
    let done: Option<bool> = store.meta("snapshot_done")?;
    let fp: Option<String> = store.meta("fingerprint")?;
    if done != Some(true) || fp.as_deref() != Some(fingerprint) {
        return Ok(None);
    }
    store.meta("lsn")
}

/// Creates bookkeeping, publication and targets in one transaction; returns target columns.
async fn create_objects(
    p: &mut Prepared,
    cfg: &Config,
) -> Result<Vec<Vec<TargetColumn>>, SetupError> {
    let tx = p
        .client
        .transaction()
        .await
        .map_err(sql_err("starting the init transaction"))?;
    tx.batch_execute(BOOKKEEPING_DDL)
        .await
        .map_err(sql_err("creating the deltamv schema"))?;
    let mut columns = vec![Vec::new(); p.plans.len()];
    for &i in &p.creation_order {
        let plan = &p.plans[i];
        columns[i] = target::ensure_target(&tx, plan).await?;
        tx.execute(
            "INSERT INTO deltamv.views (view_name, file, query_sql, state, last_error, updated_at)
             VALUES ($1, $2, $3, 'loading', NULL, now())
             ON CONFLICT (view_name) DO UPDATE SET file = EXCLUDED.file, query_sql = EXCLUDED.query_sql,
                 state = 'loading', last_error = NULL, updated_at = now()",
            &[&plan.name.to_string(), &plan.file.display().to_string(), &plan.query_sql],
        )
        .await
        .map_err(sql_err("recording the views"))?;
    }
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
        client
            .execute(
                "INSERT INTO deltamv.views (view_name, file, query_sql, state, last_error, mode, updated_at)
                 VALUES ($1, $2, $3, 'ok', NULL, 'fallback', now())
                 ON CONFLICT (view_name) DO UPDATE SET file = EXCLUDED.file, query_sql = EXCLUDED.query_sql,
                     mode = 'fallback', updated_at = now()",
                &[&fb.name.to_string(), &fb.file.display().to_string(), &fb.query_sql],
            )
            .await
            .map_err(sql_err("recording the views"))?;
        if created {
            client
                .execute(
                    &format!(
                        "UPDATE deltamv.views SET rows = (SELECT count(*) FROM {}) WHERE view_name = $1",
                        fb.name.quoted()
                    ),
                    &[&fb.name.to_string()],
                )
                .await
                .map_err(sql_err(format!("counting the rows of {}", fb.name)))?;
        }
    }
    Ok(())
}

/// Counts the rows of views whose count is not known yet (bookkeeping from a version that did
/// not keep it, or a fallback view whose first refresh failed); from then on the writers keep it.
async fn count_unknown_rows(client: &Client) -> Result<(), SetupError> {
    let unknown = client
        .query(
            "SELECT v.view_name, format('%I.%I', n.nspname, c.relname)
               FROM deltamv.views v
               JOIN pg_class c ON c.relkind IN ('r', 'm', 'p')
               JOIN pg_namespace n ON n.oid = c.relnamespace AND n.nspname || '.' || c.relname = v.view_name
              WHERE v.rows IS NULL",
            &[],
        )
        .await
        .map_err(sql_err("looking up views without a row count"))?;
    for r in unknown {
        let (view, table): (String, String) = (r.get(0), r.get(1));
        client
            .execute(
                &format!(
                    "UPDATE deltamv.views SET rows = (SELECT count(*) FROM {table}) WHERE view_name = $1"
                ),
                &[&view],
            )
            .await
            .map_err(sql_err(format!("counting the rows of {view}")))?;
    }
    Ok(())
}

/// Lets `analytics_reader` (where it exists) read every target and fallback view, whichever
/// role runs the engine (see [`crate::access`]).
async fn grant_readers<C: tokio_postgres::GenericClient>(
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

/// What `init` was asked for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Start {
    /// `deltamv run`: resume; initialize only a database never initialized.
    Run,
    /// `deltamv init`: resume when state, targets and slot agree, else initialize.
    Init,
    /// `deltamv init --resync`: rebuild from a fresh snapshot whatever the state.
    Resync,
}

/// How long a slot held by another walsender is waited for (a crashed engine's walsender ends
/// once the server notices the closed connection) before a second engine is refused.
const SLOT_HOLD_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// Runs `init` if needed; returns the opened maintainer state, target tables and state LSN.
///
/// Before anything is written it makes sure this process is the only engine (the state
/// directory's lock, the slot's walsender) and that the state can be trusted: its LSN S, the
/// targets' T and the slot's confirmed position A must satisfy A <= S <= T (see
/// [`crate::engine`]). A state directory that breaks that (restored from a backup, copied from
/// another engine, corrupt, or gone) is rebuilt from a fresh snapshot, so it never produces
/// wrong numbers; a slot that was dropped or lost its WAL is an error naming the fix.
pub async fn init(
    p: &mut Prepared,
    cfg: &Config,
    clock: &Clock,
    start: Start,
) -> Result<(StateThread<Maintainer>, Vec<TargetTable>, Lsn), SetupError> {
    check_fallbacks(p)?;
    let store = open_state(&cfg.state_dir)?;
    let slot = free_slot(&p.client, &cfg.slot).await?;
    let target_lsn = target::read_progress(&p.client, &cfg.slot).await?;
    let today = clock.today(&p.tz);
    let resume = match (start, target_lsn) {
        (Start::Resync, _) | (_, None) => None,
        (_, Some(t)) => {
            if start == Start::Run {
                match &slot {
                    None => return Err(SetupError::SlotGone { slot: cfg.slot.clone(), why: "was dropped".into(), target_lsn: t }),
                    Some(s) if s.lost => return Err(SetupError::SlotGone { slot: cfg.slot.clone(), why: "lost WAL it still needed (wal_status = 'lost': the server removed it, see max_slot_wal_keep_size)".into(), target_lsn: t }),
                    Some(_) => {}
                }
            }
            match (&slot, initialized_lsn(&store, &p.fingerprint)?) {
                (Some(s), Some(state_lsn)) if !s.lost => {
                    let acked: Lsn = store.meta("acked")?.unwrap_or_default();
                    let partial: bool = store.meta("partial")?.unwrap_or(false);
                    let trust = if partial {
                        Err("it holds part of a large transaction that was cut short".to_string())
                    } else {
                        state_trust(state_lsn, acked, t, s.confirmed_lsn)
                    };
                    match trust {
                        Ok(()) => Some(state_lsn),
                        Err(why) => {
                            tracing::error!(problem = %why, "the state cannot be trusted: rebuilding it from a fresh snapshot (targets stay readable until then)");
                            None
                        }
                    }
                }
                _ => None,
            }
        }
    };
    // `deltamv init` is the repair of a failed view: its state and target fell behind, so it is
    // rebuilt (with the others, from one snapshot).
    let failed = match (start, resume) {
        (Start::Init, Some(_)) => failed_views(&p.client, &p.plans).await?,
        _ => Vec::new(),
    };
    let resume = if failed.is_empty() {
        resume
    } else {
        tracing::warn!(views = %failed.join(", "), "rebuilding from a fresh snapshot to bring failed views back");
        None
    };
    if let Some(lsn) = resume {
        // Bookkeeping added by newer versions appears without a re-init (all IF NOT EXISTS).
        p.client
            .batch_execute(BOOKKEEPING_DDL)
            .await
            .map_err(sql_err("updating the deltamv schema"))?;
        control::ensure_publication(&p.client, &cfg.publication, &p.published).await?;
        partitions::ensure(&p.client, &p.published, false).await?;
        ensure_fallbacks(&p.client, &p.fallbacks).await?;
        grant_readers(&p.client, &p.plans, &p.fallbacks).await?;
        count_unknown_rows(&p.client).await?;
        apply_row_security(p).await?;
        let columns = target_columns(p).await?;
        let dates: Vec<i32> = store.meta("dates")?.unwrap_or_default();
        let mut m = Maintainer::new(store, p.tz, p.tables.clone(), p.plans.clone(), today);
        m.set_dates(&dates);
        load_failures(&p.client, &mut m).await?;
        record_broken(&p.client, &p.broken).await?;
        return Ok((StateThread::spawn(m), p.targets(&columns), lsn));
    }
    tracing::info!(
        views = p.plans.len(),
        "initializing: creating targets, slot and snapshot"
    );
    let started = std::time::Instant::now();
    let columns = create_objects(p, cfg).await?;
    let targets = p.targets(&columns);
    control::drop_slot(&p.client, &cfg.slot).await?;
    let mut store = store;
    store.wipe()?;
    let snapshot = SlotSnapshot::create(&p.db, &cfg.slot, &cfg.publication).await?;
    let lsn = snapshot.consistent_lsn;
    let maintainer = Maintainer::new(store, p.tz, p.tables.clone(), p.plans.clone(), today);
    let state = StateThread::spawn(maintainer);
    load_snapshot(p, &state, &snapshot).await?;
    drop(snapshot);
    state
        .call(|m| {
            m.forget_hot_groups();
            m.ensure_global_groups().map(drop)
        })
        .await??;
    let tx = p
        .client
        .transaction()
        .await
        .map_err(sql_err("loading targets"))?;
    let mut total = 0;
    for (v, t) in targets.iter().enumerate() {
        let load_err = || sql_err(format!("loading {}", t.plan_name));
        target::clear(&tx, t).await.map_err(load_err())?;
        // A page of groups at a time: memory stays flat however large the view.
        let (mut rows_loaded, mut from) = (0usize, None);
        loop {
            let (rows, next) = state
                .call(move |m| m.rows_page(v, from, TARGET_LOAD_PAGE))
                .await??;
            target::copy_rows(&tx, t, &rows).await.map_err(load_err())?;
            rows_loaded += rows.len();
            match next {
                Some(key) => from = Some(key),
                None => break,
            }
        }
        total += rows_loaded;
        target::record_rows(&tx, &t.plan_name, rows_loaded as i64)
            .await
            .map_err(sql_err("recording row counts"))?;
        history::record(
            &tx,
            &t.plan_name,
            RefreshKind::InitialLoad,
            started,
            history::Counts::changed(rows_loaded as i64),
            None,
        )
        .await
        .map_err(sql_err("recording refresh history"))?;
    }
    target::record_progress(&tx, &cfg.slot, lsn, None)
        .await
        .map_err(sql_err("recording progress"))?;
    tx.batch_execute(
        "UPDATE deltamv.views SET state = 'ok', last_change_at = now(), updated_at = now();
         UPDATE deltamv.progress SET caught_up_at = now();",
    )
    .await
    .map_err(sql_err("recording view state"))?;
    // In the same transaction: no reader sees a view that no longer plans as 'ok'.
    record_broken(&tx, &p.broken).await?;
    tx.commit()
        .await
        .map_err(sql_err("committing the initial load"))?;
    let fingerprint = p.fingerprint.clone();
    state
        .call(move |m| {
            // The snapshot's chunks were written without RocksDB's log: make them durable
            // before the load is marked done.
            m.store().flush()?;
            m.commit(
                lsn,
                &[
                    ("fingerprint", keys::encode(&fingerprint)),
                    ("snapshot_done", keys::encode(&true)),
                ],
                Durability::Synced,
            )
        })
        .await??;
    apply_row_security(p).await?;
    // Fallback views reading incremental targets were created while those were empty.
    for fb in &p.fallbacks {
        if let Err(e) = crate::refresher::refresh_now(&p.client, fb).await {
            tracing::warn!(view = %fb.name, error = %e, "first refresh of a fallback view failed; the engine retries");
        }
    }
    count_unknown_rows(&p.client).await?;
    tracing::info!(lsn = %lsn, rows = total, "initial load complete");
    Ok((state, targets, lsn))
}

/// Groups per page when writing the initial targets.
pub const TARGET_LOAD_PAGE: usize = 20_000;

async fn load_snapshot(
    p: &Prepared,
    state: &StateThread<Maintainer>,
    snapshot: &SlotSnapshot,
) -> Result<(), SetupError> {
    // Durably "not done" before the unlogged chunks (whatever an earlier state said).
    state
        .call(|m| {
            m.store().commit(
                &[("snapshot_done", keys::encode(&false))],
                Durability::Synced,
            )
        })
        .await??;
    let reader = p.db.connect().await?;
    begin_in_snapshot(&reader, &snapshot.snapshot_name).await?;
    for (t, table) in p.tables.iter().enumerate() {
        let (referenced, order) = state
            .call(move |m| (m.referenced(t).to_vec(), m.load_order(t)))
            .await?;
        let mut copy = TableCopy::start(&reader, table, &referenced, &order, p.tz).await?;
        let mut loaded = 0usize;
        let started = std::time::Instant::now();
        // The planner's row estimate: enough for an ETA on the terminal.
        let estimate: f64 = p
            .client
            .query_one(
                "SELECT greatest(reltuples, 0)::float8 FROM pg_class WHERE oid = $1::text::regclass",
                &[&table.name.quoted()],
            )
            .await
            .map(|r| r.get(0))
            .unwrap_or(0.0);
        // Two stages in flight: the state thread folds one chunk while this task reads and
        // parses the next from COPY (on two cores, the load takes the longer of the two, not
        // their sum).
        let mut next = copy.next_chunk(SNAPSHOT_CHUNK_ROWS).await?;
        while let Some(chunk) = next {
            loaded += chunk.len();
            let changes: Vec<Change> = chunk
                .into_iter()
                .map(|row| Change::Load { table: t, row })
                .collect();
            let apply = state.call(move |m| -> Result<(), SetupError> {
                m.apply(changes)?;
                m.store().commit(
                    &[("snapshot_done", keys::encode(&false))],
                    Durability::Unlogged,
                )?;
                crate::failpoint::hit("snapshot_chunk");
                Ok(())
            });
            let (applied, read) = tokio::join!(apply, copy.next_chunk(SNAPSHOT_CHUNK_ROWS));
            applied??;
            next = read?;
            let rate = loaded as f64 / started.elapsed().as_secs_f64().max(1e-3);
            let eta_s = ((estimate - loaded as f64).max(0.0) / rate).round();
            tracing::info!(table = %table.name, rows = loaded, rows_per_s = rate.round(), eta_s, "snapshot progress");
        }
    }
    reader
        .batch_execute("COMMIT")
        .await
        .map_err(|e| SnapshotError::Copy {
            table: "(snapshot)".into(),
            detail: describe(&e),
        })?;
    Ok(())
}

/// The incremental views recorded as failed.
async fn failed_views(client: &Client, plans: &[ViewPlan]) -> Result<Vec<String>, SetupError> {
    let failed = crate::bookkeeping::views::failed(client).await?;
    Ok(plans
        .iter()
        .map(|p| p.name.to_string())
        .filter(|n| failed.iter().any(|(f, _)| f == n))
        .collect())
}

/// Views recorded as failed stay failed across restarts until the next `init`.
pub async fn load_failures(client: &Client, m: &mut Maintainer) -> Result<(), SetupError> {
    for (name, why) in crate::bookkeeping::views::failed(client).await? {
        if let Some(v) = (0..m.view_count()).find(|v| m.plan(*v).name.to_string() == name) {
            m.set_failed(v, why);
        }
    }
    Ok(())
}
