//! Aggregate calls in the post-aggregation scope: COUNT/SUM/AVG/MIN/MAX/percentiles with
//! PostgreSQL's result types, FILTER, DISTINCT, and the refusals (SUM of real, unknown or
//! windowed aggregates); each distinct call is planned once and referenced by index.

use sqlparser::ast::{self, DuplicateTreatment, FunctionArg, FunctionArgExpr, FunctionArguments};

use super::Builder;
use crate::plan::build::{invalid, is_aggregate_name, unsupported, Res, KNOWN_UNSUPPORTED_AGGS};
use crate::plan::expr::Expr;
use crate::plan::types::{coerce, resolved};
use crate::plan::{AggCall, AggFunc, PlanError};
use crate::value::SqlType;

impl Builder<'_> {
    /// Plans an aggregate call (in the post-aggregation scope) and returns its reference.
    pub(super) fn aggregate(&mut self, f: &ast::Function) -> Res<Option<Expr>> {
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
