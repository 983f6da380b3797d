//! CASE and the scalar functions deltamv maintains (CURRENT_DATE, date(), date_trunc(),
//! COALESCE), with the refusals for the clock functions that would move a view without a change.
//! Its own room: the per-function type rules.

use sqlparser::ast::{self, FunctionArg, FunctionArgExpr, FunctionArguments};

use super::Builder;
use crate::pgtime;
use crate::plan::build::{invalid, is_aggregate_name, unsupported, Res};
use crate::plan::expr::{CmpOp, Expr};
use crate::plan::types::{coerce, common_type_of, explicit_cast};
use crate::plan::PlanError;
use crate::value::SqlType;

impl Builder<'_> {
    pub(super) fn case(
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

    pub(super) fn function(&mut self, f: &ast::Function) -> Res<Expr> {
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
}
