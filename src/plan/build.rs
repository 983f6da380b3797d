//! From the SQL syntax tree to typed stages.
//!
//! Expressions are planned in one of two scopes: before aggregation (they read input columns) and
//! after it (they read group keys and aggregates; a sub-expression equal to a GROUP BY expression
//! becomes a group-key reference, as PostgreSQL's parser does). Implicit coercions are resolved
//! here with PostgreSQL's rules for the supported types, so evaluation never has to.

use std::collections::BTreeMap;

use sqlparser::ast::{
    self, BinaryOperator, DuplicateTreatment, FunctionArg, FunctionArgExpr, FunctionArguments,
    GroupByExpr, SelectItem, SetExpr, TableFactor, UnaryOperator,
};

use super::expr::{ArithOp, CmpOp, EvalCtx, Expr, Inputs};
use super::parse::{qualified, ViewFile};
use super::{
    AggCall, AggFunc, Catalog, PlanError, QualifiedName, Stage, StageInput, ViewError, ViewPlan,
};
use crate::pgtime::{self, PgTimeZone};
use crate::value::{SqlType, Value};

pub(super) type Res<T> = Result<T, PlanError>;

fn unsupported<T>(what: impl Into<String>) -> Res<T> {
    Err(PlanError::Unsupported(what.into()))
}

fn invalid<T>(what: impl Into<String>) -> Res<T> {
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
    for (depth, stage) in stages.iter().enumerate() {
        let post_uses_date = stage
            .outputs
            .iter()
            .chain(&stage.having)
            .any(|e| e.uses_current_date());
        if post_uses_date || (depth > 0 && !stage.temporal.is_empty()) {
            return Err(wrap(PlanError::Unsupported(
                "CURRENT_DATE outside the innermost query's WHERE, CASE, FILTER or GROUP BY".into(),
            )));
        }
    }
    Ok(ViewPlan {
        name: file.name.clone(),
        file: file.path.clone(),
        query_sql: file.query_sql.clone(),
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
                let cols = last
                    .outputs
                    .iter()
                    .zip(&last.output_names)
                    .map(|(e, n)| (n.clone(), Some(e.ty()), e.ty().pg_name().to_string()))
                    .collect();
                (StageInput::Inner, cols, view.source.clone())
            } else {
                let Some(table) = catalog.get(&qn) else {
                    return invalid(format!(
                        "table {qn} is not a published source table (known: {})",
                        known(catalog)
                    ));
                };
                let cols = table
                    .columns
                    .iter()
                    .map(|c| (c.name.clone(), c.ty, c.type_name.clone()))
                    .collect();
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
            let cols = inner
                .outputs
                .iter()
                .zip(&inner.output_names)
                .map(|(e, n)| (n.clone(), Some(e.ty()), e.ty().pg_name().to_string()))
                .collect();
            (StageInput::Inner, cols, source)
        }
        other => return unsupported(format!("FROM item {other}")),
    };
    let mut b = Builder {
        columns,
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
    for e in pre {
        check_date_use(e)?;
        let mut atoms = Vec::new();
        e.temporal_atoms(&mut atoms);
        for a in atoms {
            if !temporal.contains(a) {
                temporal.push(a.clone());
            }
        }
    }
    stages.push(Stage {
        input,
        filter,
        keys: b.keys,
        aggs: b.aggs,
        having,
        outputs,
        output_names,
        temporal,
        topk: None,
    });
    Ok(source)
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

fn ident_name(id: &ast::Ident) -> String {
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

struct Builder<'a> {
    columns: Vec<(String, Option<SqlType>, String)>,
    tz: &'a PgTimeZone,
    keys: Vec<Expr>,
    aggs: Vec<AggCall>,
    /// After aggregation: columns must be group keys, aggregates are allowed.
    post: bool,
}

impl Builder<'_> {
    fn column(&self, name: &str) -> Option<usize> {
        self.columns.iter().position(|(n, _, _)| n == name)
    }

    fn boolean(&mut self, e: &ast::Expr, clause: &str) -> Res<Expr> {
        let planned = self.build(e)?;
        let planned = coerce(planned, SqlType::Bool, self.tz)?;
        if planned.ty() != SqlType::Bool {
            return invalid(format!(
                "argument of {clause} must be boolean, not {}",
                planned.ty().pg_name()
            ));
        }
        Ok(planned)
    }

    fn build(&mut self, e: &ast::Expr) -> Res<Expr> {
        if self.post {
            if let ast::Expr::Function(f) = e {
                if let Some(agg) = self.aggregate(f)? {
                    return Ok(agg);
                }
            }
            if !contains_aggregate(e) {
                self.post = false;
                let pre = self.build(e);
                self.post = true;
                if let Ok(pre) = pre {
                    if let Some(i) = self.keys.iter().position(|k| *k == pre) {
                        return Ok(Expr::GroupKey {
                            index: i,
                            ty: pre.ty(),
                        });
                    }
                    if !pre.any(&|x| matches!(x, Expr::Column { .. })) {
                        return Ok(pre);
                    }
                }
            }
        }
        self.build_node(e)
    }

    fn build_node(&mut self, e: &ast::Expr) -> Res<Expr> {
        use ast::Expr as A;
        match e {
            A::Identifier(id) => self.column_ref(&ident_name(id)),
            A::CompoundIdentifier(ids) => {
                self.column_ref(&ids.last().map(ident_name).unwrap_or_default())
            }
            A::Nested(inner) => self.build(inner),
            A::Value(v) => literal(&v.value),
            A::TypedString(ts) => {
                let text = match &ts.value.value {
                    ast::Value::SingleQuotedString(s) => s.clone(),
                    other => return invalid(format!("typed literal {other}")),
                };
                let (ty, scale) = sql_type(&ts.data_type)?;
                let lit = Expr::Literal {
                    value: Value::Text(text),
                    ty: SqlType::Unknown,
                };
                coerce_with_scale(lit, ty, scale, self.tz)
            }
            A::Interval(iv) => {
                if iv.leading_field.is_some() || iv.last_field.is_some() {
                    return unsupported(format!(
                        "interval qualifier in {e} (write INTERVAL '7 days')"
                    ));
                }
                let text = match iv.value.as_ref() {
                    A::Value(v) => match &v.value {
                        ast::Value::SingleQuotedString(s) => s.clone(),
                        other => return invalid(format!("interval value {other}")),
                    },
                    other => return unsupported(format!("interval value {other}")),
                };
                let parsed = pgtime::parse_interval(&text)
                    .map_err(|err| PlanError::Invalid(format!("{e}: {err}")))?;
                Ok(Expr::Literal {
                    value: Value::Interval(parsed),
                    ty: SqlType::Interval,
                })
            }
            A::BinaryOp { left, op, right } => self.binary(left, op, right),
            A::UnaryOp {
                op: UnaryOperator::Not,
                expr,
            } => Ok(Expr::Not(Box::new(coerce(
                self.build(expr)?,
                SqlType::Bool,
                self.tz,
            )?))),
            A::UnaryOp {
                op: UnaryOperator::Minus,
                expr,
            } => {
                if let A::Value(v) = expr.as_ref() {
                    if let ast::Value::Number(n, _) = &v.value {
                        return literal(&ast::Value::Number(format!("-{n}"), false));
                    }
                }
                let inner = self.build(expr)?;
                let ty = inner.ty();
                if ty.numeric_rank().is_none() {
                    return invalid(format!("operator does not exist: - {}", ty.pg_name()));
                }
                Ok(Expr::Neg {
                    expr: Box::new(inner),
                    ty,
                })
            }
            A::UnaryOp {
                op: UnaryOperator::Plus,
                expr,
            } => self.build(expr),
            A::IsNull(x) => Ok(Expr::IsNull {
                expr: Box::new(self.build(x)?),
                negated: false,
            }),
            A::IsNotNull(x) => Ok(Expr::IsNull {
                expr: Box::new(self.build(x)?),
                negated: true,
            }),
            A::InList {
                expr,
                list,
                negated,
            } => {
                let mut all = vec![self.build(expr)?];
                for item in list {
                    all.push(self.build(item)?);
                }
                let ty = common_type_of(&all, "IN")?;
                let mut all = all
                    .into_iter()
                    .map(|x| coerce(x, ty, self.tz))
                    .collect::<Res<Vec<_>>>()?;
                let head = all.remove(0);
                Ok(Expr::InList {
                    expr: Box::new(head),
                    list: all,
                    negated: *negated,
                })
            }
            A::Between {
                expr,
                negated,
                low,
                high,
            } => {
                let ge = self.compare(expr, CmpOp::GtEq, low)?;
                let le = self.compare(expr, CmpOp::LtEq, high)?;
                let both = Expr::And(vec![ge, le]);
                Ok(if *negated {
                    Expr::Not(Box::new(both))
                } else {
                    both
                })
            }
            A::Case {
                operand,
                conditions,
                else_result,
                ..
            } => self.case(operand.as_deref(), conditions, else_result.as_deref()),
            A::Cast {
                expr,
                data_type,
                format: None,
                ..
            } => {
                let (ty, scale) = sql_type(data_type)?;
                let inner = self.build(expr)?;
                explicit_cast(inner, ty, scale, self.tz)
            }
            A::Function(f) => self.function(f),
            other => unsupported(format!("expression {other}")),
        }
    }

    fn column_ref(&self, name: &str) -> Res<Expr> {
        let Some(i) = self.column(name) else {
            return invalid(format!("column \"{name}\" does not exist"));
        };
        if self.post {
            return invalid(format!("column \"{name}\" must appear in the GROUP BY clause or be used in an aggregate function"));
        }
        let (n, ty, type_name) = &self.columns[i];
        match ty {
            Some(ty) => Ok(Expr::Column {
                index: i,
                name: n.clone(),
                ty: *ty,
            }),
            None => unsupported(format!("column \"{n}\" of type {type_name}")),
        }
    }

    fn binary(&mut self, left: &ast::Expr, op: &BinaryOperator, right: &ast::Expr) -> Res<Expr> {
        use BinaryOperator as B;
        let cmp = match op {
            B::Eq => Some(CmpOp::Eq),
            B::NotEq => Some(CmpOp::NotEq),
            B::Lt => Some(CmpOp::Lt),
            B::LtEq => Some(CmpOp::LtEq),
            B::Gt => Some(CmpOp::Gt),
            B::GtEq => Some(CmpOp::GtEq),
            _ => None,
        };
        if let Some(c) = cmp {
            return self.compare(left, c, right);
        }
        match op {
            B::And | B::Or => {
                let l = coerce(self.build(left)?, SqlType::Bool, self.tz)?;
                let r = coerce(self.build(right)?, SqlType::Bool, self.tz)?;
                if l.ty() != SqlType::Bool || r.ty() != SqlType::Bool {
                    return invalid(format!("arguments of {op} must be boolean"));
                }
                Ok(if *op == B::And {
                    Expr::And(vec![l, r])
                } else {
                    Expr::Or(vec![l, r])
                })
            }
            B::Plus => self.arith(left, ArithOp::Add, right),
            B::Minus => self.arith(left, ArithOp::Sub, right),
            B::Multiply => self.arith(left, ArithOp::Mul, right),
            B::Divide => self.arith(left, ArithOp::Div, right),
            other => unsupported(format!("operator {other}")),
        }
    }

    fn compare(&mut self, left: &ast::Expr, op: CmpOp, right: &ast::Expr) -> Res<Expr> {
        let l = self.build(left)?;
        let r = self.build(right)?;
        let ty = common_type(l.ty(), r.ty()).ok_or_else(|| {
            PlanError::Invalid(format!(
                "operator does not exist: {} {:?} {}",
                l.ty().pg_name(),
                op,
                r.ty().pg_name()
            ))
        })?;
        let l = coerce(l, ty, self.tz)?;
        let r = coerce(r, ty, self.tz)?;
        Ok(Expr::Cmp {
            op,
            left: Box::new(l),
            right: Box::new(r),
        })
    }

    fn arith(&mut self, left: &ast::Expr, op: ArithOp, right: &ast::Expr) -> Res<Expr> {
        use SqlType as T;
        let l = self.build(left)?;
        let r = self.build(right)?;
        let (lt, rt) = (l.ty(), r.ty());
        let fail = || {
            PlanError::Invalid(format!(
                "operator does not exist: {} {op:?} {}",
                lt.pg_name(),
                rt.pg_name()
            ))
        };
        if lt == T::Unknown || rt == T::Unknown {
            if lt.numeric_rank().is_some() || rt.numeric_rank().is_some() {
                let ty = if lt == T::Unknown { rt } else { lt };
                let (l, r) = (coerce(l, ty, self.tz)?, coerce(r, ty, self.tz)?);
                return Ok(Expr::Arith {
                    op,
                    left: Box::new(l),
                    right: Box::new(r),
                    ty,
                });
            }
            return unsupported(format!("untyped literal in arithmetic ({lt:?} {op:?} {rt:?}); write INTERVAL '...' or DATE '...'"));
        }
        if let (Some(a), Some(b)) = (lt.numeric_rank(), rt.numeric_rank()) {
            let ty = if a >= b { lt } else { rt };
            let (l, r) = (coerce(l, ty, self.tz)?, coerce(r, ty, self.tz)?);
            return Ok(Expr::Arith {
                op,
                left: Box::new(l),
                right: Box::new(r),
                ty,
            });
        }
        let ty = match (lt, op, rt) {
            (T::Date, ArithOp::Add | ArithOp::Sub, t) if t.is_integer() => T::Date,
            (t, ArithOp::Add, T::Date) if t.is_integer() => T::Date,
            (T::Date, ArithOp::Sub, T::Date) => T::Int4,
            (T::Date, ArithOp::Add | ArithOp::Sub, T::Interval)
            | (T::Interval, ArithOp::Add, T::Date) => T::Timestamp,
            (T::Timestamp, ArithOp::Add | ArithOp::Sub, T::Interval) => T::Timestamp,
            (T::TimestampTz, ArithOp::Add | ArithOp::Sub, T::Interval) => T::TimestampTz,
            (T::Timestamp | T::TimestampTz, ArithOp::Sub, T::Timestamp | T::TimestampTz) => {
                return unsupported(format!(
                    "{} - {} (interval results are not maintained)",
                    lt.pg_name(),
                    rt.pg_name()
                ))
            }
            _ => return Err(fail()),
        };
        let (l, r) = match (lt, rt) {
            (T::Date, t) | (t, T::Date) if t.is_integer() && t != T::Int8 => (l, r),
            (T::Date, T::Int8) | (T::Int8, T::Date) => return Err(fail()),
            _ => (l, r),
        };
        Ok(Expr::Arith {
            op,
            left: Box::new(l),
            right: Box::new(r),
            ty,
        })
    }

    fn case(
        &mut self,
        operand: Option<&ast::Expr>,
        conds: &[ast::CaseWhen],
        otherwise: Option<&ast::Expr>,
    ) -> Res<Expr> {
        let mut whens = Vec::new();
        for cw in conds {
            let cond = match operand {
                Some(op) => self.compare(op, CmpOp::Eq, &cw.condition)?,
                None => self.boolean(&cw.condition, "CASE/WHEN")?,
            };
            whens.push((cond, self.build(&cw.result)?));
        }
        let otherwise = match otherwise {
            Some(e) => Some(self.build(e)?),
            None => None,
        };
        let results: Vec<Expr> = whens
            .iter()
            .map(|(_, r)| r.clone())
            .chain(otherwise.clone())
            .collect();
        let ty = common_type_of(&results, "CASE")?;
        let whens = whens
            .into_iter()
            .map(|(c, r)| Ok((c, coerce(r, ty, self.tz)?)))
            .collect::<Res<Vec<_>>>()?;
        let otherwise = otherwise
            .map(|e| coerce(e, ty, self.tz))
            .transpose()?
            .map(Box::new);
        Ok(Expr::Case {
            whens,
            otherwise,
            ty,
        })
    }

    fn function(&mut self, f: &ast::Function) -> Res<Expr> {
        let name = f.name.to_string().to_lowercase();
        if f.over.is_some() {
            return unsupported(format!("window function {name}() OVER"));
        }
        if is_aggregate_name(&name) {
            return invalid(format!("aggregate {name}() is not allowed here (WHERE, GROUP BY, or inside another aggregate)"));
        }
        if f.filter.is_some() || !f.within_group.is_empty() {
            return invalid(format!("FILTER/WITHIN GROUP on non-aggregate {name}()"));
        }
        let args = self.plain_args(f)?;
        match (name.as_str(), args.as_slice()) {
            ("current_date", []) if matches!(f.args, FunctionArguments::None) => {
                Ok(Expr::CurrentDate)
            }
            ("date", [x]) => {
                let x = self.build(x)?;
                match x.ty() {
                    SqlType::TimestampTz
                    | SqlType::Timestamp
                    | SqlType::Date
                    | SqlType::Unknown
                    | SqlType::Text => explicit_cast(x, SqlType::Date, None, self.tz),
                    t => invalid(format!("function date({}) does not exist", t.pg_name())),
                }
            }
            ("date_trunc", [unit, x]) => {
                let unit = match unit {
                    ast::Expr::Value(v) => match &v.value {
                        ast::Value::SingleQuotedString(s) => s.to_lowercase(),
                        _ => return unsupported("date_trunc with a non-literal unit"),
                    },
                    _ => return unsupported("date_trunc with a non-literal unit"),
                };
                let x = self.build(x)?;
                let (x, ty) = match x.ty() {
                    SqlType::Timestamp => (x, SqlType::Timestamp),
                    SqlType::TimestampTz | SqlType::Date | SqlType::Unknown => (
                        coerce(x, SqlType::TimestampTz, self.tz)?,
                        SqlType::TimestampTz,
                    ),
                    t => {
                        return invalid(format!(
                            "function date_trunc(unknown, {}) does not exist",
                            t.pg_name()
                        ))
                    }
                };
                pgtime::date_trunc_timestamp(&unit, 0)
                    .map_err(|e| PlanError::Invalid(e.to_string()))?;
                Ok(Expr::DateTrunc {
                    unit,
                    expr: Box::new(x),
                    ty,
                })
            }
            ("coalesce", items) if !items.is_empty() => {
                let planned = items
                    .iter()
                    .map(|a| self.build(a))
                    .collect::<Res<Vec<_>>>()?;
                let ty = common_type_of(&planned, "COALESCE")?;
                let args = planned
                    .into_iter()
                    .map(|a| coerce(a, ty, self.tz))
                    .collect::<Res<Vec<_>>>()?;
                Ok(Expr::Coalesce { args, ty })
            }
            (
                "now"
                | "current_timestamp"
                | "localtimestamp"
                | "clock_timestamp"
                | "statement_timestamp",
                _,
            ) => unsupported(format!(
                "{name}() (only CURRENT_DATE: windows that move with the clock advance by day)"
            )),
            _ => unsupported(format!("function {name}()")),
        }
    }

    fn plain_args<'f>(&self, f: &'f ast::Function) -> Res<Vec<&'f ast::Expr>> {
        match &f.args {
            FunctionArguments::None => Ok(vec![]),
            FunctionArguments::List(list) => list
                .args
                .iter()
                .map(|a| match a {
                    FunctionArg::Unnamed(FunctionArgExpr::Expr(e)) => Ok(e),
                    other => unsupported(format!("function argument {other}")),
                })
                .collect(),
            FunctionArguments::Subquery(_) => unsupported("subquery as a function argument"),
        }
    }

    /// Plans an aggregate call (in the post-aggregation scope) and returns its reference.
    fn aggregate(&mut self, f: &ast::Function) -> Res<Option<Expr>> {
        let name = f.name.to_string().to_lowercase();
        if !is_aggregate_name(&name) {
            if KNOWN_UNSUPPORTED_AGGS.contains(&name.as_str()) {
                return unsupported(format!("aggregate {name}()"));
            }
            return Ok(None);
        }
        if f.over.is_some() {
            return unsupported(format!("window function {name}() OVER"));
        }
        let (distinct, args) = match &f.args {
            FunctionArguments::List(list) => {
                if !list.clauses.is_empty() {
                    return unsupported(format!("ORDER BY/LIMIT inside {name}()"));
                }
                (
                    list.duplicate_treatment == Some(DuplicateTreatment::Distinct),
                    list.args.clone(),
                )
            }
            _ => return invalid(format!("{name} needs arguments")),
        };
        self.post = false;
        let planned = self.aggregate_parts(&name, distinct, &args, f);
        self.post = true;
        let (func, arg, ty) = planned?;
        let filter = match &f.filter {
            Some(w) => {
                self.post = false;
                let filt = self.boolean(w, "FILTER");
                self.post = true;
                Some(filt?)
            }
            None => None,
        };
        let call = AggCall {
            func,
            arg,
            filter,
            ty,
        };
        let index = match self.aggs.iter().position(|a| *a == call) {
            Some(i) => i,
            None => {
                self.aggs.push(call);
                self.aggs.len() - 1
            }
        };
        Ok(Some(Expr::Agg { index, ty }))
    }

    fn aggregate_parts(
        &mut self,
        name: &str,
        distinct: bool,
        args: &[FunctionArg],
        f: &ast::Function,
    ) -> Res<(AggFunc, Option<Expr>, SqlType)> {
        use SqlType as T;
        let one = |args: &[FunctionArg]| -> Res<ast::Expr> {
            match args {
                [FunctionArg::Unnamed(FunctionArgExpr::Expr(e))] => Ok(e.clone()),
                _ => invalid(format!("{name}() takes one argument")),
            }
        };
        if name.starts_with("percentile_") {
            if distinct {
                return unsupported(format!("{name}(DISTINCT ...)"));
            }
            let frac = match one(args)? {
                ast::Expr::Value(v) => match &v.value {
                    ast::Value::Number(n, _) => n.parse::<f64>().ok(),
                    _ => None,
                },
                _ => None,
            };
            let frac = match frac {
                Some(p) if (0.0..=1.0).contains(&p) => p,
                _ => {
                    return unsupported(format!(
                        "{name}() needs a constant fraction between 0 and 1"
                    ))
                }
            };
            let [order] = f.within_group.as_slice() else {
                return invalid(format!(
                    "{name}() needs WITHIN GROUP (ORDER BY one expression)"
                ));
            };
            if order.options.asc == Some(false) || order.options.nulls_first.is_some() {
                return unsupported(format!(
                    "{name}() WITHIN GROUP with DESC or NULLS FIRST/LAST"
                ));
            }
            let x = self.build(&order.expr)?;
            return if name == "percentile_cont" {
                let x = coerce(x, T::Float8, self.tz).map_err(|_| {
                    PlanError::Unsupported("percentile_cont of a non-numeric type".into())
                })?;
                Ok((AggFunc::PercentileCont(frac), Some(x), T::Float8))
            } else {
                let ty = resolved(x.ty());
                let x = coerce(x, ty, self.tz)?;
                Ok((AggFunc::PercentileDisc(frac), Some(x), ty))
            };
        }
        if !f.within_group.is_empty() {
            return invalid(format!("WITHIN GROUP on {name}()"));
        }
        if name == "count" && matches!(args, [FunctionArg::Unnamed(FunctionArgExpr::Wildcard)]) {
            return Ok((AggFunc::CountStar, None, T::Int8));
        }
        let x = self.build(&one(args)?)?;
        let arg_ty = resolved(x.ty());
        let x = coerce(x, arg_ty, self.tz)?;
        if distinct && name != "count" {
            return unsupported(format!("{name}(DISTINCT ...)"));
        }
        let (func, ty) = match (name, arg_ty) {
            ("count", _) if distinct => (AggFunc::CountDistinct, T::Int8),
            ("count", _) => (AggFunc::Count, T::Int8),
            ("sum", T::Int2 | T::Int4) => (AggFunc::Sum, T::Int8),
            ("sum", T::Int8 | T::Numeric) => (AggFunc::Sum, T::Numeric),
            ("sum", T::Float8) => (AggFunc::Sum, T::Float8),
            ("avg", T::Int2 | T::Int4 | T::Int8 | T::Numeric) => (AggFunc::Avg, T::Numeric),
            ("avg", T::Float8) => (AggFunc::Avg, T::Float8),
            ("min" | "max", t) if t != T::Bool && t != T::Interval => (
                if name == "min" {
                    AggFunc::Min
                } else {
                    AggFunc::Max
                },
                t,
            ),
            _ => return unsupported(format!("{name}({})", arg_ty.pg_name())),
        };
        Ok((func, Some(x), ty))
    }
}

const KNOWN_UNSUPPORTED_AGGS: &[&str] = &[
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

fn is_aggregate_name(name: &str) -> bool {
    matches!(
        name,
        "count" | "sum" | "avg" | "min" | "max" | "percentile_cont" | "percentile_disc"
    )
}

/// Whether `e` calls an aggregate (read from the syntax tree: a string literal such as
/// `'max(x)'` is not a call).
fn contains_aggregate(e: &ast::Expr) -> bool {
    find_call(e, &|f| {
        let name = f.name.to_string().to_lowercase();
        is_aggregate_name(&name) || KNOWN_UNSUPPORTED_AGGS.contains(&name.as_str())
    })
    .is_some()
}

/// Unknown (an untyped literal) resolves to text, as PostgreSQL does.
fn resolved(ty: SqlType) -> SqlType {
    if ty == SqlType::Unknown {
        SqlType::Text
    } else {
        ty
    }
}

fn literal(v: &ast::Value) -> Res<Expr> {
    Ok(match v {
        ast::Value::Number(n, _) => {
            if !n.contains(['.', 'e', 'E']) {
                if let Ok(i) = n.parse::<i32>() {
                    return Ok(Expr::Literal {
                        value: Value::Int(i as i64),
                        ty: SqlType::Int4,
                    });
                }
                if let Ok(i) = n.parse::<i64>() {
                    return Ok(Expr::Literal {
                        value: Value::Int(i),
                        ty: SqlType::Int8,
                    });
                }
            }
            let num = crate::numeric::Numeric::parse(n)
                .map_err(|e| PlanError::Invalid(format!("number {n}: {e}")))?;
            Expr::Literal {
                value: Value::Numeric(num),
                ty: SqlType::Numeric,
            }
        }
        ast::Value::SingleQuotedString(s) => Expr::Literal {
            value: Value::Text(s.clone()),
            ty: SqlType::Unknown,
        },
        ast::Value::Boolean(b) => Expr::Literal {
            value: Value::Bool(*b),
            ty: SqlType::Bool,
        },
        ast::Value::Null => Expr::Literal {
            value: Value::Null,
            ty: SqlType::Unknown,
        },
        other => return unsupported(format!("literal {other}")),
    })
}

/// Maps a SQL type name to a supported type and an optional numeric scale.
fn sql_type(dt: &ast::DataType) -> Res<(SqlType, Option<u32>)> {
    let text = dt.to_string().to_lowercase();
    let base = text.split('(').next().unwrap_or("").trim();
    let ty = match base {
        "date" => SqlType::Date,
        "numeric" | "decimal" => {
            let scale = text.split_once('(').and_then(|(_, rest)| {
                rest.trim_end_matches(')')
                    .split(',')
                    .nth(1)
                    .map(|s| s.trim().parse::<u32>())
            });
            return match scale {
                Some(Ok(s)) => Ok((SqlType::Numeric, Some(s))),
                Some(Err(_)) => invalid(format!("type {text}")),
                None if text.contains('(') => Ok((SqlType::Numeric, Some(0))),
                None => Ok((SqlType::Numeric, None)),
            };
        }
        "int" | "integer" | "int4" => SqlType::Int4,
        "bigint" | "int8" => SqlType::Int8,
        "smallint" | "int2" => SqlType::Int2,
        "double precision" | "float8" | "double" | "float" => SqlType::Float8,
        "text" => SqlType::Text,
        "uuid" => SqlType::Uuid,
        "boolean" | "bool" => SqlType::Bool,
        "interval" => SqlType::Interval,
        "timestamp" | "timestamp without time zone" => SqlType::Timestamp,
        "timestamptz" | "timestamp with time zone" => SqlType::TimestampTz,
        _ => return unsupported(format!("type {text}")),
    };
    if text.contains('(') {
        return unsupported(format!("type modifier in {text}"));
    }
    Ok((ty, None))
}

/// PostgreSQL's common type for two operands of the supported categories.
fn common_type(a: SqlType, b: SqlType) -> Option<SqlType> {
    use SqlType as T;
    if a == b {
        return Some(if a == T::Unknown { T::Text } else { a });
    }
    if a == T::Unknown {
        return Some(b);
    }
    if b == T::Unknown {
        return Some(a);
    }
    if let (Some(x), Some(y)) = (a.numeric_rank(), b.numeric_rank()) {
        return Some(if x >= y { a } else { b });
    }
    let dt_rank = |t| match t {
        T::Date => Some(0),
        T::Timestamp => Some(1),
        T::TimestampTz => Some(2),
        _ => None,
    };
    match (dt_rank(a), dt_rank(b)) {
        (Some(x), Some(y)) => Some(if x >= y { a } else { b }),
        _ => None,
    }
}

fn common_type_of(items: &[Expr], what: &str) -> Res<SqlType> {
    let mut ty = SqlType::Unknown;
    for e in items {
        ty = common_type(ty, e.ty()).ok_or_else(|| {
            PlanError::Invalid(format!(
                "{what} types {} and {} cannot be matched",
                ty.pg_name(),
                e.ty().pg_name()
            ))
        })?;
    }
    Ok(resolved(ty))
}

fn coerce(e: Expr, to: SqlType, tz: &PgTimeZone) -> Res<Expr> {
    coerce_with_scale(e, to, None, tz)
}

/// Applies an implicit coercion; untyped literals are converted at plan time.
fn coerce_with_scale(e: Expr, to: SqlType, scale: Option<u32>, tz: &PgTimeZone) -> Res<Expr> {
    let from = e.ty();
    if from == to && scale.is_none() {
        return Ok(e);
    }
    let implicit = from == SqlType::Unknown
        || matches!((from.numeric_rank(), to.numeric_rank()), (Some(a), Some(b)) if a <= b)
        || matches!(
            (from, to),
            (SqlType::Date, SqlType::Timestamp | SqlType::TimestampTz)
                | (SqlType::Timestamp, SqlType::TimestampTz)
        )
        || from == to;
    if !implicit {
        return Ok(e);
    }
    explicit_cast(e, to, scale, tz)
}

/// A cast, folded at plan time when its input is a literal.
fn explicit_cast(e: Expr, to: SqlType, scale: Option<u32>, tz: &PgTimeZone) -> Res<Expr> {
    let from = e.ty();
    if to == SqlType::Text
        && matches!(
            from,
            SqlType::TimestampTz | SqlType::Timestamp | SqlType::Interval | SqlType::Float8
        )
    {
        return unsupported(format!("cast of {} to text", from.pg_name()));
    }
    if let Expr::Literal { value, .. } = &e {
        let ctx = EvalCtx { today: 0, tz };
        let cast = Expr::Cast {
            expr: Box::new(e.clone()),
            to,
            scale,
        };
        let folded = cast.eval(Inputs::row(&[]), ctx).map_err(|err| {
            PlanError::Invalid(format!("{}::{}: {err}", value.to_sql_text(), to.pg_name()))
        })?;
        return Ok(Expr::Literal {
            value: folded,
            ty: to,
        });
    }
    let supported = matches!(from, SqlType::Unknown | SqlType::Text)
        || from == to
        || (from.numeric_rank().is_some() && to.numeric_rank().is_some())
        || matches!(
            (from, to),
            (
                SqlType::TimestampTz | SqlType::Timestamp | SqlType::Date,
                SqlType::Date | SqlType::Timestamp | SqlType::TimestampTz
            )
        )
        || to == SqlType::Text;
    if !supported {
        return unsupported(format!("cast from {} to {}", from.pg_name(), to.pg_name()));
    }
    Ok(Expr::Cast {
        expr: Box::new(e),
        to,
        scale,
    })
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
mod tests {
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
}
