//! From the SQL syntax tree to typed stages.
//!
//! Expressions are planned in one of two scopes: before aggregation (they read input columns) and
//! after it (they read group keys and aggregates; a sub-expression equal to a GROUP BY expression
//! becomes a group-key reference, as PostgreSQL's parser does). The expression builder lives in
//! [`super::scalar`] and PostgreSQL's coercion rules in [`super::types`], so evaluation never has
//! to guess a type.

use std::collections::BTreeMap;

use sqlparser::ast::{
    self, FunctionArg, FunctionArgExpr, FunctionArguments, GroupByExpr, SelectItem, SetExpr,
    TableFactor,
};

use super::expr::{ArithOp, Expr};
use super::parse::{qualified, ViewFile};
use super::scalar::{Builder, InputColumn};
use super::types::coerce;
use super::{Catalog, PlanError, QualifiedName, Stage, StageInput, ViewError, ViewPlan};
use crate::pgtime::PgTimeZone;
use crate::value::SqlType;

pub(super) type Res<T> = Result<T, PlanError>;

pub(super) fn unsupported<T>(what: impl Into<String>) -> Res<T> {
    Err(PlanError::Unsupported(what.into()))
}

pub(super) fn invalid<T>(what: impl Into<String>) -> Res<T> {
    Err(PlanError::Invalid(what.into()))
}

/// Plans one view file against the catalog of published source tables and the plans of the
/// views it may read (planned before it, in dependency order).
pub fn plan_view(
    file: &ViewFile,
    catalog: &Catalog,
    views: &BTreeMap<QualifiedName, ViewPlan>,
    tz: &PgTimeZone,
) -> Result<ViewPlan, ViewError> {
    let wrap = |error| ViewError {
        view: file.name.to_string(),
        file: file.path.display().to_string(),
        error,
    };
    let mut stages = Vec::new();
    let source = plan_query(&file.query, catalog, views, tz, &mut stages).map_err(wrap)?;
    let last = stages
        .last()
        .ok_or_else(|| wrap(PlanError::Invalid("empty query".into())))?;
    let mut key_columns = Vec::new();
    for (i, key) in last.keys.iter().enumerate() {
        let pos = last.outputs.iter().position(|o| {
            *o == Expr::GroupKey {
                index: i,
                ty: key.ty(),
            } || (last.topk.is_some() && o == key)
        });
        match pos {
            Some(p) => key_columns.push(p),
            None => {
                return Err(wrap(PlanError::Unsupported(format!(
                    "GROUP BY expression {key} must also appear in the select list (the target is keyed by it)"
                ))))
            }
        }
    }
    let inlined = super::recompute::inline_views(&file.query, views);
    let recompute_sql = inlined
        .as_ref()
        .map_or_else(|| file.query_sql.clone(), |q| q.to_string());
    Ok(ViewPlan {
        name: file.name.clone(),
        file: file.path.clone(),
        query_sql: file.query_sql.clone(),
        recompute: inlined.unwrap_or_else(|| file.query.clone()),
        recompute_sql,
        index_sql: file.index_sql.clone(),
        stages,
        source,
        key_columns,
    })
}

pub(super) fn plan_query(
    q: &ast::Query,
    catalog: &Catalog,
    views: &BTreeMap<QualifiedName, ViewPlan>,
    tz: &PgTimeZone,
    stages: &mut Vec<Stage>,
) -> Res<QualifiedName> {
    if q.with.is_some() {
        return unsupported("WITH (common table expressions)");
    }
    if q.order_by.is_some() {
        return unsupported("ORDER BY in a view");
    }
    if q.limit_clause.is_some() || q.fetch.is_some() {
        return unsupported("LIMIT/OFFSET/FETCH");
    }
    if !q.locks.is_empty() {
        return unsupported("FOR UPDATE/SHARE");
    }
    let select = match q.body.as_ref() {
        SetExpr::Select(s) => s,
        SetExpr::Query(inner) => return plan_query(inner, catalog, views, tz, stages),
        SetExpr::SetOperation { op, .. } => return unsupported(format!("set operation {op}")),
        other => return unsupported(format!("query body {other}")),
    };
    if let Some((ranked_query, ranked)) = super::topk::detect(select) {
        return super::topk::plan(select, ranked_query, ranked, catalog, views, tz, stages);
    }
    if select.distinct.is_some() {
        return unsupported("SELECT DISTINCT (use GROUP BY)");
    }
    if select.having.is_some() && matches!(select.group_by, GroupByExpr::All(_)) {
        return unsupported("GROUP BY ALL");
    }
    if !select.named_window.is_empty() || select.qualify.is_some() {
        return unsupported("WINDOW/QUALIFY");
    }
    let [from] = select.from.as_slice() else {
        return unsupported(if select.from.is_empty() {
            "a query without FROM"
        } else {
            "more than one FROM item (joins)"
        });
    };
    if !from.joins.is_empty() {
        return unsupported("JOIN");
    }
    let (input, columns, source) = match &from.relation {
        TableFactor::Table {
            name, args: None, ..
        } => {
            let qn = qualified(name)?;
            if let Some(view) = views.get(&qn) {
                // A maintained view: its stages become this view's inner stages, so both are
                // maintained from the same changes in the same transaction.
                stages.extend(view.stages.iter().cloned());
                let last = view.last();
                let cols = stage_columns(last);
                (StageInput::Inner, cols, view.source.clone())
            } else {
                let Some(table) = catalog.get(&qn) else {
                    return invalid(format!(
                        "table {qn} is not a published source table (known: {})",
                        known(catalog)
                    ));
                };
                let cols = table.columns.iter().map(InputColumn::of_table).collect();
                (StageInput::Table(qn.clone()), cols, qn)
            }
        }
        TableFactor::Derived {
            lateral: false,
            subquery,
            ..
        } => {
            let source = plan_query(subquery, catalog, views, tz, stages)?;
            let inner = stages
                .last()
                .ok_or_else(|| PlanError::Invalid("empty subquery".into()))?;
            let cols = stage_columns(inner);
            (StageInput::Inner, cols, source)
        }
        other => return unsupported(format!("FROM item {other}")),
    };
    let source_label = match &input {
        StageInput::Table(t) => format!("table {t}"),
        StageInput::Inner => "the subquery".to_string(),
    };
    let mut b = Builder {
        columns,
        source: source_label,
        default_collation: catalog
            .get(&source)
            .and_then(|t| t.default_collation.clone()),
        tz,
        keys: vec![],
        aggs: vec![],
        post: false,
    };
    // Window functions are named before planning: otherwise the select list's other columns
    // would be refused first as "must appear in the GROUP BY clause", hiding the construct.
    let post_exprs = select
        .projection
        .iter()
        .filter_map(|item| match item {
            SelectItem::UnnamedExpr(e) | SelectItem::ExprWithAlias { expr: e, .. } => Some(e),
            _ => None,
        })
        .chain(select.having.as_ref());
    for e in post_exprs {
        if let Some(name) = window_call(e) {
            return unsupported(format!("window function {name}() OVER"));
        }
    }
    let filter = match &select.selection {
        Some(e) => Some(b.boolean(e, "WHERE")?),
        None => None,
    };
    let items: Vec<(&ast::Expr, Option<String>)> = select
        .projection
        .iter()
        .map(|item| match item {
            SelectItem::UnnamedExpr(e) => Ok((e, None)),
            SelectItem::ExprWithAlias { expr, alias } => Ok((expr, Some(alias.value.clone()))),
            other => unsupported(format!("select item {other} (name the columns)")),
        })
        .collect::<Res<_>>()?;
    let group_exprs = match &select.group_by {
        GroupByExpr::Expressions(exprs, mods) if mods.is_empty() => exprs.clone(),
        other => return unsupported(format!("{other}")),
    };
    for g in &group_exprs {
        let resolved = resolve_group_item(g, &items, &b)?;
        let key = b.build(resolved)?;
        if !b.keys.contains(&key) {
            b.keys.push(key);
        }
    }
    b.post = true;
    let mut outputs = Vec::new();
    let mut output_names = Vec::new();
    for (e, alias) in &items {
        let out = b.build(e)?;
        // PostgreSQL gives an untyped literal in the select list ('x', NULL) the type text.
        let out = if out.ty() == SqlType::Unknown {
            coerce(out, SqlType::Text, tz)?
        } else {
            out
        };
        outputs.push(out);
        output_names.push(alias.clone().unwrap_or_else(|| default_name(e)));
    }
    let having = match &select.having {
        Some(h) => Some(b.boolean(h, "HAVING")?),
        None => None,
    };
    if b.keys.is_empty() && b.aggs.is_empty() {
        return unsupported("a query without GROUP BY or aggregates (a view must aggregate)");
    }
    let mut temporal = Vec::new();
    let pre: Vec<&Expr> = filter
        .iter()
        .chain(&b.keys)
        .chain(b.aggs.iter().flat_map(|a| a.arg.iter().chain(&a.filter)))
        .collect();
    collect_temporal(pre, &mut temporal)?;
    // After aggregation (HAVING, the select list) the same rule holds; a group is then
    // revisited when one of these flips for its key and aggregates.
    let mut group_temporal = Vec::new();
    collect_temporal(having.iter().chain(&outputs), &mut group_temporal)?;
    let output_collations = outputs.iter().map(|o| b.order_collation(o)).collect();
    stages.push(Stage {
        input,
        filter,
        output_collations,
        keys: b.keys,
        aggs: b.aggs,
        having,
        outputs,
        output_names,
        temporal,
        group_temporal,
        topk: None,
    });
    Ok(source)
}

/// The outputs of a stage as the input columns of the next.
fn stage_columns(stage: &Stage) -> Vec<InputColumn> {
    stage
        .outputs
        .iter()
        .zip(&stage.output_names)
        .enumerate()
        .map(|(i, (e, n))| {
            InputColumn::of_stage(n, e.ty(), stage.output_collations.get(i).cloned().flatten())
        })
        .collect()
}

fn known(catalog: &Catalog) -> String {
    catalog
        .keys()
        .map(|k| k.to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

/// The direct sub-expressions of the SQL constructs the planner supports (function arguments,
/// FILTER and WITHIN GROUP included). Other constructs have none here: planning refuses them.
fn ast_children(e: &ast::Expr) -> Vec<&ast::Expr> {
    use ast::Expr as A;
    match e {
        A::Function(f) => {
            let mut args: Vec<&ast::Expr> = match &f.args {
                FunctionArguments::List(list) => list
                    .args
                    .iter()
                    .filter_map(|a| match a {
                        FunctionArg::Unnamed(FunctionArgExpr::Expr(x)) => Some(x),
                        _ => None,
                    })
                    .collect(),
                _ => vec![],
            };
            args.extend(f.filter.as_deref());
            args.extend(f.within_group.iter().map(|o| &o.expr));
            args
        }
        A::BinaryOp { left, right, .. } => vec![left, right],
        A::UnaryOp { expr, .. }
        | A::Nested(expr)
        | A::IsNull(expr)
        | A::IsNotNull(expr)
        | A::Cast { expr, .. } => vec![expr],
        A::InList { expr, list, .. } => std::iter::once(&**expr).chain(list).collect(),
        A::Between {
            expr, low, high, ..
        } => vec![expr, low, high],
        A::Case {
            operand,
            conditions,
            else_result,
            ..
        } => operand
            .as_deref()
            .into_iter()
            .chain(conditions.iter().flat_map(|c| [&c.condition, &c.result]))
            .chain(else_result.as_deref())
            .collect(),
        _ => vec![],
    }
}

/// The first function call in `e` (outermost first) that satisfies `pred`.
fn find_call<'e>(
    e: &'e ast::Expr,
    pred: &dyn Fn(&ast::Function) -> bool,
) -> Option<&'e ast::Function> {
    if let ast::Expr::Function(f) = e {
        if pred(f) {
            return Some(f);
        }
    }
    ast_children(e).into_iter().find_map(|c| find_call(c, pred))
}

/// The name of the first window function call (`f(...) OVER ...`) in `e`, if any.
fn window_call(e: &ast::Expr) -> Option<String> {
    find_call(e, &|f| f.over.is_some()).map(|f| f.name.to_string().to_lowercase())
}

/// GROUP BY items may be ordinals or output names (PostgreSQL prefers an input column of that
/// name over an output alias).
fn resolve_group_item<'a>(
    g: &'a ast::Expr,
    items: &[(&'a ast::Expr, Option<String>)],
    b: &Builder<'_>,
) -> Res<&'a ast::Expr> {
    match g {
        ast::Expr::Value(v) => match &v.value {
            ast::Value::Number(n, _) => {
                let idx: usize = n
                    .parse()
                    .map_err(|_| PlanError::Invalid(format!("GROUP BY position {n}")))?;
                match items.get(idx.wrapping_sub(1)) {
                    Some((e, _)) => Ok(e),
                    None => invalid(format!("GROUP BY position {idx} is not in select list")),
                }
            }
            _ => invalid(format!("GROUP BY {g}")),
        },
        ast::Expr::Identifier(id) if b.column(&ident_name(id)).is_none() => {
            let name = ident_name(id);
            match items
                .iter()
                .find(|(_, alias)| alias.as_deref() == Some(name.as_str()))
            {
                Some((e, _)) => Ok(e),
                None => Ok(g),
            }
        }
        _ => Ok(g),
    }
}

pub(super) fn ident_name(id: &ast::Ident) -> String {
    if id.quote_style.is_some() {
        id.value.clone()
    } else {
        id.value.to_lowercase()
    }
}

/// PostgreSQL's name for an unnamed select item.
fn default_name(e: &ast::Expr) -> String {
    match e {
        ast::Expr::Identifier(id) => ident_name(id),
        ast::Expr::CompoundIdentifier(ids) => ids.last().map(ident_name).unwrap_or_default(),
        ast::Expr::Function(f) => f
            .name
            .0
            .last()
            .map(|p| p.to_string().to_lowercase())
            .unwrap_or_default(),
        ast::Expr::Cast { expr, .. } | ast::Expr::Nested(expr) => default_name(expr),
        ast::Expr::Case { .. } => "case".into(),
        _ => "?column?".into(),
    }
}

/// Checks each expression's use of CURRENT_DATE and adds its date comparisons to `out` (once
/// each): the conditions whose flips at midnight the maintainer revisits.
fn collect_temporal<'e>(exprs: impl IntoIterator<Item = &'e Expr>, out: &mut Vec<Expr>) -> Res<()> {
    for e in exprs {
        check_date_use(e)?;
        let mut atoms = Vec::new();
        e.temporal_atoms(&mut atoms);
        for a in atoms {
            if !out.contains(a) {
                out.push(a.clone());
            }
        }
    }
    Ok(())
}

/// CURRENT_DATE may appear only in comparisons, on one side, under operators that keep that side
/// monotonic in the date, so each comparison flips at most once per direction as days pass.
fn check_date_use(e: &Expr) -> Res<()> {
    match e {
        Expr::Cmp { left, right, .. } if e.uses_current_date() => {
            if left.uses_current_date() && right.uses_current_date() {
                return unsupported(format!("CURRENT_DATE on both sides of {e}"));
            }
            let side = if left.uses_current_date() {
                left
            } else {
                right
            };
            if monotone_in_date(side) {
                Ok(())
            } else {
                unsupported(format!(
                    "CURRENT_DATE inside {side} (only +/- intervals or days, casts and date_trunc)"
                ))
            }
        }
        Expr::CurrentDate => unsupported("CURRENT_DATE outside a comparison"),
        other => other.children().into_iter().try_for_each(check_date_use),
    }
}

fn monotone_in_date(e: &Expr) -> bool {
    match e {
        Expr::CurrentDate => true,
        Expr::Arith {
            op: ArithOp::Add | ArithOp::Sub,
            left,
            right,
            ..
        } => match (left.uses_current_date(), right.uses_current_date()) {
            (true, false) => monotone_in_date(left),
            (false, true) => monotone_in_date(right),
            _ => false,
        },
        Expr::Cast { expr, .. } | Expr::DateTrunc { expr, .. } => monotone_in_date(expr),
        other => !other.uses_current_date(),
    }
}

pub(super) const KNOWN_UNSUPPORTED_AGGS: &[&str] = &[
    "array_agg",
    "string_agg",
    "bool_and",
    "bool_or",
    "every",
    "stddev",
    "stddev_pop",
    "stddev_samp",
    "variance",
    "var_pop",
    "var_samp",
    "json_agg",
    "jsonb_agg",
    "mode",
    "bit_and",
    "bit_or",
    "corr",
    "covar_pop",
    "regr_count",
];

pub(super) fn is_aggregate_name(name: &str) -> bool {
    matches!(
        name,
        "count" | "sum" | "avg" | "min" | "max" | "percentile_cont" | "percentile_disc"
    )
}

/// Whether `e` calls an aggregate (read from the syntax tree: a string literal such as
/// `'max(x)'` is not a call).
pub(super) fn contains_aggregate(e: &ast::Expr) -> bool {
    find_call(e, &|f| {
        let name = f.name.to_string().to_lowercase();
        is_aggregate_name(&name) || KNOWN_UNSUPPORTED_AGGS.contains(&name.as_str())
    })
    .is_some()
}

/// The tables a query reads (through nested FROM subqueries), for loading their catalog entries.
pub fn source_tables(q: &ast::Query, out: &mut Vec<QualifiedName>) {
    let select = match q.body.as_ref() {
        SetExpr::Select(s) => s,
        SetExpr::Query(inner) => return source_tables(inner, out),
        _ => return,
    };
    for from in &select.from {
        match &from.relation {
            TableFactor::Table { name, .. } => {
                if let Ok(qn) = qualified(name) {
                    if !out.contains(&qn) {
                        out.push(qn);
                    }
                }
            }
            TableFactor::Derived { subquery, .. } => source_tables(subquery, out),
            _ => {}
        }
    }
}

#[cfg(test)]
#[path = "build_tests.rs"]
mod tests;
