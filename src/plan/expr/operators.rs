//! The arithmetic and comparison operators with PostgreSQL's rules: integer overflow by width,
//! real and double precision range errors, numeric scales, date/timestamp/interval arithmetic in
//! the server's zone, SQL comparison with NULL. Pure functions over [`Value`]s, their own room
//! because they know nothing of the tree: the planner chose the operand types, these compute.

use super::{num_err, time_err, ArithOp, CmpOp, EvalError, R};
use crate::numeric::Numeric;
use crate::pgtime::{self, Interval, PgTimeZone};
use crate::value::{SqlType, Value};

pub(super) fn zero_of(ty: SqlType) -> Value {
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
    Value::Bool(holds(op, l.cmp(r)))
}

/// Whether `op` holds of two non-NULL operands that order as `ord`.
pub fn holds(op: CmpOp, ord: std::cmp::Ordering) -> bool {
    match op {
        CmpOp::Eq => ord.is_eq(),
        CmpOp::NotEq => ord.is_ne(),
        CmpOp::Lt => ord.is_lt(),
        CmpOp::LtEq => ord.is_le(),
        CmpOp::Gt => ord.is_gt(),
        CmpOp::GtEq => ord.is_ge(),
    }
}

pub(super) fn int_range(ty: SqlType, v: i128) -> R {
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

pub(super) fn float_result(ty: SqlType, v: f64, inputs_finite: bool) -> R {
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

pub(super) fn arith(op: ArithOp, l: Value, r: Value, ty: SqlType, tz: &PgTimeZone) -> R {
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
