//! The planner: view SQL in, a small typed maintenance plan out.
//!
//! A view is compiled into a chain of [`Stage`]s, innermost first: the first reads a published
//! source table, each later one reads the output rows of the stage before it (aggregate over
//! aggregate). Each stage is filter -> group key -> aggregates -> HAVING -> output expressions, the
//! only shape whose deltas can be maintained exactly from per-group state. Everything outside that
//! shape is refused with an error naming the construct, the view and its file ([`PlanError`]),
//! before anything is created. PostgreSQL stays the authority on result types: `init` compares the
//! types inferred here with the columns PostgreSQL gives the view's query and refuses on mismatch.
//!
//! Which views are incremental, fallback or broken is decided in [`views`]; the printout of a
//! plan (`deltamv explain`) is [`explain`].

mod build;
pub mod deps;
pub mod explain;
pub mod expr;
#[cfg(test)]
pub(crate) mod fixtures;
pub mod parse;
mod recompute;
mod scalar;
pub mod topk;
mod types;
pub mod views;

use std::path::PathBuf;

use thiserror::Error;

pub use build::{plan_view, source_tables};
use expr::Expr;

use crate::pg::{Catalog, QualifiedName};
use crate::value::SqlType;

/// Aggregate functions the operators maintain.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum AggFunc {
    CountStar,
    Count,
    CountDistinct,
    Sum,
    Avg,
    Min,
    Max,
    PercentileCont(f64),
    PercentileDisc(f64),
}

/// One aggregate call of a stage.
#[derive(Clone, Debug, PartialEq)]
pub struct AggCall {
    pub func: AggFunc,
    /// The argument (absent for COUNT(*)).
    pub arg: Option<Expr>,
    pub filter: Option<Expr>,
    /// The result type PostgreSQL gives this aggregate.
    pub ty: SqlType,
}

/// Where a stage's rows come from.
#[derive(Clone, Debug, PartialEq)]
pub enum StageInput {
    Table(QualifiedName),
    /// The output rows of the previous stage.
    Inner,
}

/// filter -> group -> aggregate -> having -> project.
#[derive(Clone, Debug, PartialEq)]
pub struct Stage {
    pub input: StageInput,
    pub filter: Option<Expr>,
    pub keys: Vec<Expr>,
    pub aggs: Vec<AggCall>,
    pub having: Option<Expr>,
    pub outputs: Vec<Expr>,
    pub output_names: Vec<String>,
    /// Comparisons whose truth changes with CURRENT_DATE in what is evaluated on the stage's
    /// input rows (WHERE, GROUP BY, aggregate arguments and FILTERs), at any depth.
    pub temporal: Vec<Expr>,
    /// The same in what is evaluated on its groups (HAVING, the select list).
    pub group_temporal: Vec<Expr>,
    /// A ranking stage (its keys are the partition); absent for aggregate stages.
    pub topk: Option<topk::TopK>,
    /// Per output: the collation ordering it if it is text not ordered by bytes (a later stage
    /// that orders it must refuse).
    pub output_collations: Vec<Option<String>>,
}

/// The full plan of one maintained view.
#[derive(Clone, Debug)]
pub struct ViewPlan {
    pub name: QualifiedName,
    pub file: PathBuf,
    /// The view's query text, as written (used to create the target).
    pub query_sql: String,
    /// The query with the maintained views it reads inlined (see [`recompute`]).
    pub recompute: sqlparser::ast::Query,
    /// What a reconcile evaluates: `recompute` as text, or `query_sql` when it reads no view.
    pub recompute_sql: String,
    /// `CREATE [UNIQUE] INDEX` statements declared on the view.
    pub index_sql: Vec<String>,
    /// Innermost first.
    pub stages: Vec<Stage>,
    pub source: QualifiedName,
    /// Output columns of the last stage that hold its group key, in key order.
    pub key_columns: Vec<usize>,
}

impl ViewPlan {
    pub fn last(&self) -> &Stage {
        &self.stages[self.stages.len() - 1]
    }

    pub fn uses_current_date(&self) -> bool {
        self.stages
            .iter()
            .any(|s| !s.temporal.is_empty() || !s.group_temporal.is_empty())
    }

    /// The target column holding a top-k view's rank (its ROW_NUMBER), if the view selects it.
    pub fn rank_column(&self) -> Option<usize> {
        let topk = self.last().topk.as_ref()?;
        topk.outputs.iter().position(Option::is_none)
    }

    pub fn output_types(&self) -> Vec<SqlType> {
        self.last().outputs.iter().map(|e| e.ty()).collect()
    }
}

/// A view outside the incremental language, kept as a PostgreSQL materialized view and refreshed
/// concurrently by the engine (see [`crate::refresher`]). Printed by [`explain`].
#[derive(Clone, Debug)]
pub struct FallbackPlan {
    pub name: QualifiedName,
    pub file: PathBuf,
    pub query_sql: String,
    pub index_sql: Vec<String>,
    /// Why it is not maintained incrementally.
    pub reason: String,
    /// Every relation its query names (tables and views).
    pub reads: Vec<QualifiedName>,
}

/// Every relation a query names (FROM, JOINs, subqueries anywhere), for fallback views.
pub fn relations(q: &sqlparser::ast::Query) -> Vec<QualifiedName> {
    let mut out = Vec::new();
    let _ = sqlparser::ast::visit_relations(q, |name| {
        if let Ok(qn) = parse::qualified(name) {
            if !out.contains(&qn) {
                out.push(qn);
            }
        }
        std::ops::ControlFlow::<()>::Continue(())
    });
    out
}

/// Why a view cannot be planned.
#[derive(Debug, Error, Clone, PartialEq)]
pub enum PlanError {
    #[error("unsupported: {0}")]
    Unsupported(String),
    #[error("invalid: {0}")]
    Invalid(String),
}

/// A planning error with the view and file it belongs to.
#[derive(Debug, Error)]
#[error("view {view} ({file}): {error}")]
pub struct ViewError {
    pub view: String,
    pub file: String,
    pub error: PlanError,
}
