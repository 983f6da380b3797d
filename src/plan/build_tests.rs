//! Unit tests for `build.rs`, kept apart so the planner module stays readable.

use sqlparser::dialect::PostgreSqlDialect;
use sqlparser::parser::Parser;

use super::*;

fn expr(sql: &str) -> ast::Expr {
    Parser::new(&PostgreSqlDialect {})
        .try_with_sql(sql)
        .and_then(|mut p| p.parse_expr())
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
}

#[test]
fn aggregate_and_window_calls_are_read_from_the_syntax_tree() {
    assert!(!contains_aggregate(&expr("COALESCE(error_code, 'max(x)')")));
    assert!(contains_aggregate(&expr(
        "100.0 * COUNT(*) FILTER (WHERE status = 'completed') / COUNT(*)"
    )));
    assert!(contains_aggregate(&expr(
        "CASE WHEN x > 0 THEN -SUM(y) END"
    )));
    assert_eq!(
        window_call(&expr("COALESCE(rank() OVER (ORDER BY x), 0)")),
        Some("rank".to_string())
    );
    assert_eq!(window_call(&expr("COUNT(*) + 1")), None);
}

fn runs_catalog() -> Catalog {
    let col = |name: &str, type_name: &str, ty: SqlType| {
        crate::pg::ColumnInfo::plain(name, ty, type_name)
    };
    let runs = crate::pg::TableInfo {
        name: QualifiedName::new("public", "agent_runs"),
        columns: vec![
            col("id", "bigint", SqlType::Int8),
            col("agent_id", "uuid", SqlType::Uuid),
            col("workspace_id", "uuid", SqlType::Uuid),
            col(
                "started_at",
                "timestamp with time zone",
                SqlType::TimestampTz,
            ),
        ],
        key: vec![0],
        default_collation: None,
    };
    [(runs.name.clone(), runs)].into_iter().collect()
}

fn plan_sql(query: &str) -> Result<ViewPlan, ViewError> {
    plan_sql_over(query, &BTreeMap::new())
}

fn plan_sql_over(
    query: &str,
    views: &BTreeMap<QualifiedName, ViewPlan>,
) -> Result<ViewPlan, ViewError> {
    let text = format!("CREATE MATERIALIZED VIEW a.v AS {query};");
    let file = super::super::parse::parse_view_file(std::path::Path::new("v.sql"), &text)?;
    plan_view(&file, &runs_catalog(), views, &PgTimeZone::UTC)
}

const PER_AGENT: &str =
    "SELECT workspace_id, agent_id, MAX(DATE(started_at)) AS last_day, COUNT(*) AS runs
    FROM public.agent_runs GROUP BY workspace_id, agent_id";

#[test]
fn current_date_conditions_plan_at_outer_stages() {
    let plan = plan_sql(&format!(
        "SELECT workspace_id, COUNT(*) FILTER (WHERE last_day >= CURRENT_DATE - 7) AS active,
                CASE WHEN MAX(last_day) = CURRENT_DATE - 1 THEN 'y' ELSE 'n' END AS seen
           FROM ({PER_AGENT} HAVING MAX(started_at) >= CURRENT_DATE - 30) a
          WHERE last_day < CURRENT_DATE
          GROUP BY workspace_id HAVING MIN(last_day) >= CURRENT_DATE - 10"
    ))
    .unwrap_or_else(|e| panic!("{e}"));
    let [inner, outer] = plan.stages.as_slice() else {
        panic!("two stages: {plan}")
    };
    assert!(inner.temporal.is_empty());
    assert_eq!(inner.group_temporal.len(), 1, "the inner HAVING");
    assert_eq!(outer.temporal.len(), 2, "the outer WHERE and FILTER");
    assert_eq!(outer.group_temporal.len(), 2, "the outer HAVING and CASE");
    assert!(plan.uses_current_date());
    let explained = plan.to_string();
    assert!(
        explained.contains("groups revisited") && explained.contains("input rows revisited"),
        "{explained}"
    );

    // The same conditions in a view over that view.
    let inner = plan_sql(PER_AGENT).unwrap_or_else(|e| panic!("{e}"));
    let name = QualifiedName::new("a", "per_agent");
    let views = [(name, inner)].into_iter().collect();
    let plan = plan_sql_over(
        "SELECT workspace_id, SUM(runs) FILTER (WHERE last_day = CURRENT_DATE - 1) AS yesterday
           FROM a.per_agent GROUP BY workspace_id HAVING MAX(last_day) >= CURRENT_DATE - 3",
        &views,
    )
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(plan.stages.len(), 2);
    assert_eq!(plan.stages[1].temporal.len(), 1);
    assert_eq!(plan.stages[1].group_temporal.len(), 1);
}

#[test]
fn current_date_outside_monotone_comparisons_is_refused_at_every_stage() {
    for (query, words) in [
        (
            format!("SELECT workspace_id, CURRENT_DATE - 1 AS d, COUNT(*) AS n FROM ({PER_AGENT}) a GROUP BY workspace_id"),
            "CURRENT_DATE outside a comparison",
        ),
        (
            format!("SELECT workspace_id, COUNT(*) AS n FROM ({PER_AGENT}) a GROUP BY workspace_id HAVING MAX(last_day) + (CURRENT_DATE - DATE '2026-01-01') > CURRENT_DATE"),
            "CURRENT_DATE on both sides",
        ),
    ] {
        match plan_sql(&query) {
            Ok(plan) => panic!("planned {query}:\n{plan}"),
            Err(e) => assert!(e.to_string().contains(words), "{query}: {e}"),
        }
    }
}
