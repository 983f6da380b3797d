//! Preparing the engine: everything known before the state is touched.
//!
//! Its own room because every command (`init`, `run`, `explain`, `status`, `check`, `reconcile`,
//! `refresh`) starts here, and none of it writes: it reads the configuration, the view files and
//! `deltamv.toml`, connects and checks the server, loads the catalog of the tables the views
//! read and hands the decision which views are incremental, fallback or broken to the pure
//! [`crate::plan::views::classify`]. It must not create anything (no schema, publication, slot
//! or target): that is `init`'s, after every refusal has been checked.

use tokio_postgres::Client;

use super::objects::known_views;
use super::SetupError;
use crate::config::Config;
use crate::pg::{Catalog, DbTarget, QualifiedName, TableInfo};
use crate::pgtime::PgTimeZone;
use crate::plan::parse::{read_views_dir, ViewFile};
use crate::plan::views::{classify, Classified};
use crate::plan::{deps, source_tables, FallbackPlan, StageInput, ViewError, ViewPlan};
use crate::settings::Settings;
use crate::sink::target::{TargetColumn, TargetTable};
use crate::source::control::{self, ControlError};
use crate::state::keys::{MAX_TABLES, MAX_VIEWS};

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
    let Classified {
        plans,
        creation_order,
        fallbacks,
        broken,
    } = classify(&files, &order, &catalog, &settings, &known, &tz)?;
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
    within_key_space(tables.len(), plans.len())?;
    let fingerprint = fingerprint(&tz, &tables, &plans);
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

/// Refuses more source tables or views than the state's keys can tell apart.
fn within_key_space(tables: usize, views: usize) -> Result<(), SetupError> {
    for (what, count, limit) in [
        ("source tables", tables, MAX_TABLES),
        ("incremental views", views, MAX_VIEWS),
    ] {
        if count >= limit {
            return Err(SetupError::TooMany { what, count, limit });
        }
    }
    Ok(())
}

/// What the state store was built from: the format of its records, the zone, the source
/// tables' columns and every incremental view's SQL. A state recorded with another fingerprint
/// is rebuilt.
fn fingerprint(tz: &PgTimeZone, tables: &[TableInfo], plans: &[ViewPlan]) -> String {
    let mut fingerprint = format!(
        "records={}\ntz={}\n",
        crate::state::keys::RECORD_FORMAT,
        tz.name()
    );
    for t in tables {
        let cols: Vec<String> = t
            .columns
            .iter()
            .map(|c| format!("{}:{}", c.name, c.type_name))
            .collect();
        fingerprint.push_str(&format!("table {} ({})\n", t.name, cols.join(",")));
    }
    for p in plans {
        fingerprint.push_str(&format!(
            "view {}: {}\n{}\n",
            p.name,
            p.query_sql,
            p.index_sql.join(";")
        ));
    }
    fingerprint
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

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::plan::parse::parse_view_file;

    fn view(name: &str, from: &str) -> ViewFile {
        let sql = format!(
            "CREATE MATERIALIZED VIEW {name} AS SELECT x, count(*) AS n FROM {from} GROUP BY x;"
        );
        parse_view_file(Path::new(&format!("{name}.sql")), &sql).unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn more_tables_or_views_than_the_keys_tell_apart_are_refused() {
        assert!(within_key_space(MAX_TABLES - 1, MAX_VIEWS - 1).is_ok());
        let err = within_key_space(MAX_TABLES, 5).expect_err("too many tables");
        assert_eq!(
            err.to_string(),
            "16384 source tables: one engine's state holds fewer than 16384; split the views directory across engines (each with its own state directory and slot)"
        );
        assert!(within_key_space(3, MAX_VIEWS).is_err(), "too many views");
    }

    #[test]
    fn a_removed_view_that_others_read_is_refused_naming_them() {
        let files = [view("a.top", "a.gone"), view("a.other", "a.gone")];
        let known = ["a.gone".to_string(), "a.top".to_string()];
        let err = check_removed_inputs(&known, &files).expect_err("refused");
        assert_eq!(
            err.to_string(),
            "view a.gone is no longer defined, but a.top, a.other read it: restore its file, or remove or change the dependents first"
        );
        // Removed but read by nobody, or still defined: fine.
        let files = [view("a.top", "public.t")];
        assert!(check_removed_inputs(&known, &files).is_ok());
    }

    /// A state written in another record format must not be trusted (`trust::initialized_lsn`
    /// compares fingerprints): the fingerprint names the format, whatever the views.
    #[test]
    fn the_fingerprint_names_the_record_format() {
        let print = fingerprint(&PgTimeZone::UTC, &[], &[]);
        let format = format!("records={}\n", crate::state::keys::RECORD_FORMAT);
        assert!(print.starts_with(&format), "{print}");
    }
}
