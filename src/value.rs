//! SQL values and types as the engine sees them.
//!
//! Every value that flows from the replication stream through the operators into the targets is a
//! [`Value`] tagged with PostgreSQL semantics: integers of all widths share one variant (the plan
//! knows the declared width), `numeric` keeps PostgreSQL's display scale, dates and timestamps use
//! the representation of [`crate::pgtime`]. Values arrive as PostgreSQL text (pgoutput's text
//! format and `COPY ... TO STDOUT` in the snapshot share one parser, [`Value::parse_text`]) and
//! leave as COPY text ([`Value::write_copy_text`]), so PostgreSQL itself does the final typing of
//! every target column.
//!
//! Ordering ([`Ord`]) follows PostgreSQL's default btree order within one type (NaN sorts last and
//! equals NaN, `-0 = 0`, numerics compare by value, text by bytes, i.e. the C collation); it is used
//! by the counted multisets behind MIN/MAX, COUNT(DISTINCT) and percentiles.

use std::cmp::Ordering;
use std::fmt::Write as _;

use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::numeric::Numeric;
use crate::pgtime::{self, Interval, PgTimeZone};

mod float;
pub use float::{cmp_float, write_float, write_float4};
use float::{parse_float, parse_float4};

/// The SQL types the planner and operators support.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum SqlType {
    Bool,
    Int2,
    Int4,
    Int8,
    Float4,
    Float8,
    Numeric,
    Text,
    Uuid,
    Date,
    Timestamp,
    TimestampTz,
    Interval,
    /// An untyped literal (a quoted string or NULL) whose type comes from its context.
    Unknown,
    /// A value of a user-defined enum type, held as its label. Labels compare equal exactly when
    /// the values do, so equality, `IN` and grouping are exact; the type's order is its declared
    /// order (`pg_enum.enumsortorder`), not the labels' text order, so the planner refuses to
    /// order enum values (MIN/MAX, percentiles, top-k, `<`).
    Enum,
    /// `character(n)`: text that PostgreSQL pads with spaces and compares, groups, orders and
    /// casts to text ignoring trailing spaces; held without them, so byte equality and order are
    /// PostgreSQL's (a target column of type character(n) pads them again).
    Bpchar,
}

impl SqlType {
    /// Maps a PostgreSQL type OID to a supported type.
    pub fn from_oid(oid: u32) -> Option<SqlType> {
        Some(match oid {
            16 => SqlType::Bool,
            21 => SqlType::Int2,
            23 => SqlType::Int4,
            20 => SqlType::Int8,
            700 => SqlType::Float4,
            701 => SqlType::Float8,
            1700 => SqlType::Numeric,
            // json and jsonb are not text: json has no equality and jsonb's equality and order
            // are not its text's (1.0 and 1.00 are equal), so views reading them are refused.
            25 | 1043 | 19 => SqlType::Text,
            1042 => SqlType::Bpchar,
            2950 => SqlType::Uuid,
            1082 => SqlType::Date,
            1114 => SqlType::Timestamp,
            1184 => SqlType::TimestampTz,
            1186 => SqlType::Interval,
            _ => return None,
        })
    }

    /// The supported type of a column whose type, with its domains resolved to their base type,
    /// has OID `base_oid` and `pg_type.typtype` `base_kind` (`e` for an enum).
    pub fn from_base_type(base_oid: u32, base_kind: &str) -> Option<SqlType> {
        if base_kind == "e" {
            Some(SqlType::Enum)
        } else {
            SqlType::from_oid(base_oid)
        }
    }

    /// The type's name as PostgreSQL prints it.
    pub fn pg_name(self) -> &'static str {
        match self {
            SqlType::Bool => "boolean",
            SqlType::Int2 => "smallint",
            SqlType::Int4 => "integer",
            SqlType::Int8 => "bigint",
            SqlType::Float4 => "real",
            SqlType::Float8 => "double precision",
            SqlType::Numeric => "numeric",
            SqlType::Text => "text",
            SqlType::Uuid => "uuid",
            SqlType::Date => "date",
            SqlType::Timestamp => "timestamp without time zone",
            SqlType::TimestampTz => "timestamp with time zone",
            SqlType::Interval => "interval",
            SqlType::Unknown => "unknown",
            SqlType::Enum => "an enum type",
            SqlType::Bpchar => "character",
        }
    }

    pub fn is_integer(self) -> bool {
        matches!(self, SqlType::Int2 | SqlType::Int4 | SqlType::Int8)
    }

    /// Rank in PostgreSQL's implicit numeric promotion chain (int2 < int4 < int8 < numeric <
    /// float4 < float8); `None` for non-numeric types.
    pub fn numeric_rank(self) -> Option<u8> {
        Some(match self {
            SqlType::Int2 => 0,
            SqlType::Int4 => 1,
            SqlType::Int8 => 2,
            SqlType::Numeric => 3,
            SqlType::Float4 => 4,
            SqlType::Float8 => 5,
            _ => return None,
        })
    }
}

/// One SQL value.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum Value {
    Null,
    Bool(bool),
    /// smallint, integer and bigint.
    Int(i64),
    /// real and double precision.
    Float(f64),
    Numeric(Numeric),
    Text(String),
    Uuid([u8; 16]),
    /// Days since 1970-01-01.
    Date(i32),
    /// Microseconds since 1970-01-01 00:00 wall clock.
    Timestamp(i64),
    /// Microseconds since 1970-01-01 00:00 UTC.
    TimestampTz(i64),
    Interval(Interval),
}

/// A text value that does not parse as its column's type.
#[derive(Debug, Error)]
#[error("cannot read {text:?} as {ty}: {reason}")]
pub struct ValueError {
    pub text: String,
    pub ty: &'static str,
    pub reason: String,
}

impl Value {
    pub fn is_null(&self) -> bool {
        matches!(self, Value::Null)
    }

    /// Parses PostgreSQL's text output (DateStyle ISO, TimeZone UTC, IntervalStyle postgres) of a
    /// value of type `ty`.
    pub fn parse_text(text: &str, ty: SqlType, tz: &PgTimeZone) -> Result<Value, ValueError> {
        let err = |reason: String| ValueError {
            text: text.chars().take(80).collect(),
            ty: ty.pg_name(),
            reason,
        };
        Ok(match ty {
            SqlType::Bool => match text {
                "t" | "true" => Value::Bool(true),
                "f" | "false" => Value::Bool(false),
                _ => return Err(err("expected t or f".into())),
            },
            SqlType::Int2 | SqlType::Int4 | SqlType::Int8 => {
                Value::Int(text.trim().parse().map_err(|e| err(format!("{e}")))?)
            }
            // A real is read as the float4 PostgreSQL stores (its shortest text names exactly
            // one), held as that binary value: widening it to double precision is then exact, as
            // in PostgreSQL, instead of starting from the decimal text.
            SqlType::Float4 => {
                Value::Float(parse_float4(text).ok_or_else(|| err("not a real".into()))?)
            }
            SqlType::Float8 => {
                Value::Float(parse_float(text).ok_or_else(|| err("not a number".into()))?)
            }
            SqlType::Numeric => {
                Value::Numeric(Numeric::parse(text).map_err(|e| err(e.to_string()))?)
            }
            SqlType::Text | SqlType::Unknown | SqlType::Enum => Value::Text(text.to_owned()),
            SqlType::Bpchar => Value::Text(text.trim_end_matches(' ').to_owned()),
            SqlType::Uuid => Value::Uuid(parse_uuid(text).ok_or_else(|| err("not a uuid".into()))?),
            SqlType::Date => Value::Date(pgtime::parse_date(text).map_err(|e| err(e.to_string()))?),
            SqlType::Timestamp => {
                Value::Timestamp(pgtime::parse_timestamp(text).map_err(|e| err(e.to_string()))?)
            }
            SqlType::TimestampTz => Value::TimestampTz(
                pgtime::parse_timestamptz(text, tz).map_err(|e| err(e.to_string()))?,
            ),
            SqlType::Interval => {
                Value::Interval(pgtime::parse_interval(text).map_err(|e| err(e.to_string()))?)
            }
        })
    }

    /// The value as PostgreSQL input text (zone-independent), `None` for NULL.
    pub fn to_text(&self) -> Option<String> {
        let mut text = String::new();
        self.write_text(&mut text).then_some(text)
    }

    /// Appends the text of [`Self::to_text`] to `out`; false (nothing appended) for NULL. The
    /// sink writes every target value this way, most of them without a `String` of their own.
    pub fn write_text(&self, out: &mut String) -> bool {
        match self {
            Value::Null => return false,
            Value::Bool(b) => out.push(if *b { 't' } else { 'f' }),
            Value::Int(i) => {
                let _ = write!(out, "{i}");
            }
            Value::Float(f) => write_float(out, *f),
            Value::Numeric(n) => {
                let _ = write!(out, "{n}");
            }
            Value::Text(s) => out.push_str(s),
            Value::Uuid(u) => push_uuid(out, u),
            Value::Date(d) => out.push_str(&pgtime::format_date(*d)),
            Value::Timestamp(t) => out.push_str(&pgtime::format_timestamp(*t)),
            Value::TimestampTz(t) => out.push_str(&pgtime::format_timestamptz_utc(*t)),
            Value::Interval(iv) => out.push_str(&pgtime::format_interval(*iv)),
        }
        true
    }

    /// Appends the value in COPY text format (`\N` for NULL, backslash escapes for text).
    pub fn write_copy_text(&self, out: &mut String) {
        match self {
            Value::Null => out.push_str("\\N"),
            Value::Text(s) => escape_copy(s, out),
            // Numbers, uuids, dates, times and intervals print no character COPY escapes.
            other => {
                other.write_text(out);
            }
        }
    }

    /// The value as a SQL literal for messages and explain output.
    pub fn to_sql_text(&self) -> String {
        match self.to_text() {
            None => "NULL".into(),
            Some(s) => format!("'{}'", s.replace('\'', "''")),
        }
    }

    /// Canonical floats: PostgreSQL groups `-0` with `0` and all NaNs together.
    pub fn normalized(self) -> Value {
        match self {
            Value::Float(0.0) => Value::Float(0.0),
            Value::Float(f) if f.is_nan() => Value::Float(f64::NAN),
            other => other,
        }
    }

    /// The form whose encoding identifies a group: [`Value::normalized`], and numerics without
    /// trailing fractional zeros (PostgreSQL groups 1.50 with 1.5).
    pub fn group_identity(self) -> Value {
        match self.group_identity_ref() {
            std::borrow::Cow::Owned(v) => v,
            std::borrow::Cow::Borrowed(_) => self,
        }
    }

    /// [`Value::group_identity`] without a copy of a value that is its own identity (all but
    /// -0, NaN and numerics with trailing fractional zeros): what every input row's group key
    /// is encoded from.
    pub fn group_identity_ref(&self) -> std::borrow::Cow<'_, Value> {
        use std::borrow::Cow;
        match self {
            Value::Float(0.0) => Cow::Owned(Value::Float(0.0)),
            Value::Float(f) if f.is_nan() => Cow::Owned(Value::Float(f64::NAN)),
            Value::Numeric(n) => match n.parts() {
                Some((m, scale)) if scale > 0 => {
                    let ten = num_bigint::BigInt::from(10);
                    let zero = num_bigint::BigInt::from(0);
                    if (m % &ten) != zero {
                        return Cow::Borrowed(self);
                    }
                    let (mut m, mut scale) = (m.clone(), scale);
                    while scale > 0 && (&m % &ten) == zero {
                        m /= &ten;
                        scale -= 1;
                    }
                    Cow::Owned(Value::Numeric(Numeric::finite(m, scale)))
                }
                _ => Cow::Borrowed(self),
            },
            _ => Cow::Borrowed(self),
        }
    }

    fn variant_rank(&self) -> u8 {
        match self {
            Value::Null => 0,
            Value::Bool(_) => 1,
            Value::Int(_) => 2,
            Value::Float(_) => 3,
            Value::Numeric(_) => 4,
            Value::Text(_) => 5,
            Value::Uuid(_) => 6,
            Value::Date(_) => 7,
            Value::Timestamp(_) => 8,
            Value::TimestampTz(_) => 9,
            Value::Interval(_) => 10,
        }
    }
}

impl Ord for Value {
    fn cmp(&self, other: &Self) -> Ordering {
        match (self, other) {
            (Value::Bool(a), Value::Bool(b)) => a.cmp(b),
            (Value::Int(a), Value::Int(b)) => a.cmp(b),
            (Value::Float(a), Value::Float(b)) => cmp_float(*a, *b),
            (Value::Numeric(a), Value::Numeric(b)) => a.cmp(b),
            (Value::Text(a), Value::Text(b)) => a.as_bytes().cmp(b.as_bytes()),
            (Value::Uuid(a), Value::Uuid(b)) => a.cmp(b),
            (Value::Date(a), Value::Date(b)) => a.cmp(b),
            (Value::Timestamp(a), Value::Timestamp(b)) => a.cmp(b),
            (Value::TimestampTz(a), Value::TimestampTz(b)) => a.cmp(b),
            (Value::Interval(a), Value::Interval(b)) => a.cmp(b),
            _ => self.variant_rank().cmp(&other.variant_rank()),
        }
    }
}

impl PartialOrd for Value {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl PartialEq for Value {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for Value {}

/// Bit-exact identity, used to decide whether a target row changed (unlike `==`, it tells 1.5 from
/// 1.50 and -0 from 0, which PostgreSQL would display differently).
pub fn identical(a: &[Value], b: &[Value]) -> bool {
    a.len() == b.len()
        && a.iter().zip(b).all(|(x, y)| match (x, y) {
            (Value::Float(p), Value::Float(q)) => {
                p.to_bits() == q.to_bits() || (p.is_nan() && q.is_nan())
            }
            // Same text: same value at the same display scale (zero has no sign).
            (Value::Numeric(p), Value::Numeric(q)) => match (p.parts(), q.parts()) {
                (Some((m1, d1)), Some((m2, d2))) => d1 == d2 && m1 == m2,
                _ => p == q,
            },
            _ => x == y && x.variant_rank() == y.variant_rank(),
        })
}

fn parse_uuid(text: &str) -> Option<[u8; 16]> {
    let hex: Vec<u8> = text
        .bytes()
        .filter(|b| *b != b'-' && *b != b'{' && *b != b'}')
        .collect();
    if hex.len() != 32 {
        return None;
    }
    let mut out = [0u8; 16];
    for (i, chunk) in hex.chunks(2).enumerate() {
        let s = std::str::from_utf8(chunk).ok()?;
        out[i] = u8::from_str_radix(s, 16).ok()?;
    }
    Some(out)
}

fn push_uuid(out: &mut String, u: &[u8; 16]) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    for (i, b) in u.iter().enumerate() {
        if matches!(i, 4 | 6 | 8 | 10) {
            out.push('-');
        }
        out.push(char::from(HEX[usize::from(b >> 4)]));
        out.push(char::from(HEX[usize::from(b & 15)]));
    }
}

/// Escapes a value for COPY text as PostgreSQL's COPY TO does (the same escapes for the same
/// characters), so a line written here reads like the line PostgreSQL prints for the row.
fn escape_copy(s: &str, out: &mut String) {
    if !s.bytes().any(|b| b == b'\\' || b < 0x20) {
        out.push_str(s);
        return;
    }
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            '\u{b}' => out.push_str("\\v"),
            _ => out.push(c),
        }
    }
}

/// Splits one line of COPY text output into fields, undoing the escapes; `None` marks NULL.
pub fn split_copy_line(line: &str) -> Vec<Option<String>> {
    line.split('\t')
        .map(|field| {
            if field == "\\N" {
                return None;
            }
            let mut out = String::with_capacity(field.len());
            let mut chars = field.chars();
            while let Some(c) = chars.next() {
                if c != '\\' {
                    out.push(c);
                    continue;
                }
                match chars.next() {
                    Some('n') => out.push('\n'),
                    Some('r') => out.push('\r'),
                    Some('t') => out.push('\t'),
                    Some('b') => out.push('\u{8}'),
                    Some('f') => out.push('\u{c}'),
                    Some('v') => out.push('\u{b}'),
                    Some(other) => out.push(other),
                    None => out.push('\\'),
                }
            }
            Some(out)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `identical` on numerics compares (value, display scale) instead of printing both; over
    /// random values at random scales (zeros, equal values at other scales, specials) it agrees
    /// with the printed comparison it replaced.
    #[test]
    fn numerics_are_identical_exactly_when_they_print_the_same() {
        use crate::numeric::Numeric;
        let mut x: u64 = 0x2545_F491_4F6C_DD1D;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let mut pick = || -> Numeric {
            match next() % 10 {
                0 => Numeric::NaN,
                1 => Numeric::PosInf,
                2 => Numeric::NegInf,
                _ => {
                    let mantissa = (next() % 2001) as i64 - 1000;
                    let text = format!("{mantissa}e-{}", next() % 4);
                    let n = Numeric::parse(&text).expect("valid numeric text");
                    // Sometimes the same value at a larger display scale (1.5 vs 1.50).
                    let printed = n.to_string();
                    let wider = if printed.contains('.') {
                        format!("{printed}0")
                    } else {
                        format!("{printed}.0")
                    };
                    match next() % 3 {
                        0 => Numeric::parse(&wider).unwrap_or(n),
                        _ => n,
                    }
                }
            }
        };
        for _ in 0..20_000 {
            let (a, b) = (pick(), pick());
            let printed = a == b && a.to_string() == b.to_string();
            assert_eq!(
                identical(&[Value::Numeric(a.clone())], &[Value::Numeric(b.clone())]),
                printed,
                "{a} vs {b}"
            );
        }
    }

    #[test]
    fn copy_text_round_trips_through_the_line_splitter() {
        let mut line = String::new();
        Value::Text("a\tb\\c\nd\u{8}\u{c}\u{b}".into()).write_copy_text(&mut line);
        line.push('\t');
        Value::Null.write_copy_text(&mut line);
        let fields = split_copy_line(&line);
        assert_eq!(
            fields,
            vec![Some("a\tb\\c\nd\u{8}\u{c}\u{b}".to_string()), None]
        );
    }

    #[test]
    fn floats_order_like_postgres() {
        assert_eq!(cmp_float(f64::NAN, f64::INFINITY), Ordering::Greater);
        assert_eq!(Value::Float(-0.0), Value::Float(0.0));
        assert!(!identical(&[Value::Float(-0.0)], &[Value::Float(0.0)]));
    }

    #[test]
    fn reals_are_read_as_the_float4_postgres_stores() {
        let tz = PgTimeZone::parse("UTC").expect("utc");
        let read = |t: &str, ty| match Value::parse_text(t, ty, &tz) {
            Ok(Value::Float(f)) => f,
            other => panic!("{t}: {other:?}"),
        };
        // 0.1::real::float8 in PostgreSQL.
        assert_eq!(read("0.1", SqlType::Float4), 0.10000000149011612);
        assert_eq!(read("0.1", SqlType::Float8), 0.1);
        assert_eq!(read("3.4028235e+38", SqlType::Float4), f32::MAX as f64);
        assert!(read("NaN", SqlType::Float4).is_nan());
        assert_eq!(read("-Infinity", SqlType::Float4), f64::NEG_INFINITY);
    }

    #[test]
    fn domains_enums_and_character_resolve_to_what_they_stand_for() {
        assert_eq!(SqlType::from_base_type(1700, "b"), Some(SqlType::Numeric));
        assert_eq!(SqlType::from_base_type(16389, "e"), Some(SqlType::Enum));
        assert_eq!(
            SqlType::from_base_type(3802, "b"),
            None,
            "jsonb is not text"
        );
        assert_eq!(
            SqlType::from_base_type(1007, "b"),
            None,
            "arrays are refused"
        );
        let tz = PgTimeZone::parse("UTC").expect("utc");
        match Value::parse_text("ab   ", SqlType::Bpchar, &tz) {
            Ok(Value::Text(s)) => assert_eq!(s, "ab"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn uuids_parse_and_print() {
        let text = "0f8fad5b-d9cb-469f-a165-70867728950e";
        let tz = PgTimeZone::parse("UTC").expect("utc");
        match Value::parse_text(text, SqlType::Uuid, &tz) {
            Ok(v @ Value::Uuid(_)) => assert_eq!(v.to_text().as_deref(), Some(text)),
            other => panic!("unexpected {other:?}"),
        }
        assert!(Value::parse_text("xyz", SqlType::Uuid, &tz).is_err());
    }
}
