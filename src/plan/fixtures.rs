//! Test fixtures of the planner: the seed source tables as the catalog describes them, and the
//! seed views of `schema/views`, planned as `setup::prepare` plans them.
//!
//! Its own file so the unit tests of `views.rs` and `explain.rs` plan against one description of
//! the seed tables (the contract in `schema/sources.sql`) without a server. Test-only: compiled
//! under `cfg(test)`, never part of the engine.

use std::path::Path;

use super::deps::dependency_order;
use super::parse::{parse_view_file, read_views_dir, ViewFile};
use super::views::{classify, Classified};
use crate::pg::{Catalog, ColumnInfo, QualifiedName, TableInfo};
use crate::pgtime::PgTimeZone;
use crate::settings::Settings;
use crate::value::SqlType;

/// `public.agent_runs` and `analytics.user_activity` as `control::load_tables` describes them.
pub fn seed_catalog() -> Catalog {
    let table = |schema: &str, name: &str, columns: &[(&str, &str, SqlType)]| TableInfo {
        name: QualifiedName::new(schema, name),
        columns: columns
            .iter()
            .map(|(name, type_name, ty)| ColumnInfo::plain(*name, *ty, *type_name))
            .collect(),
        key: vec![0],
        default_collation: None,
    };
    let tstz = "timestamp with time zone";
    let agent_runs = table(
        "public",
        "agent_runs",
        &[
            ("id", "bigint", SqlType::Int8),
            ("agent_id", "uuid", SqlType::Uuid),
            ("workspace_id", "uuid", SqlType::Uuid),
            ("user_id", "uuid", SqlType::Uuid),
            ("status", "text", SqlType::Text),
            ("started_at", tstz, SqlType::TimestampTz),
            ("runtime_seconds", "double precision", SqlType::Float8),
            ("credits_consumed", "numeric(12,4)", SqlType::Numeric),
            ("error_code", "text", SqlType::Text),
        ],
    );
    let user_activity = table(
        "analytics",
        "user_activity",
        &[
            ("id", "bigint", SqlType::Int8),
            ("workspace_id", "uuid", SqlType::Uuid),
            ("user_id", "uuid", SqlType::Uuid),
            ("activity_type", "text", SqlType::Text),
            ("created_at", tstz, SqlType::TimestampTz),
        ],
    );
    [agent_runs, user_activity]
        .into_iter()
        .map(|t| (t.name.clone(), t))
        .collect()
}

/// The repository's seed views (`schema/views/*.sql`), sorted by file name, each with its path
/// relative to the repository (`schema/views/...`, the same on every machine).
pub fn seed_views() -> Vec<ViewFile> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = read_views_dir(&root.join("schema/views")).unwrap_or_else(|e| panic!("{e}"));
    for f in &mut files {
        if let Ok(relative) = f.path.strip_prefix(root) {
            f.path = relative.to_path_buf();
        }
    }
    files
}

/// The views planned as `setup::prepare` plans them (no server: the seed catalog).
pub fn classified(files: &[ViewFile]) -> Classified {
    let order = dependency_order(files).unwrap_or_else(|e| panic!("{e}"));
    let settings = Settings::parse("").unwrap_or_else(|e| panic!("{e}"));
    classify(
        files,
        &order,
        &seed_catalog(),
        &settings,
        &[],
        &PgTimeZone::UTC,
    )
    .unwrap_or_else(|e| panic!("{e}"))
}

/// The seed views and one more, `text` as if read from `file`, planned as [`classified`] does.
pub fn classified_with(file: &str, text: &str) -> Classified {
    classified_with_all(&[(file, text)])
}

/// The seed views and more, each `(file, text)` as if read from `file`.
pub fn classified_with_all(more: &[(&str, &str)]) -> Classified {
    let mut files = seed_views();
    for (file, text) in more {
        files.push(parse_view_file(Path::new(file), text).unwrap_or_else(|e| panic!("{e}")));
    }
    classified(&files)
}
