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
