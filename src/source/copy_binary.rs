//! COPY's binary format: the initial snapshot's rows as PostgreSQL sends them (`*send`
//! functions), decoded straight into values.
//!
//! Reading the snapshot as text spent about a sixth of `init`'s CPU parsing: splitting lines,
//! undoing escapes, and parsing every uuid, timestamp and numeric from its text. In binary a
//! uuid is its 16 bytes, a timestamp one integer and a float its exact bits, so a value is a few
//! loads and shifts. The decoding must give the value the text path gives (the stream's pgoutput
//! is text): `tests/snapshot_binary.rs` reads the same rows both ways, edge values included.
//!
//! Format (PostgreSQL's `copyto.c`): an 11-byte signature, a 32-bit flags word and a header
//! extension; then per row a 16-bit field count (-1 ends the data) and per field a 32-bit length
//! (-1 for NULL) and the bytes of the type's binary send format.

use num_bigint::BigInt;

use crate::numeric::Numeric;
use crate::pgtime::Interval;
use crate::pgtime::{DATE_NEG_INF, DATE_POS_INF, TS_NEG_INF, TS_POS_INF};
use crate::value::{SqlType, Value};

const SIGNATURE: &[u8] = b"PGCOPY\n\xff\r\n\0";
/// Days from 1970-01-01 (our dates) to 2000-01-01 (PostgreSQL's binary dates).
const PG_EPOCH_DAYS: i32 = 10_957;
/// Microseconds from 1970-01-01 to 2000-01-01.
const PG_EPOCH_MICROS: i64 = PG_EPOCH_DAYS as i64 * 86_400_000_000;

/// One step of reading the stream.
#[derive(Debug, PartialEq)]
pub enum Step<T> {
    /// A whole item and the bytes it took.
    Done(T, usize),
    /// The buffer ends inside the item: read more and try again from the same place.
    More,
}

/// The header's length, once the buffer holds all of it.
pub fn header(buf: &[u8]) -> Result<Step<()>, String> {
    let fixed = SIGNATURE.len() + 8;
    if buf.len() < fixed {
        return Ok(Step::More);
    }
    if &buf[..SIGNATURE.len()] != SIGNATURE {
        return Err("not COPY's binary format (bad signature)".into());
    }
    let ext = be_u32(&buf[SIGNATURE.len() + 4..]) as usize;
    if buf.len() < fixed + ext {
        return Ok(Step::More);
    }
    Ok(Step::Done((), fixed + ext))
}

/// A row's fields (`None` for NULL) as byte ranges of `buf`, or `Done(None, 2)` at the trailer.
#[allow(clippy::type_complexity)]
pub fn row(buf: &[u8]) -> Result<Step<Option<Vec<Option<(usize, usize)>>>>, String> {
    if buf.len() < 2 {
        return Ok(Step::More);
    }
    let count = i16::from_be_bytes([buf[0], buf[1]]);
    if count == -1 {
        return Ok(Step::Done(None, 2));
    }
    let count = usize::try_from(count).map_err(|_| format!("bad field count {count}"))?;
    let mut at = 2;
    let mut fields = Vec::with_capacity(count);
    for _ in 0..count {
        if buf.len() < at + 4 {
            return Ok(Step::More);
        }
        let len = be_u32(&buf[at..]) as i32;
        at += 4;
        if len == -1 {
            fields.push(None);
            continue;
        }
        let len = usize::try_from(len).map_err(|_| format!("bad field length {len}"))?;
        if buf.len() < at + len {
            return Ok(Step::More);
        }
        fields.push(Some((at, at + len)));
        at += len;
    }
    Ok(Step::Done(Some(fields), at))
}

fn be_u32(b: &[u8]) -> u32 {
    u32::from_be_bytes([b[0], b[1], b[2], b[3]])
}

fn fixed<const N: usize>(bytes: &[u8], ty: SqlType) -> Result<[u8; N], String> {
    bytes
        .try_into()
        .map_err(|_| format!("{} of {} bytes, expected {N}", ty.pg_name(), bytes.len()))
}

/// A float's value as the text path reads it: every NaN is the one NaN.
fn float(f: f64) -> Value {
    Value::Float(if f.is_nan() { f64::NAN } else { f })
}

/// One field's value from its type's binary send format.
pub fn value(bytes: &[u8], ty: SqlType) -> Result<Value, String> {
    Ok(match ty {
        SqlType::Bool => Value::Bool(fixed::<1>(bytes, ty)?[0] != 0),
        SqlType::Int2 => Value::Int(i16::from_be_bytes(fixed(bytes, ty)?).into()),
        SqlType::Int4 => Value::Int(i32::from_be_bytes(fixed(bytes, ty)?).into()),
        SqlType::Int8 => Value::Int(i64::from_be_bytes(fixed(bytes, ty)?)),
        SqlType::Float4 => float(f32::from_be_bytes(fixed(bytes, ty)?).into()),
        SqlType::Float8 => float(f64::from_be_bytes(fixed(bytes, ty)?)),
        SqlType::Numeric => Value::Numeric(numeric(bytes)?),
        SqlType::Text | SqlType::Unknown | SqlType::Enum | SqlType::Bpchar => {
            let text = std::str::from_utf8(bytes).map_err(|e| e.to_string())?;
            let text = if ty == SqlType::Bpchar {
                text.trim_end_matches(' ')
            } else {
                text
            };
            Value::Text(text.to_owned())
        }
        SqlType::Uuid => Value::Uuid(fixed(bytes, ty)?),
        SqlType::Date => Value::Date(match i32::from_be_bytes(fixed(bytes, ty)?) {
            d @ (DATE_NEG_INF | DATE_POS_INF) => d,
            d => d
                .checked_add(PG_EPOCH_DAYS)
                .ok_or_else(|| format!("date {d} out of range"))?,
        }),
        SqlType::Timestamp | SqlType::TimestampTz => {
            let t = match i64::from_be_bytes(fixed(bytes, ty)?) {
                t @ (TS_NEG_INF | TS_POS_INF) => t,
                t => t
                    .checked_add(PG_EPOCH_MICROS)
                    .ok_or_else(|| format!("timestamp {t} out of range"))?,
            };
            if ty == SqlType::Timestamp {
                Value::Timestamp(t)
            } else {
                Value::TimestampTz(t)
            }
        }
        SqlType::Interval => {
            let b: [u8; 16] = fixed(bytes, ty)?;
            Value::Interval(Interval {
                micros: i64::from_be_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]),
                days: i32::from_be_bytes([b[8], b[9], b[10], b[11]]),
                months: i32::from_be_bytes([b[12], b[13], b[14], b[15]]),
            })
        }
    })
}

/// `numeric_send`: digit count, weight (of the first base-10000 digit), sign, display scale,
/// then the base-10000 digits.
fn numeric(b: &[u8]) -> Result<Numeric, String> {
    if b.len() < 8 {
        return Err(format!("numeric of {} bytes", b.len()));
    }
    let word = |i: usize| u16::from_be_bytes([b[2 * i], b[2 * i + 1]]);
    let (ndigits, weight, sign, dscale) = (word(0) as usize, word(1) as i16, word(2), word(3));
    match sign {
        0xC000 => return Ok(Numeric::NaN),
        0xD000 => return Ok(Numeric::PosInf),
        0xF000 => return Ok(Numeric::NegInf),
        0x0000 | 0x4000 => {}
        _ => return Err(format!("numeric with sign word {sign:#x}")),
    }
    if b.len() != 8 + 2 * ndigits {
        return Err(format!("numeric of {ndigits} digits in {} bytes", b.len()));
    }
    let mut digits = BigInt::from(0u32);
    for i in 0..ndigits {
        let d = word(4 + i);
        if d >= 10_000 {
            return Err(format!("numeric digit {d}"));
        }
        digits = digits * 10_000u32 + d;
    }
    // The value is digits x 10000^(weight - ndigits + 1); at the display scale, its mantissa
    // is that x 10^dscale, a whole number (PostgreSQL stores no digit past the scale).
    let exp10 = 4 * (i64::from(weight) - ndigits as i64 + 1) + i64::from(dscale);
    let mantissa = if exp10 >= 0 {
        digits * BigInt::from(10u32).pow(exp10 as u32)
    } else {
        let div = BigInt::from(10u32).pow((-exp10) as u32);
        let (q, r) = (&digits / &div, &digits % &div);
        if r != BigInt::from(0u32) {
            return Err(format!("numeric with digits past its scale {dscale}"));
        }
        q
    };
    let mantissa = if sign == 0x4000 { -mantissa } else { mantissa };
    Ok(Numeric::finite(mantissa, u32::from(dscale)))
}

#[cfg(test)]
mod tests;
