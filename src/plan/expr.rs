//! Typed scalar expressions and their evaluation with PostgreSQL semantics.
//!
//! The planner resolves every implicit coercion PostgreSQL would apply (integer to numeric, date
//! to timestamptz at local midnight, an untyped literal to its context's type) into explicit
//! [`Expr::Cast`] nodes, so evaluation never guesses: each operator sees operands of the types it
//! was planned for. Three-valued logic, integer truncation, numeric scales and time-zone rules
//! follow PostgreSQL; errors PostgreSQL would raise (division by zero, out of range) are errors
//! here too.

use std::fmt;

use thiserror::Error;

use crate::numeric::Numeric;
use crate::pgtime::{self, Interval, PgTimeZone};
use crate::value::{SqlType, Value};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ArithOp {
    Add,
    Sub,
    Mul,
    Div,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CmpOp {
    Eq,
    NotEq,
    Lt,
    LtEq,
    Gt,
    GtEq,
}

/// A typed expression. `Column` reads the stage's input row, `GroupKey` and `Agg` read a group's
/// key and finalized aggregates (only after aggregation).
#[derive(Clone, Debug, PartialEq)]
pub enum Expr {
    Column {
        index: usize,
        name: String,
        ty: SqlType,
    },
    GroupKey {
        index: usize,
        ty: SqlType,
    },
    Agg {
        index: usize,
        ty: SqlType,
    },
    Literal {
        value: Value,
        ty: SqlType,
    },
    CurrentDate,
    Arith {
        op: ArithOp,
        left: Box<Expr>,
        right: Box<Expr>,
        ty: SqlType,
    },
    Neg {
        expr: Box<Expr>,
        ty: SqlType,
    },
    Cmp {
        op: CmpOp,
        left: Box<Expr>,
        right: Box<Expr>,
    },
    And(Vec<Expr>),
    Or(Vec<Expr>),
    Not(Box<Expr>),
    IsNull {
        expr: Box<Expr>,
        negated: bool,
    },
    InList {
        expr: Box<Expr>,
        list: Vec<Expr>,
        negated: bool,
    },
    Case {
        whens: Vec<(Expr, Expr)>,
        otherwise: Option<Box<Expr>>,
        ty: SqlType,
    },
    Coalesce {
        args: Vec<Expr>,
        ty: SqlType,
    },
    /// A conversion; `scale` is the typmod scale of `numeric(p, s)`.
    Cast {
        expr: Box<Expr>,
        to: SqlType,
        scale: Option<u32>,
    },
    DateTrunc {
        unit: String,
        expr: Box<Expr>,
        ty: SqlType,
    },
}

/// What evaluation needs besides the row: the date CURRENT_DATE stands for and the server's zone.
#[derive(Clone, Copy)]
pub struct EvalCtx<'a> {
    pub today: i32,
    pub tz: &'a PgTimeZone,
}

/// The inputs an expression reads.
#[derive(Clone, Copy)]
pub struct Inputs<'a> {
    pub row: &'a [Value],
    pub keys: &'a [Value],
    pub aggs: &'a [Value],
}

impl<'a> Inputs<'a> {
    pub fn row(row: &'a [Value]) -> Self {
        Inputs {
            row,
            keys: &[],
            aggs: &[],
        }
    }
}

/// An error PostgreSQL would also raise while computing the view.
#[derive(Debug, Error, Clone, PartialEq)]
pub enum EvalError {
    #[error("division by zero")]
    DivisionByZero,
    #[error("{0} out of range")]
    OutOfRange(&'static str),
    #[error("{0}")]
    Numeric(String),
    #[error("{0}")]
    Time(String),
    #[error("internal: {0}")]
    Internal(String),
}

type R = Result<Value, EvalError>;

impl Expr {
    pub fn ty(&self) -> SqlType {
        match self {
            Expr::Column { ty, .. }
            | Expr::GroupKey { ty, .. }
            | Expr::Agg { ty, .. }
            | Expr::Literal { ty, .. }
            | Expr::Arith { ty, .. }
            | Expr::Neg { ty, .. }
            | Expr::Case { ty, .. }
            | Expr::Coalesce { ty, .. }
            | Expr::DateTrunc { ty, .. } => *ty,
            Expr::CurrentDate => SqlType::Date,
            Expr::Cmp { .. }
            | Expr::And(_)
            | Expr::Or(_)
            | Expr::Not(_)
            | Expr::IsNull { .. }
            | Expr::InList { .. } => SqlType::Bool,
            Expr::Cast { to, .. } => *to,
        }
    }

    /// Direct children, for generic walks.
    pub fn children(&self) -> Vec<&Expr> {
        match self {
            Expr::Column { .. }
            | Expr::GroupKey { .. }
            | Expr::Agg { .. }
            | Expr::Literal { .. }
            | Expr::CurrentDate => {
                vec![]
            }
            Expr::Arith { left, right, .. } | Expr::Cmp { left, right, .. } => vec![left, right],
            Expr::Neg { expr, .. }
            | Expr::Not(expr)
            | Expr::IsNull { expr, .. }
            | Expr::Cast { expr, .. }
            | Expr::DateTrunc { expr, .. } => vec![expr],
            Expr::And(v) | Expr::Or(v) | Expr::Coalesce { args: v, .. } => v.iter().collect(),
            Expr::InList { expr, list, .. } => std::iter::once(&**expr).chain(list).collect(),
            Expr::Case {
                whens, otherwise, ..
            } => whens
                .iter()
                .flat_map(|(c, r)| [c, r])
                .chain(otherwise.as_deref())
                .collect(),
        }
    }

    /// Direct children, mutably (the same order as [`Self::children`]).
    fn children_mut(&mut self) -> Vec<&mut Expr> {
        match self {
            Expr::Column { .. }
            | Expr::GroupKey { .. }
            | Expr::Agg { .. }
            | Expr::Literal { .. }
            | Expr::CurrentDate => vec![],
            Expr::Arith { left, right, .. } | Expr::Cmp { left, right, .. } => {
                vec![&mut **left, &mut **right]
            }
            Expr::Neg { expr, .. }
            | Expr::Not(expr)
            | Expr::IsNull { expr, .. }
            | Expr::Cast { expr, .. }
            | Expr::DateTrunc { expr, .. } => vec![&mut **expr],
            Expr::And(v) | Expr::Or(v) | Expr::Coalesce { args: v, .. } => v.iter_mut().collect(),
            Expr::InList { expr, list, .. } => std::iter::once(&mut **expr)
                .chain(list.iter_mut())
                .collect(),
            Expr::Case {
                whens, otherwise, ..
            } => whens
                .iter_mut()
                .flat_map(|(c, r)| [c, r])
                .chain(otherwise.as_deref_mut())
                .collect(),
        }
    }

    /// This expression for one day: every subexpression that reads CURRENT_DATE but no input
    /// (`CURRENT_DATE - INTERVAL '30 days'`, cast to timestamptz in the server's zone) becomes
    /// its value, computed once instead of once per row. A subexpression whose evaluation fails
    /// is kept, so the row's evaluation raises the error as before.
    pub fn bind_today(&self, ctx: EvalCtx<'_>) -> Expr {
        let mut bound = self.clone();
        bound.fold_today(ctx);
        bound
    }

    fn fold_today(&mut self, ctx: EvalCtx<'_>) {
        if !self.uses_current_date() {
            return;
        }
        if !self.reads_input() {
            if let Ok(value) = self.eval(Inputs::row(&[]), ctx) {
                *self = Expr::Literal {
                    value,
                    ty: self.ty(),
                };
                return;
            }
        }
        for c in self.children_mut() {
            c.fold_today(ctx);
        }
    }

    /// Whether the value depends on the row, group key or aggregates (not only on the day).
    pub fn reads_input(&self) -> bool {
        self.any(&|e| {
            matches!(
                e,
                Expr::Column { .. } | Expr::GroupKey { .. } | Expr::Agg { .. }
            )
        })
    }

    pub fn any(&self, pred: &dyn Fn(&Expr) -> bool) -> bool {
        pred(self) || self.children().into_iter().any(|c| c.any(pred))
    }

    pub fn uses_current_date(&self) -> bool {
        self.any(&|e| matches!(e, Expr::CurrentDate))
    }

    /// Collects the comparisons whose truth depends on CURRENT_DATE (the planner guarantees that
    /// CURRENT_DATE appears only inside such comparisons, on one side, monotonically).
    pub fn temporal_atoms<'e>(&'e self, out: &mut Vec<&'e Expr>) {
        if let Expr::Cmp { .. } = self {
            if self.uses_current_date() {
                out.push(self);
                return;
            }
        }
        for c in self.children() {
            c.temporal_atoms(out);
        }
    }

    pub fn eval(&self, input: Inputs<'_>, ctx: EvalCtx<'_>) -> R {
        match self {
            Expr::Column { index, .. } => Ok(input.row.get(*index).cloned().unwrap_or(Value::Null)),
            Expr::GroupKey { index, .. } => {
                Ok(input.keys.get(*index).cloned().unwrap_or(Value::Null))
            }
            Expr::Agg { index, .. } => Ok(input.aggs.get(*index).cloned().unwrap_or(Value::Null)),
            Expr::Literal { value, .. } => Ok(value.clone()),
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
                let l = left.eval(input, ctx)?;
                let r = right.eval(input, ctx)?;
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

    /// True only when the expression evaluates to TRUE (SQL WHERE semantics).
    pub fn holds(&self, input: Inputs<'_>, ctx: EvalCtx<'_>) -> Result<bool, EvalError> {
        Ok(matches!(self.eval(input, ctx)?, Value::Bool(true)))
    }
}

fn time_err(e: impl fmt::Display) -> EvalError {
    EvalError::Time(e.to_string())
}

fn num_err(e: impl fmt::Display) -> EvalError {
    EvalError::Numeric(e.to_string())
}

fn zero_of(ty: SqlType) -> Value {
    match ty {
        SqlType::Numeric => Value::Numeric(Numeric::from_i64(0)),
        SqlType::Float4 | SqlType::Float8 => Value::Float(0.0),
        SqlType::Interval => Value::Interval(Interval {
            months: 0,
            days: 0,
            micros: 0,
        }),
        _ => Value::Int(0),
    }
}

/// SQL comparison with NULL propagation; operands have one type (the planner cast them).
pub fn compare(op: CmpOp, l: &Value, r: &Value) -> Value {
    if l.is_null() || r.is_null() {
        return Value::Null;
    }
    let ord = l.cmp(r);
    Value::Bool(match op {
        CmpOp::Eq => ord.is_eq(),
        CmpOp::NotEq => ord.is_ne(),
        CmpOp::Lt => ord.is_lt(),
        CmpOp::LtEq => ord.is_le(),
        CmpOp::Gt => ord.is_gt(),
        CmpOp::GtEq => ord.is_ge(),
    })
}

fn int_range(ty: SqlType, v: i128) -> R {
    let (lo, hi, name) = match ty {
        SqlType::Int2 => (i16::MIN as i128, i16::MAX as i128, "smallint"),
        SqlType::Int4 => (i32::MIN as i128, i32::MAX as i128, "integer"),
        _ => (i64::MIN as i128, i64::MAX as i128, "bigint"),
    };
    if v < lo || v > hi {
        Err(EvalError::OutOfRange(name))
    } else {
        Ok(Value::Int(v as i64))
    }
}

fn float_result(ty: SqlType, v: f64, inputs_finite: bool) -> R {
    if v.is_infinite() && inputs_finite {
        return Err(EvalError::OutOfRange(if ty == SqlType::Float4 {
            "real"
        } else {
            "double precision"
        }));
    }
    if ty != SqlType::Float4 {
        return Ok(Value::Float(v));
    }
    let single = v as f32;
    if single.is_infinite() && v.is_finite() {
        return Err(EvalError::OutOfRange("real"));
    }
    // PostgreSQL raises "value out of range: underflow" where a nonzero result becomes 0.
    if single == 0.0 && v != 0.0 && inputs_finite {
        return Err(EvalError::OutOfRange("real"));
    }
    Ok(Value::Float(f64::from(single)))
}

fn arith(op: ArithOp, l: Value, r: Value, ty: SqlType, tz: &PgTimeZone) -> R {
    use ArithOp::*;
    match (l, r) {
        (Value::Int(a), Value::Int(b)) if ty.is_integer() => {
            let (a, b) = (a as i128, b as i128);
            let v = match op {
                Add => a + b,
                Sub => a - b,
                Mul => a * b,
                Div => {
                    if b == 0 {
                        return Err(EvalError::DivisionByZero);
                    }
                    a / b
                }
            };
            int_range(ty, v)
        }
        (Value::Float(a), Value::Float(b)) => {
            let v = match op {
                Add => a + b,
                Sub => a - b,
                Mul => a * b,
                Div => {
                    if b == 0.0 {
                        return Err(EvalError::DivisionByZero);
                    }
                    a / b
                }
            };
            float_result(ty, v, a.is_finite() && b.is_finite())
        }
        (Value::Numeric(a), Value::Numeric(b)) => Ok(Value::Numeric(match op {
            Add => a.add(&b),
            Sub => a.sub(&b),
            Mul => a.mul(&b),
            Div => a.div(&b).map_err(num_err)?,
        })),
        (Value::Date(d), Value::Int(n)) => {
            let n = if op == Sub { -n } else { n };
            let days = (d as i64) + n;
            i32::try_from(days)
                .map(Value::Date)
                .map_err(|_| EvalError::OutOfRange("date"))
        }
        (Value::Int(n), Value::Date(d)) if op == Add => {
            arith(Add, Value::Date(d), Value::Int(n), ty, tz)
        }
        (Value::Date(a), Value::Date(b)) if op == Sub => Ok(Value::Int(
            pgtime::date_minus_date(a, b).map_err(time_err)? as i64,
        )),
        (Value::Date(d), Value::Interval(iv)) => {
            let iv = if op == Sub { negate(iv) } else { iv };
            Ok(Value::Timestamp(
                pgtime::date_plus_interval(d, iv).map_err(time_err)?,
            ))
        }
        (Value::Interval(iv), Value::Date(d)) if op == Add => Ok(Value::Timestamp(
            pgtime::date_plus_interval(d, iv).map_err(time_err)?,
        )),
        (Value::Timestamp(t), Value::Interval(iv)) => {
            let iv = if op == Sub { negate(iv) } else { iv };
            Ok(Value::Timestamp(
                pgtime::timestamp_plus_interval(t, iv).map_err(time_err)?,
            ))
        }
        (Value::TimestampTz(t), Value::Interval(iv)) => {
            let iv = if op == Sub { negate(iv) } else { iv };
            Ok(Value::TimestampTz(
                pgtime::timestamptz_plus_interval(t, iv, tz).map_err(time_err)?,
            ))
        }
        (l, r) => Err(EvalError::Internal(format!(
            "no operator {op:?} for {l:?} and {r:?}"
        ))),
    }
}

fn negate(iv: Interval) -> Interval {
    Interval {
        months: iv.months.wrapping_neg(),
        days: iv.days.wrapping_neg(),
        micros: iv.micros.wrapping_neg(),
    }
}

/// Rounds half to even like C's rint(), which PostgreSQL uses for float to integer casts.
fn rint(f: f64) -> f64 {
    let r = f.round();
    if (f - f.trunc()).abs() == 0.5 {
        2.0 * (f / 2.0).round()
    } else {
        r
    }
}

/// Significant digits of a real cast to numeric (C's FLT_DIG).
const FLT_DIG: usize = 6;

/// An explicit or implicit conversion from `from` to `to`.
pub fn cast(v: Value, from: SqlType, to: SqlType, scale: Option<u32>, tz: &PgTimeZone) -> R {
    let out = match (v, to) {
        (Value::Null, _) => return Ok(Value::Null),
        (Value::Text(s), to)
            if matches!(from, SqlType::Text | SqlType::Unknown) && to != SqlType::Text =>
        {
            Value::parse_text(&s, to, tz).map_err(|e| EvalError::Internal(e.to_string()))?
        }
        (Value::Int(i), t) if t.is_integer() => int_range(t, i as i128)?,
        (Value::Int(i), SqlType::Numeric) => Value::Numeric(Numeric::from_i64(i)),
        // Rounded once, straight to the target's precision (a bigint through double precision
        // to real would round twice).
        (Value::Int(i), SqlType::Float4) => float_result(to, f64::from(i as f32), true)?,
        (Value::Int(i), SqlType::Float8) => float_result(to, i as f64, true)?,
        (Value::Numeric(n), t) if t.is_integer() => {
            int_range(t, n.to_i64_round().map_err(num_err)? as i128)?
        }
        (Value::Numeric(n), SqlType::Numeric) => Value::Numeric(n),
        // numeric_float4 reads the numeric's text with strtof: one rounding, to single.
        (Value::Numeric(n), SqlType::Float4) => {
            let single = match n.to_string().parse::<f32>() {
                Ok(f) => f64::from(f),
                Err(_) => n.to_f64(),
            };
            float_result(to, single, true)?
        }
        (Value::Numeric(n), SqlType::Float8) => float_result(to, n.to_f64(), true)?,
        (Value::Float(f), t) if t.is_integer() => {
            if !f.is_finite() {
                return Err(EvalError::OutOfRange("integer"));
            }
            int_range(t, rint(f) as i128)?
        }
        // float4_numeric prints FLT_DIG (6) significant digits, float8_numeric DBL_DIG (15).
        (Value::Float(f), SqlType::Numeric) if from == SqlType::Float4 => {
            Value::Numeric(Numeric::from_float_digits(f, FLT_DIG))
        }
        (Value::Float(f), SqlType::Numeric) => Value::Numeric(Numeric::from_f64(f)),
        (Value::Float(f), SqlType::Float4 | SqlType::Float8) => float_result(to, f, true)?,
        (Value::TimestampTz(t), SqlType::Date) => {
            Value::Date(pgtime::timestamptz_to_date(t, tz).map_err(time_err)?)
        }
        (Value::TimestampTz(t), SqlType::Timestamp) => {
            Value::Timestamp(pgtime::timestamptz_to_timestamp(t, tz).map_err(time_err)?)
        }
        (Value::Timestamp(t), SqlType::Date) => {
            Value::Date(pgtime::timestamp_to_date(t).map_err(time_err)?)
        }
        (Value::Timestamp(t), SqlType::TimestampTz) => {
            Value::TimestampTz(pgtime::timestamp_to_timestamptz(t, tz).map_err(time_err)?)
        }
        (Value::Date(d), SqlType::Timestamp) => {
            Value::Timestamp(pgtime::date_to_timestamp(d).map_err(time_err)?)
        }
        (Value::Date(d), SqlType::TimestampTz) => {
            Value::TimestampTz(pgtime::date_to_timestamptz(d, tz).map_err(time_err)?)
        }
        (v @ Value::Date(_), SqlType::Date)
        | (v @ Value::Timestamp(_), SqlType::Timestamp)
        | (v @ Value::TimestampTz(_), SqlType::TimestampTz)
        | (v @ Value::Text(_), SqlType::Text | SqlType::Enum | SqlType::Bpchar)
        | (v @ Value::Bool(_), SqlType::Bool)
        | (v @ Value::Uuid(_), SqlType::Uuid)
        | (v @ Value::Interval(_), SqlType::Interval) => v,
        (v, SqlType::Text) => {
            let mut s = String::new();
            v.write_copy_text(&mut s);
            Value::Text(s)
        }
        (v, to) => {
            return Err(EvalError::Internal(format!(
                "cannot cast {v:?} to {}",
                to.pg_name()
            )))
        }
    };
    match (out, scale) {
        (Value::Numeric(n), Some(s)) => Ok(Value::Numeric(n.round_to_scale(s))),
        (out, _) => Ok(out),
    }
}

impl fmt::Display for Expr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let list = |f: &mut fmt::Formatter<'_>, items: &[Expr], sep: &str| -> fmt::Result {
            for (i, e) in items.iter().enumerate() {
                if i > 0 {
                    write!(f, "{sep}")?;
                }
                write!(f, "{e}")?;
            }
            Ok(())
        };
        match self {
            Expr::Column { name, .. } => write!(f, "{name}"),
            Expr::GroupKey { index, .. } => write!(f, "#key{index}"),
            Expr::Agg { index, .. } => write!(f, "#agg{index}"),
            Expr::Literal { value, .. } => write!(f, "{}", value.to_sql_text()),
            Expr::CurrentDate => write!(f, "CURRENT_DATE"),
            Expr::Arith {
                op, left, right, ..
            } => {
                let o = match op {
                    ArithOp::Add => "+",
                    ArithOp::Sub => "-",
                    ArithOp::Mul => "*",
                    ArithOp::Div => "/",
                };
                write!(f, "({left} {o} {right})")
            }
            Expr::Neg { expr, .. } => write!(f, "-{expr}"),
            Expr::Cmp { op, left, right } => {
                let o = match op {
                    CmpOp::Eq => "=",
                    CmpOp::NotEq => "<>",
                    CmpOp::Lt => "<",
                    CmpOp::LtEq => "<=",
                    CmpOp::Gt => ">",
                    CmpOp::GtEq => ">=",
                };
                write!(f, "{left} {o} {right}")
            }
            Expr::And(v) => {
                write!(f, "(")?;
                list(f, v, " AND ")?;
                write!(f, ")")
            }
            Expr::Or(v) => {
                write!(f, "(")?;
                list(f, v, " OR ")?;
                write!(f, ")")
            }
            Expr::Not(e) => write!(f, "NOT {e}"),
            Expr::IsNull { expr, negated } => {
                write!(f, "{expr} IS {}NULL", if *negated { "NOT " } else { "" })
            }
            Expr::InList {
                expr,
                list: l,
                negated,
            } => {
                write!(f, "{expr} {}IN (", if *negated { "NOT " } else { "" })?;
                list(f, l, ", ")?;
                write!(f, ")")
            }
            Expr::Case {
                whens, otherwise, ..
            } => {
                write!(f, "CASE")?;
                for (c, r) in whens {
                    write!(f, " WHEN {c} THEN {r}")?;
                }
                if let Some(e) = otherwise {
                    write!(f, " ELSE {e}")?;
                }
                write!(f, " END")
            }
            Expr::Coalesce { args, .. } => {
                write!(f, "COALESCE(")?;
                list(f, args, ", ")?;
                write!(f, ")")
            }
            Expr::Cast { expr, to, .. } => write!(f, "{expr}::{}", to.pg_name()),
            Expr::DateTrunc { unit, expr, .. } => write!(f, "date_trunc('{unit}', {expr})"),
        }
    }
}
