//! PostgreSQL's type rules for the supported types: SQL type names, literals, common types and
//! implicit and explicit coercions, resolved at plan time so evaluation never has to.

use sqlparser::ast;

use super::build::{invalid, unsupported, Res};
use super::expr::{EvalCtx, Expr, Inputs};
use super::PlanError;
use crate::pgtime::PgTimeZone;
use crate::value::{SqlType, Value};

/// Unknown (an untyped literal) resolves to text, as PostgreSQL does.
pub(super) fn resolved(ty: SqlType) -> SqlType {
    if ty == SqlType::Unknown {
        SqlType::Text
    } else {
        ty
    }
}

pub(super) fn literal(v: &ast::Value) -> Res<Expr> {
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
pub(super) fn sql_type(dt: &ast::DataType) -> Res<(SqlType, Option<u32>)> {
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
        "real" | "float4" => SqlType::Float4,
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
pub(super) fn common_type(a: SqlType, b: SqlType) -> Option<SqlType> {
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
    // character(n) meets text as text (its trailing spaces dropped, as held).
    if matches!((a, b), (T::Bpchar, T::Text) | (T::Text, T::Bpchar)) {
        return Some(T::Text);
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

/// The type both operands of a binary operator (a comparison or arithmetic) become.
/// PostgreSQL resolves a real against another numeric type (not real, not an untyped literal)
/// to its float48 operators: both sides in double precision (`0.1::real > 0.1` is true and
/// `1::real + 1` is double precision), while CASE, COALESCE and IN lists of several constants
/// take the common type, real.
pub(super) fn operator_type(a: SqlType, b: SqlType) -> Option<SqlType> {
    let mixed_real = |x: SqlType, y: SqlType| {
        x == SqlType::Float4 && y != SqlType::Float4 && y.numeric_rank().is_some()
    };
    if mixed_real(a, b) || mixed_real(b, a) {
        return Some(SqlType::Float8);
    }
    common_type(a, b)
}

pub(super) fn common_type_of(items: &[Expr], what: &str) -> Res<SqlType> {
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

pub(super) fn coerce(e: Expr, to: SqlType, tz: &PgTimeZone) -> Res<Expr> {
    coerce_with_scale(e, to, None, tz)
}

/// Applies an implicit coercion; untyped literals are converted at plan time.
pub(super) fn coerce_with_scale(
    e: Expr,
    to: SqlType,
    scale: Option<u32>,
    tz: &PgTimeZone,
) -> Res<Expr> {
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
                | (SqlType::Bpchar, SqlType::Text)
        )
        || from == to;
    if !implicit {
        return Ok(e);
    }
    explicit_cast(e, to, scale, tz)
}

/// A cast, folded at plan time when its input is a literal.
pub(super) fn explicit_cast(
    e: Expr,
    to: SqlType,
    scale: Option<u32>,
    tz: &PgTimeZone,
) -> Res<Expr> {
    let from = e.ty();
    if to == SqlType::Text
        && matches!(
            from,
            SqlType::TimestampTz
                | SqlType::Timestamp
                | SqlType::Interval
                | SqlType::Float8
                | SqlType::Float4
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
