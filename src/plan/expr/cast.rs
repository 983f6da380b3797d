//! Conversions between SQL types ([`Expr::Cast`](super::Expr::Cast)), explicit or inserted by the
//! planner for implicit coercions, with PostgreSQL's rounding (rint for float to integer, FLT_DIG
//! digits for real to numeric, numeric(p, s) scales) and time-zone rules. Its own room because the
//! conversion table is long and independent of the tree.

use super::operators::{float_result, int_range};
use super::{num_err, time_err, EvalError, R};
use crate::numeric::Numeric;
use crate::pgtime::{self, PgTimeZone};
use crate::value::{SqlType, Value};

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
