//! The catalog's description of a source table, as read once by `init` and kept with the plan:
//! column types (domains resolved to their base type), collations, generated columns and the
//! replica identity key.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::pg::QualifiedName;
use crate::value::SqlType;

/// A column of a source table as the catalog describes it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ColumnInfo {
    pub name: String,
    /// `None` when the column's type is not supported (only an error if a view reads it). A
    /// domain is its base type; an enum is [`SqlType::Enum`].
    pub ty: Option<SqlType>,
    pub type_name: String,
    /// The column's own type OID (a domain's or enum's, as pgoutput announces it).
    #[serde(default)]
    pub type_oid: u32,
    /// The collation its text is ordered by when that is not byte order (C and POSIX are):
    /// views that order it are refused, naming it.
    #[serde(default)]
    pub collation: Option<String>,
    /// Why the column cannot be read although its type is supported (a nondeterministic
    /// collation).
    #[serde(default)]
    pub refusal: Option<String>,
    /// A stored generated column's expression: PostgreSQL 15 does not publish generated
    /// columns, so a view reading one computes it from the columns it is generated from.
    #[serde(default)]
    pub generated: Option<String>,
}

impl ColumnInfo {
    /// A plain column of a supported type (no collation, not generated).
    pub fn plain(name: impl Into<String>, ty: SqlType, type_name: impl Into<String>) -> Self {
        ColumnInfo {
            name: name.into(),
            ty: Some(ty),
            type_name: type_name.into(),
            type_oid: 0,
            collation: None,
            refusal: None,
            generated: None,
        }
    }
}

/// A published source table: its columns in attribute order and its replica identity key.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TableInfo {
    pub name: QualifiedName,
    pub columns: Vec<ColumnInfo>,
    /// Indexes into `columns` of the primary key (the replica identity).
    pub key: Vec<usize>,
    /// The database's default collation when it does not order text by bytes (`None`: C or
    /// POSIX): what text that is not a column (literals, casts) is ordered by.
    #[serde(default)]
    pub default_collation: Option<String>,
}

/// The source tables the planner may read, by name.
pub type Catalog = BTreeMap<QualifiedName, TableInfo>;

/// A lateral subquery giving, for the type OID `{oid}`, the type it stands for with its domains
/// resolved (`base_oid`, `base_kind` = `pg_type.typtype`, `e` for an enum): PostgreSQL computes
/// with a domain's base type, and pgoutput announces a column by its own type's OID.
pub fn base_type_lateral(oid: &str) -> String {
    format!(
        "LEFT JOIN LATERAL (
            WITH RECURSIVE chain(oid, typtype, typbasetype, depth) AS (
                SELECT t.oid, t.typtype, t.typbasetype, 0 FROM pg_type t WHERE t.oid = {oid}
                UNION ALL
                SELECT t.oid, t.typtype, t.typbasetype, c.depth + 1
                  FROM chain c JOIN pg_type t ON t.oid = c.typbasetype
                 WHERE c.typtype = 'd' AND c.depth < 64)
            SELECT chain.oid::int8 AS base_oid, chain.typtype::text AS base_kind
              FROM chain WHERE chain.typtype <> 'd') bt ON true"
    )
}
