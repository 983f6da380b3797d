//! The SQL a reconcile evaluates for a view: its query with every maintained view it reads
//! replaced by that view's own query (recursively), as a derived table under the view's name.
//!
//! Why: a reconcile evaluates the views in a snapshot at C taken while the engine's targets
//! still reflect an earlier position (it catches up to C after the snapshot). A view over a
//! view that read its input's *target* there would be compared against that target's older
//! rows, and report differences where the engine is right. Evaluated from the source tables
//! only, the recomputation is exactly "the view at C", as the engine's inlined stages are.

use std::collections::BTreeMap;
use std::ops::ControlFlow;

use sqlparser::ast::{Ident, Query, TableAlias, TableFactor, VisitMut, VisitorMut};

use super::parse::qualified;
use super::{QualifiedName, ViewPlan};

/// `query` with the maintained views in `views` it reads inlined, or `None` when it reads
/// none of them (then its own text is the recomputation).
pub fn inline_views(query: &Query, views: &BTreeMap<QualifiedName, ViewPlan>) -> Option<Query> {
    struct Inline<'a> {
        views: &'a BTreeMap<QualifiedName, ViewPlan>,
        inlined: bool,
    }
    impl VisitorMut for Inline<'_> {
        type Break = ();
        fn post_visit_table_factor(&mut self, factor: &mut TableFactor) -> ControlFlow<()> {
            let TableFactor::Table {
                name,
                alias,
                args: None,
                ..
            } = factor
            else {
                return ControlFlow::Continue(());
            };
            let Some(view) = qualified(name).ok().and_then(|n| self.views.get(&n)) else {
                return ControlFlow::Continue(());
            };
            // Column references may name the view (`mv.col`): the derived table keeps its name.
            let alias = alias.take().unwrap_or_else(|| TableAlias {
                name: Ident::new(view.name.name.clone()),
                columns: vec![],
            });
            *factor = TableFactor::Derived {
                lateral: false,
                subquery: Box::new(view.recompute.clone()),
                alias: Some(alias),
            };
            self.inlined = true;
            ControlFlow::Continue(())
        }
    }
    let mut inlined = query.clone();
    let mut visitor = Inline {
        views,
        inlined: false,
    };
    let _ = inlined.visit(&mut visitor);
    visitor.inlined.then_some(inlined)
}

#[cfg(test)]
mod tests {
    use crate::plan::fixtures::classified_with;

    /// A view over a view is recomputed from the source table, never from the other target;
    /// a view over tables keeps its own text.
    #[test]
    fn a_view_over_a_view_is_recomputed_from_its_sources() {
        let plans = classified_with(
            "schema/views/weekly.sql",
            "CREATE MATERIALIZED VIEW analytics.mv_weekly AS
             SELECT workspace_id, SUM(total_runs) AS runs FROM analytics.mv_agent_performance
              WHERE run_date >= CURRENT_DATE - 7 GROUP BY workspace_id;",
        )
        .plans;
        let find = |name: &str| {
            plans
                .iter()
                .find(|p| p.name.name == name)
                .unwrap_or_else(|| panic!("{name} planned"))
        };
        let sql = find("mv_weekly").recompute_sql.to_lowercase();
        assert!(!sql.contains("analytics.mv_agent_performance"), "{sql}");
        assert!(sql.contains("from public.agent_runs"), "{sql}");
        assert!(sql.contains(") as mv_agent_performance"), "{sql}");
        let inner = find("mv_agent_performance");
        assert_eq!(inner.recompute_sql, inner.query_sql);
    }
}
