//! Top-k per group: `ROW_NUMBER() OVER (PARTITION BY ... ORDER BY ...)` over an aggregate,
//! filtered to `rank <= k` by the enclosing query.
//!
//! The aggregate underneath is planned as usual, with the window's ORDER BY expressions added as
//! hidden outputs. A top-k stage then keeps, per partition, the multiset of the aggregate's rows
//! and writes the partition's first k rows: a change to one agent's count re-ranks only its own
//! workspace. The target is keyed by the partition columns (a changed partition is rewritten
//! whole: at most k rows), which the enclosing query must select.

use std::collections::BTreeMap;

use sqlparser::ast::{self, BinaryOperator, Select, SelectItem, SetExpr, TableFactor};

use super::build::{plan_query, Res};
use super::expr::Expr;
use super::{Catalog, PlanError, QualifiedName, Stage, StageInput, ViewPlan};
use crate::pgtime::PgTimeZone;
use crate::value::{SqlType, Value};

/// The ranking of a top-k stage.
#[derive(Clone, Debug, PartialEq)]
pub struct TopK {
    /// Input columns holding the partition key (also the stage's group key).
    pub partition: Vec<usize>,
    /// Input columns to sort by: (column, descending, nulls first).
    pub order: Vec<(usize, bool, bool)>,
    pub limit: i64,
    /// Per output column: an input column, or `None` for the row number.
    pub outputs: Vec<Option<usize>>,
}

fn unsupported<T>(what: impl Into<String>) -> Res<T> {
    Err(PlanError::Unsupported(what.into()))
}

/// The ranked subquery and its window call, if `select` has the top-k shape.
pub fn detect(select: &Select) -> Option<(&ast::Query, &Select)> {
    let [from] = select.from.as_slice() else {
        return None;
    };
    let TableFactor::Derived { subquery, .. } = &from.relation else {
        return None;
    };
    let SetExpr::Select(inner) = subquery.body.as_ref() else {
        return None;
    };
    let has_window = inner.projection.iter().any(|item| {
        let e = match item {
            SelectItem::UnnamedExpr(e) | SelectItem::ExprWithAlias { expr: e, .. } => e,
            _ => return false,
        };
        matches!(e, ast::Expr::Function(f) if f.over.is_some())
    });
    has_window.then_some((subquery.as_ref(), inner.as_ref()))
}

fn name_of(id: &ast::Ident) -> String {
    if id.quote_style.is_some() {
        id.value.clone()
    } else {
        id.value.to_lowercase()
    }
}

/// `rank <= N`, `rank < N`, `N >= rank` or `N > rank` on the rank column: the limit N.
fn limit_of(e: &ast::Expr, rank: &str) -> Option<i64> {
    let ast::Expr::BinaryOp { left, op, right } = e else {
        return None;
    };
    let number = |x: &ast::Expr| match x {
        ast::Expr::Value(v) => match &v.value {
            ast::Value::Number(n, _) => n.parse::<i64>().ok(),
            _ => None,
        },
        _ => None,
    };
    let is_rank = |x: &ast::Expr| matches!(x, ast::Expr::Identifier(id) if name_of(id) == rank);
    match (is_rank(left), op, is_rank(right)) {
        (true, BinaryOperator::LtEq, false) => number(right),
        (true, BinaryOperator::Lt, false) => number(right).map(|n| n - 1),
        (false, BinaryOperator::GtEq, true) => number(left),
        (false, BinaryOperator::Gt, true) => number(left).map(|n| n - 1),
        _ => None,
    }
}

/// Plans `SELECT cols FROM (SELECT ..., ROW_NUMBER() OVER (...) AS rank ... GROUP BY ...) r
/// WHERE rank <= k`.
pub fn plan(
    outer: &Select,
    ranked_query: &ast::Query,
    ranked: &Select,
    catalog: &Catalog,
    views: &BTreeMap<QualifiedName, ViewPlan>,
    tz: &PgTimeZone,
    stages: &mut Vec<Stage>,
) -> Res<QualifiedName> {
    if outer.group_by != ast::GroupByExpr::Expressions(vec![], vec![])
        || outer.having.is_some()
        || outer.distinct.is_some()
    {
        return unsupported(
            "GROUP BY, HAVING or DISTINCT around a ranking (top-k views select ranked rows only)",
        );
    }
    // Split the ranked select into its window item and the rest.
    let mut rest = ranked.clone();
    let mut window: Option<(ast::Function, String)> = None;
    rest.projection.clear();
    for item in &ranked.projection {
        match item {
            SelectItem::ExprWithAlias {
                expr: ast::Expr::Function(f),
                alias,
            } if f.over.is_some() => {
                if window.is_some() {
                    return unsupported("more than one window function");
                }
                window = Some((f.clone(), name_of(alias)));
            }
            SelectItem::UnnamedExpr(ast::Expr::Function(f)) if f.over.is_some() => {
                return unsupported(
                    "an unnamed window function (name it: ROW_NUMBER() OVER (...) AS rank)",
                );
            }
            other => rest.projection.push(other.clone()),
        }
    }
    let Some((func, rank_name)) = window else {
        return unsupported("window function");
    };
    let fname = func.name.to_string().to_lowercase();
    if fname != "row_number" {
        return unsupported(format!(
            "window function {fname}() (only ROW_NUMBER() for top-k)"
        ));
    }
    let spec = match &func.over {
        Some(ast::WindowType::WindowSpec(spec)) => spec,
        _ => return unsupported("a named window"),
    };
    if spec.window_frame.is_some() {
        return unsupported("a window frame");
    }
    let Some(limit) = outer
        .selection
        .as_ref()
        .and_then(|w| limit_of(w, &rank_name))
    else {
        return unsupported(format!(
            "a ranking without `WHERE {rank_name} <= k` in the enclosing query"
        ));
    };
    let visible = rest.projection.len();
    for (i, o) in spec.order_by.iter().enumerate() {
        rest.projection.push(SelectItem::ExprWithAlias {
            expr: o.expr.clone(),
            alias: ast::Ident::new(format!("dmv_order_{i}")),
        });
    }
    let mut query = ranked_query.clone();
    *query.body = SetExpr::Select(Box::new(rest));
    let source = plan_query(&query, catalog, views, tz, stages)?;
    let inner = stages
        .last()
        .ok_or_else(|| PlanError::Invalid("empty ranked query".into()))?;
    let mut partition = Vec::new();
    for p in &spec.partition_by {
        let want = match p {
            ast::Expr::Identifier(id) => name_of(id),
            other => {
                return unsupported(format!(
                    "PARTITION BY {other} (name a column of the ranked query)"
                ))
            }
        };
        match inner.output_names[..visible]
            .iter()
            .position(|n| *n == want)
        {
            Some(i) => partition.push(i),
            None => {
                return unsupported(format!(
                    "PARTITION BY {want}: it must be a column of the ranked query"
                ))
            }
        }
    }
    let order: Vec<(usize, bool, bool)> = spec
        .order_by
        .iter()
        .enumerate()
        .map(|(i, o)| {
            let desc = o.options.asc == Some(false);
            (visible + i, desc, o.options.nulls_first.unwrap_or(desc))
        })
        .collect();
    // The ranking orders by these outputs: only where the engine's order is PostgreSQL's.
    for ((col, _, _), o) in order.iter().zip(&spec.order_by) {
        if inner.outputs[*col].ty() == SqlType::Enum {
            return unsupported(format!(
                "ROW_NUMBER() OVER (... ORDER BY {}) orders an enum value: PostgreSQL orders an enum by its declared order, which deltamv does not maintain (cast it ::text to order the labels as text)",
                o.expr
            ));
        }
        if let Some(collation) = inner.output_collations.get(*col).cloned().flatten() {
            return unsupported(format!(
                "ROW_NUMBER() OVER (... ORDER BY {}) orders text under {collation}, which deltamv does not implement (it orders text by bytes, as the C collation does)",
                o.expr
            ));
        }
    }
    let mut outputs = Vec::new();
    let mut output_collations = Vec::new();
    let mut output_exprs = Vec::new();
    let mut output_names = Vec::new();
    for item in &outer.projection {
        let (id, alias) = match item {
            SelectItem::UnnamedExpr(ast::Expr::Identifier(id)) => (id, None),
            SelectItem::ExprWithAlias {
                expr: ast::Expr::Identifier(id),
                alias,
            } => (id, Some(name_of(alias))),
            other => {
                return unsupported(format!(
                    "select item {other} around a ranking (select columns of the ranked query)"
                ))
            }
        };
        let name = name_of(id);
        if name == rank_name {
            outputs.push(None);
            output_collations.push(None);
            output_exprs.push(Expr::Literal {
                value: Value::Null,
                ty: SqlType::Int8,
            });
        } else {
            let Some(i) = inner.output_names[..visible]
                .iter()
                .position(|n| *n == name)
            else {
                return Err(PlanError::Invalid(format!(
                    "column \"{name}\" does not exist"
                )));
            };
            outputs.push(Some(i));
            output_collations.push(inner.output_collations.get(i).cloned().flatten());
            output_exprs.push(Expr::Column {
                index: i,
                name: name.clone(),
                ty: inner.outputs[i].ty(),
            });
        }
        output_names.push(alias.unwrap_or(name));
    }
    let keys: Vec<Expr> = partition
        .iter()
        .map(|i| Expr::Column {
            index: *i,
            name: inner.output_names[*i].clone(),
            ty: inner.outputs[*i].ty(),
        })
        .collect();
    stages.push(Stage {
        input: StageInput::Inner,
        filter: None,
        keys,
        aggs: vec![],
        having: None,
        outputs: output_exprs,
        output_names,
        temporal: vec![],
        group_temporal: vec![],
        output_collations,
        topk: Some(TopK {
            partition,
            order,
            limit,
            outputs,
        }),
    });
    Ok(source)
}
