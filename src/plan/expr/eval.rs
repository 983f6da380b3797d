//! Evaluating an [`Expr`] over one row or group: NULL propagation, three-valued AND/OR/NOT, IN
//! lists, CASE and COALESCE, date_trunc. Its own room because it is the per-row hot path; the
//! operators and conversions it applies are in `operators` and `cast`.

use std::borrow::Cow;

use super::cast::cast;
use super::operators::{arith, compare, zero_of};
use super::{time_err, ArithOp, EvalCtx, EvalError, Expr, Inputs, R};
use crate::pgtime;
use crate::value::{SqlType, Value};

impl Expr {
    pub fn eval(&self, input: Inputs<'_>, ctx: EvalCtx<'_>) -> R {
        match self {
            Expr::Column { .. }
            | Expr::GroupKey { .. }
            | Expr::Agg { .. }
            | Expr::Literal { .. } => Ok(self.leaf(input).cloned().unwrap_or(Value::Null)),
            Expr::CurrentDate => Ok(Value::Date(ctx.today)),
            Expr::Arith {
                op,
                left,
                right,
                ty,
            } => {
                let l = left.eval(input, ctx)?;
                let r = right.eval(input, ctx)?;
                if l.is_null() || r.is_null() {
                    return Ok(Value::Null);
                }
                arith(*op, l, r, *ty, ctx.tz)
            }
            Expr::Neg { expr, ty } => match expr.eval(input, ctx)? {
                Value::Null => Ok(Value::Null),
                v => arith(ArithOp::Sub, zero_of(*ty), v, *ty, ctx.tz),
            },
            Expr::Cmp { op, left, right } => {
                // Columns and literals are compared where they lie: `status = 'completed'`
                // copied two strings per row before.
                let l = left.operand(input, ctx)?;
                let r = right.operand(input, ctx)?;
                Ok(compare(*op, &l, &r))
            }
            Expr::And(items) => {
                let mut saw_null = false;
                for item in items {
                    match item.eval(input, ctx)? {
                        Value::Bool(false) => return Ok(Value::Bool(false)),
                        Value::Null => saw_null = true,
                        _ => {}
                    }
                }
                Ok(if saw_null {
                    Value::Null
                } else {
                    Value::Bool(true)
                })
            }
            Expr::Or(items) => {
                let mut saw_null = false;
                for item in items {
                    match item.eval(input, ctx)? {
                        Value::Bool(true) => return Ok(Value::Bool(true)),
                        Value::Null => saw_null = true,
                        _ => {}
                    }
                }
                Ok(if saw_null {
                    Value::Null
                } else {
                    Value::Bool(false)
                })
            }
            Expr::Not(e) => Ok(match e.eval(input, ctx)? {
                Value::Bool(b) => Value::Bool(!b),
                _ => Value::Null,
            }),
            Expr::IsNull { expr, negated } => {
                Ok(Value::Bool(expr.eval(input, ctx)?.is_null() != *negated))
            }
            Expr::InList {
                expr,
                list,
                negated,
            } => {
                let v = expr.eval(input, ctx)?;
                if v.is_null() {
                    return Ok(Value::Null);
                }
                let mut saw_null = false;
                for item in list {
                    let w = item.eval(input, ctx)?;
                    if w.is_null() {
                        saw_null = true;
                    } else if w == v {
                        return Ok(Value::Bool(!negated));
                    }
                }
                Ok(if saw_null {
                    Value::Null
                } else {
                    Value::Bool(*negated)
                })
            }
            Expr::Case {
                whens, otherwise, ..
            } => {
                for (cond, result) in whens {
                    if let Value::Bool(true) = cond.eval(input, ctx)? {
                        return result.eval(input, ctx);
                    }
                }
                match otherwise {
                    Some(e) => e.eval(input, ctx),
                    None => Ok(Value::Null),
                }
            }
            Expr::Coalesce { args, .. } => {
                for a in args {
                    let v = a.eval(input, ctx)?;
                    if !v.is_null() {
                        return Ok(v);
                    }
                }
                Ok(Value::Null)
            }
            Expr::Cast { expr, to, scale } => {
                cast(expr.eval(input, ctx)?, expr.ty(), *to, *scale, ctx.tz)
            }
            Expr::DateTrunc { unit, expr, ty } => match expr.eval(input, ctx)? {
                Value::Null => Ok(Value::Null),
                Value::Timestamp(t) if *ty == SqlType::Timestamp => Ok(Value::Timestamp(
                    pgtime::date_trunc_timestamp(unit, t).map_err(time_err)?,
                )),
                Value::TimestampTz(t) => Ok(Value::TimestampTz(
                    pgtime::date_trunc_timestamptz(unit, t, ctx.tz).map_err(time_err)?,
                )),
                other => Err(EvalError::Internal(format!("date_trunc of {other:?}"))),
            },
        }
    }

    /// The value of a column, group key, aggregate or literal, borrowed (`None`: anything
    /// else, which must be evaluated).
    fn leaf<'a>(&'a self, input: Inputs<'a>) -> Option<&'a Value> {
        const NULL: &Value = &Value::Null;
        match self {
            Expr::Column { index, .. } => Some(input.row.get(*index).unwrap_or(NULL)),
            Expr::GroupKey { index, .. } => Some(input.keys.get(*index).unwrap_or(NULL)),
            Expr::Agg { index, .. } => Some(input.aggs.get(*index).unwrap_or(NULL)),
            Expr::Literal { value, .. } => Some(value),
            _ => None,
        }
    }

    /// The value as an operand: borrowed where it lies ([`Self::leaf`]), else evaluated.
    fn operand<'a>(
        &'a self,
        input: Inputs<'a>,
        ctx: EvalCtx<'_>,
    ) -> Result<Cow<'a, Value>, EvalError> {
        match self.leaf(input) {
            Some(v) => Ok(Cow::Borrowed(v)),
            None => self.eval(input, ctx).map(Cow::Owned),
        }
    }

    /// True only when the expression evaluates to TRUE (SQL WHERE semantics).
    pub fn holds(&self, input: Inputs<'_>, ctx: EvalCtx<'_>) -> Result<bool, EvalError> {
        Ok(matches!(self.eval(input, ctx)?, Value::Bool(true)))
    }
}
