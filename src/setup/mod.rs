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
//!
//! One room per job, and this one only orchestrates them:
//! - `prepare.rs`: reading files and settings, connecting, the catalog, planning (which views
//!   are incremental, fallback or broken is the pure [`crate::plan::views`]);
//! - `trust.rs`: whether state, slot and targets can be resumed from, or must be rebuilt;
//! - `objects.rs`: creating and updating what `init` leaves in PostgreSQL;
//! - `load.rs`: the initial load from a fresh snapshot.

mod load;
mod objects;
mod prepare;
mod trust;

use thiserror::Error;

use crate::bookkeeping::{progress, views as view_records};
use crate::clock::Clock;
use crate::config::Config;
use crate::maintain::{MaintainError, Maintainer};
use crate::pg::Lsn;
use crate::plan::parse::ViewFileError;
use crate::plan::{views, FallbackPlan, ViewError};
use crate::sink::target::{SinkError, TargetTable};
use crate::source::control::ControlError;
use crate::source::snapshot::SnapshotError;
use crate::state::meta;
use crate::state::store::StoreError;
use crate::state::{StateThread, StateThreadGone};

pub use load::load_failures;
pub use objects::{apply_row_security, ensure_fallbacks, target_columns};
pub use prepare::{prepare, Prepared};
pub use trust::initialized_lsn;

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
    #[error("{count} {what}: one engine's state holds fewer than {limit}; split the views directory across engines (each with its own state directory and slot)")]
    TooMany {
        what: &'static str,
        count: usize,
        limit: usize,
    },
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
        if views::refuses_fallback(fb, &p.settings) {
            refused.push(format!(
                "{} ({}): {}",
                fb.name,
                fb.file.display(),
                fb.reason
            ));
        } else {
            tracing::warn!(
                "{}",
                fallback_notice(fb, p.settings.view(&fb.name.to_string()))
            );
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
    let store = trust::open_state(&cfg.state_dir)?;
    let slot = trust::free_slot(&p.client, &cfg.slot).await?;
    let target_lsn = progress::read_progress(&p.client, &cfg.slot)
        .await?
        .map(|t| t.lsn);
    let today = clock.today(&p.tz);
    let resume = trust::resume_point(
        start,
        target_lsn,
        slot.as_ref(),
        &store,
        &p.fingerprint,
        &cfg.slot,
    )?;
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
        let columns = objects::update_objects(p, cfg).await?;
        let dates = meta::read_dates(&store)?;
        let mut m = Maintainer::new(store, p.tz, p.tables.clone(), p.plans.clone(), today);
        m.set_threads(cfg.fold_threads);
        m.set_dates(&dates);
        load_failures(&p.client, &mut m).await?;
        objects::record_broken(&p.client, &p.broken).await?;
        return Ok((StateThread::spawn(m), p.targets(&columns), lsn));
    }
    tracing::info!(
        views = p.plans.len(),
        "initializing: creating targets, slot and snapshot"
    );
    let started = std::time::Instant::now();
    let columns = objects::create_objects(p, cfg).await?;
    let targets = p.targets(&columns);
    load::initial_load(p, cfg, store, today, targets, started).await
}

/// The incremental views recorded as failed.
async fn failed_views(
    client: &tokio_postgres::Client,
    plans: &[crate::plan::ViewPlan],
) -> Result<Vec<String>, SetupError> {
    let failed = view_records::failed(client).await?;
    Ok(plans
        .iter()
        .map(|p| p.name.to_string())
        .filter(|n| failed.iter().any(|(f, _)| f == n))
        .collect())
}
