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
    coerce, coerce_with_scale, common_type, common_type_of, explicit_cast, literal, resolved,
    sql_type,
};
use super::{AggCall, AggFunc, PlanError};
use crate::pgtime::{self, PgTimeZone};
use crate::value::{SqlType, Value};

pub(super) struct Builder<'a> {
    pub(super) columns: Vec<(String, Option<SqlType>, String)>,
    pub(super) tz: &'a PgTimeZone,
    pub(super) keys: Vec<Expr>,
    pub(super) aggs: Vec<AggCall>,
    /// After aggregation: columns must be group keys, aggregates are allowed.
    pub(super) post: bool,
}

impl Builder<'_> {
    pub(super) fn column(&self, name: &str) -> Option<usize> {
        self.columns.iter().position(|(n, _, _)| n == name)
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
        // Numbers (an untyped literal takes the other side's type): both sides become the wider.
        let numeric_ty = match (lt.numeric_rank(), rt.numeric_rank()) {
            (Some(a), Some(b)) => Some(if a >= b { lt } else { rt }),
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
