//! The expression builder: turns SQL scalar expressions, comparisons, arithmetic, CASE, function
//! calls and aggregate calls into typed [`Expr`]s for one stage, in the pre- or post-aggregation
//! scope. Split out of `build.rs`, which plans queries and stages around it.

use sqlparser::ast::{
    self, BinaryOperator, DuplicateTreatment, FunctionArg, FunctionArgExpr, FunctionArguments,
    UnaryOperator,
};

use super::build::{
    contains_aggregate, ident_name, invalid, is_aggregate_name, unsupported, Res,
    KNOWN_UNSUPPORTED_AGGS,
};
use super::expr::{ArithOp, CmpOp, Expr};
use super::types::{
    coerce, coerce_with_scale, common_type_of, explicit_cast, literal, operator_type, resolved,
    sql_type,
};
use super::{AggCall, AggFunc, PlanError};
use crate::pgtime::{self, PgTimeZone};
use crate::value::{SqlType, Value};

/// A column a stage reads: a source table's column or an output of the stage before.
#[derive(Clone, Debug)]
pub(super) struct InputColumn {
    pub(super) name: String,
    pub(super) ty: Option<SqlType>,
    pub(super) type_name: String,
    /// The collation ordering its text when that is not byte order.
    pub(super) collation: Option<String>,
    /// Why it cannot be read although its type is supported.
    pub(super) refusal: Option<String>,
    /// A stored generated column's expression.
    pub(super) generated: Option<String>,
}

impl InputColumn {
    pub(super) fn of_table(c: &crate::pg::ColumnInfo) -> Self {
        InputColumn {
            name: c.name.clone(),
            ty: c.ty,
            type_name: c.type_name.clone(),
            collation: c.collation.clone(),
            refusal: c.refusal.clone(),
            generated: c.generated.clone(),
        }
    }

    /// An output of an earlier stage (`collation` as that stage recorded it).
    pub(super) fn of_stage(name: &str, ty: SqlType, collation: Option<String>) -> Self {
        InputColumn {
            name: name.to_string(),
            ty: Some(ty),
            type_name: ty.pg_name().to_string(),
            collation,
            refusal: None,
            generated: None,
        }
    }
}

/// Text types (their order depends on the collation).
fn is_text(ty: SqlType) -> bool {
    matches!(ty, SqlType::Text | SqlType::Unknown | SqlType::Bpchar)
}

pub(super) struct Builder<'a> {
    pub(super) columns: Vec<InputColumn>,
    /// What the stage reads, for messages (a table's name, or "the subquery").
    pub(super) source: String,
    /// The database's default collation when it is not byte order.
    pub(super) default_collation: Option<String>,
    pub(super) tz: &'a PgTimeZone,
    pub(super) keys: Vec<Expr>,
    pub(super) aggs: Vec<AggCall>,
    /// After aggregation: columns must be group keys, aggregates are allowed.
    pub(super) post: bool,
}

impl Builder<'_> {
    pub(super) fn column(&self, name: &str) -> Option<usize> {
        self.columns.iter().position(|c| c.name == name)
    }

    pub(super) fn boolean(&mut self, e: &ast::Expr, clause: &str) -> Res<Expr> {
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

    pub(super) fn build(&mut self, e: &ast::Expr) -> Res<Expr> {
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
                if all.iter().any(|e| e.ty() == SqlType::Float4) {
                    return self.in_list_with_real(all, *negated);
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

    fn column_ref(&mut self, name: &str) -> Res<Expr> {
        let Some(i) = self.column(name) else {
            return invalid(format!("column \"{name}\" does not exist"));
        };
        if self.post {
            return invalid(format!("column \"{name}\" must appear in the GROUP BY clause or be used in an aggregate function"));
        }
        let col = &self.columns[i];
        let n = &col.name;
        if let Some(why) = &col.refusal {
            return unsupported(format!("column \"{n}\" of {}: {why}", self.source));
        }
        if let Some(expression) = col.generated.clone() {
            return self.generated(i, &expression);
        }
        match col.ty {
            Some(ty) => Ok(Expr::Column {
                index: i,
                name: n.clone(),
                ty,
            }),
            None => unsupported(format!(
                "column \"{n}\" of {} has type {}, which deltamv does not maintain",
                self.source, col.type_name
            )),
        }
    }

    /// A stored generated column, computed from its expression over the row's other columns
    /// (PostgreSQL 15 does not publish generated columns, so their values never arrive), then
    /// assigned to the column's type as PostgreSQL stores it.
    fn generated(&mut self, i: usize, expression: &str) -> Res<Expr> {
        let col = self.columns[i].clone();
        let source = self.source.clone();
        let refuse = |why: String| {
            PlanError::Unsupported(format!(
                "column \"{}\" of {source} is a generated column (GENERATED ALWAYS AS ({expression}) STORED), which PostgreSQL 15 does not publish to logical replication, and deltamv cannot compute it from its expression: {why}",
                col.name
            ))
        };
        let dialect = sqlparser::dialect::PostgreSqlDialect {};
        let parsed = sqlparser::parser::Parser::new(&dialect)
            .try_with_sql(expression)
            .and_then(|mut p| p.parse_expr())
            .map_err(|e| refuse(e.to_string()))?;
        let Some(ty) = col.ty else {
            return Err(refuse(format!(
                "its type {} is not supported",
                col.type_name
            )));
        };
        // The column's declared type decides the stored value (numeric(p, s) rounds).
        let declared = sqlparser::parser::Parser::new(&dialect)
            .try_with_sql(&col.type_name)
            .and_then(|mut p| p.parse_data_type())
            .ok()
            .and_then(|dt| sql_type(&dt).ok());
        let scale = match declared {
            Some((t, scale)) if t == ty => scale,
            _ if ty == SqlType::Numeric => {
                return Err(refuse(format!(
                    "its type {} (a domain) may round it",
                    col.type_name
                )))
            }
            _ => None,
        };
        // Its expression reads only ordinary columns (PostgreSQL forbids generated ones there).
        self.columns[i].generated = None;
        self.columns[i].refusal = Some("a generated column's expression may not read it".into());
        let built = self.build(&parsed);
        self.columns[i].generated = col.generated.clone();
        self.columns[i].refusal = col.refusal.clone();
        let built = built.map_err(|e| refuse(e.to_string()))?;
        explicit_cast(built, ty, scale, self.tz).map_err(|e| refuse(e.to_string()))
    }

    /// What an enum-typed expression reads, for messages: "column status (type run_status)".
    fn enum_source(&self, e: &Expr) -> String {
        let mut found = None;
        let mut walk = vec![e.clone()];
        while let Some(x) = walk.pop() {
            match &x {
                Expr::Column { index, .. } => {
                    if let Some(c) = self.columns.get(*index) {
                        if c.ty == Some(SqlType::Enum) {
                            found = Some(format!(
                                "column \"{}\" of {} (enum type {})",
                                c.name, self.source, c.type_name
                            ));
                            break;
                        }
                    }
                }
                Expr::GroupKey { index, .. } => walk.extend(self.keys.get(*index).cloned()),
                Expr::Agg { index, .. } => {
                    walk.extend(self.aggs.get(*index).and_then(|a| a.arg.clone()))
                }
                other => walk.extend(other.children().into_iter().cloned()),
            }
        }
        found.unwrap_or_else(|| format!("{e} (an enum type)"))
    }

    /// Refuses ordering `e` where the engine's order is not PostgreSQL's: enum values (ordered by
    /// their declaration, not their labels) and text under a collation that is not byte order.
    pub(super) fn check_orderable(&self, e: &Expr, what: &str) -> Res<()> {
        if e.ty() == SqlType::Enum {
            return unsupported(format!(
                "{what} orders {}: PostgreSQL orders an enum by its declared order, which deltamv does not maintain (equality, IN and GROUP BY on it are maintained; cast it ::text to order the labels as text)",
                self.enum_source(e),
            ));
        }
        if let Some(collation) = self.order_collation(e) {
            return unsupported(format!(
                "{what} orders text under {collation}, which deltamv does not implement (it orders text by bytes, as the C collation does)"
            ));
        }
        Ok(())
    }

    /// The collation that orders `e` when it is text not ordered by bytes: a column's own
    /// (PostgreSQL's implicit derivation beats the default), else the database default.
    pub(super) fn order_collation(&self, e: &Expr) -> Option<String> {
        if !is_text(e.ty()) {
            return None;
        }
        let mut found = Vec::new();
        self.implicit_collations(e, &mut found);
        if found.is_empty() {
            self.default_collation.clone()
        } else {
            found.into_iter().flatten().next()
        }
    }

    fn implicit_collations(&self, e: &Expr, out: &mut Vec<Option<String>>) {
        if !is_text(e.ty()) {
            return;
        }
        match e {
            Expr::Column { index, .. } => {
                out.push(self.columns.get(*index).and_then(|c| c.collation.clone()))
            }
            Expr::GroupKey { index, .. } => {
                if let Some(k) = self.keys.get(*index) {
                    self.implicit_collations(k, out);
                }
            }
            Expr::Agg { index, .. } => {
                if let Some(arg) = self.aggs.get(*index).and_then(|a| a.arg.as_ref()) {
                    self.implicit_collations(arg, out);
                }
            }
            Expr::Case {
                whens, otherwise, ..
            } => {
                for (_, r) in whens {
                    self.implicit_collations(r, out);
                }
                if let Some(o) = otherwise {
                    self.implicit_collations(o, out);
                }
            }
            Expr::Coalesce { args, .. } => {
                for a in args {
                    self.implicit_collations(a, out);
                }
            }
            Expr::Cast { expr, .. } => self.implicit_collations(expr, out),
            _ => {}
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
        self.compare_exprs(l, op, r)
    }

    fn compare_exprs(&mut self, l: Expr, op: CmpOp, r: Expr) -> Res<Expr> {
        let ty = operator_type(l.ty(), r.ty()).ok_or_else(|| {
            PlanError::Invalid(format!(
                "operator does not exist: {} {:?} {}",
                l.ty().pg_name(),
                op,
                r.ty().pg_name()
            ))
        })?;
        let l = coerce(l, ty, self.tz)?;
        let r = coerce(r, ty, self.tz)?;
        if !matches!(op, CmpOp::Eq | CmpOp::NotEq) {
            let both = Expr::Coalesce {
                args: vec![l.clone(), r.clone()],
                ty,
            };
            self.check_orderable(
                &both,
                &format!(
                    "the comparison {}",
                    Expr::Cmp {
                        op,
                        left: Box::new(l.clone()),
                        right: Box::new(r.clone())
                    }
                ),
            )?;
        }
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
        // Numbers (an untyped literal takes the other side's type): both sides become the wider.
        let numeric_ty = match (lt.numeric_rank(), rt.numeric_rank()) {
            (Some(_), Some(_)) => operator_type(lt, rt),
            (Some(_), None) if rt == T::Unknown => Some(lt),
            (None, Some(_)) if lt == T::Unknown => Some(rt),
            _ => None,
        };
        if numeric_ty.is_none() && (lt == T::Unknown || rt == T::Unknown) {
            return unsupported(format!("untyped literal in arithmetic ({lt:?} {op:?} {rt:?}); write INTERVAL '...' or DATE '...'"));
        }
        if let Some(ty) = numeric_ty {
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

    /// `x IN (...)` as PostgreSQL parses it, which matters when a real is involved: several
    /// constants become one `= ANY` of their common type, while a single constant and every
    /// item that reads a column are separate `=` operators (resolved like any comparison).
    fn in_list_with_real(&mut self, mut all: Vec<Expr>, negated: bool) -> Res<Expr> {
        let head = all.remove(0);
        let (consts, mut vars): (Vec<Expr>, Vec<Expr>) =
            all.into_iter().partition(|e| !e.reads_input());
        let mut parts = Vec::new();
        if consts.len() > 1 {
            let mut array = vec![head.clone()];
            array.extend(consts);
            let ty = common_type_of(&array, "IN")?;
            let mut array = array
                .into_iter()
                .map(|x| coerce(x, ty, self.tz))
                .collect::<Res<Vec<_>>>()?;
            let lhs = array.remove(0);
            parts.push(Expr::InList {
                expr: Box::new(lhs),
                list: array,
                negated: false,
            });
        } else {
            vars.extend(consts);
        }
        for v in vars {
            parts.push(self.compare_exprs(head.clone(), CmpOp::Eq, v)?);
        }
        let any = if parts.len() == 1 {
            parts.remove(0)
        } else {
            Expr::Or(parts)
        };
        Ok(if negated {
            Expr::Not(Box::new(any))
        } else {
            any
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
                self.check_orderable(&x, &format!("{name}(...) WITHIN GROUP (ORDER BY {x})"))?;
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
        if name == "min" || name == "max" {
            self.check_orderable(&x, &format!("{}({x})", name.to_uppercase()))?;
        }
        if name == "sum" && arg_ty == T::Float4 {
            return unsupported(format!(
                "SUM of real ({x}): PostgreSQL adds reals in single precision in the order it reads the rows, so its result depends on that order and cannot be maintained exactly; sum {x}::double precision, or make the column double precision"
            ));
        }
        // avg(real) widens each value to double precision (float4_accum): AVG(float8).
        let (x, arg_ty) = if name == "avg" && arg_ty == T::Float4 {
            (coerce(x, T::Float8, self.tz)?, T::Float8)
        } else {
            (x, arg_ty)
        };
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
