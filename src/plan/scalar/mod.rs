//! The expression builder: turns SQL scalar expressions, comparisons, arithmetic, CASE, function
//! calls and aggregate calls into typed [`Expr`]s for one stage, in the pre- or post-aggregation
//! scope. Split out of `build.rs`, which plans queries and stages around it.
//!
//! Here: the stage's columns and the [`Builder`] with its dispatch over SQL expression kinds.
//! The kinds with rules of their own are in the children: `columns` (column references,
//! generated columns), `operators` (comparisons, AND/OR, arithmetic, IN with reals),
//! `functions` (CASE and scalar functions), `aggregates` (aggregate calls), `ordering`
//! (refusing orders the engine does not share with PostgreSQL: enums, collations).

mod aggregates;
mod columns;
mod functions;
mod operators;
mod ordering;

use sqlparser::ast::{self, UnaryOperator};

use super::build::{contains_aggregate, ident_name, invalid, unsupported, Res};
use super::expr::{CmpOp, Expr};
use super::types::{coerce, coerce_with_scale, common_type_of, explicit_cast, literal, sql_type};
use super::{AggCall, PlanError};
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
}
