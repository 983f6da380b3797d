//! Casts to and from `float8` and `int8`, and `apply_typmod` for
//! `numeric(precision, scale)`.

use num_bigint::BigInt;
use num_traits::ToPrimitive;

use super::{pow10, Numeric, NumericError, DBL_DIG};

impl Numeric {
    /// `numeric_float8`'s conversion: the text form read back with `strtod`,
    /// correctly rounded. Out-of-range values give what `strtod` returns
    /// (±Infinity, ±0), where PostgreSQL raises an error: see `try_to_f64`.
    pub fn to_f64(&self) -> f64 {
        match self {
            Numeric::NaN => f64::NAN,
            Numeric::PosInf => f64::INFINITY,
            Numeric::NegInf => f64::NEG_INFINITY,
            Numeric::Finite { .. } => self.to_string().parse().unwrap_or(f64::NAN),
        }
    }

    /// `numeric_float8` including `float8in`'s check: a finite value that
    /// overflows, or underflows to zero, is "out of range for type double precision".
    pub fn try_to_f64(&self) -> Result<f64, NumericError> {
        let v = self.to_f64();
        if self.parts().is_some() && (v.is_infinite() || (v == 0.0 && !self.is_zero())) {
            return Err(NumericError::FloatOutOfRange(self.to_string()));
        }
        Ok(v)
    }

    /// `float8_numeric`: the value printed with `%.15g`, then parsed.
    pub fn from_f64(v: f64) -> Numeric {
        Numeric::from_float_digits(v, DBL_DIG)
    }

    /// The value printed with `%.{digits}g`, then parsed: `float8_numeric` with DBL_DIG (15),
    /// `float4_numeric` with FLT_DIG (6) (its float4 widened to double for `snprintf`, so
    /// `v` is that exact binary value).
    pub fn from_float_digits(v: f64, digits: usize) -> Numeric {
        if v.is_nan() {
            return Numeric::NaN;
        }
        if v.is_infinite() {
            return Numeric::infinity(if v < 0.0 { -1 } else { 1 });
        }
        // Like glibc's printf, Rust's `{:.14e}` rounds the exact binary value
        // to DBL_DIG significant digits, ties to even.
        let text = format!("{:.*e}", digits.max(1) - 1, v.abs());
        let (digits, exponent) = text.split_once('e').unwrap_or((&text, "0"));
        let exponent: i64 = exponent.parse().unwrap_or(0);
        // `%g` drops trailing zeros; set_var_from_str counts what remains.
        let sig = digits.replace('.', "");
        let sig = sig.trim_end_matches('0');
        let frac_digits = sig.len() as i64 - 1 - exponent;
        let mut mantissa = BigInt::parse_bytes(sig.as_bytes(), 10).unwrap_or_default();
        mantissa *= pow10((-frac_digits).max(0) as u32);
        if v < 0.0 {
            mantissa = -mantissa;
        }
        Numeric::finite(mantissa, frac_digits.max(0) as u32)
    }

    /// `apply_typmod` for a cast to `numeric(precision, scale)`: round to
    /// `scale`, then fail if more than `precision - scale` integer digits remain.
    pub fn apply_typmod(&self, precision: i32, scale: i32) -> Result<Numeric, NumericError> {
        let overflow = NumericError::FieldOverflow { precision, scale };
        match self.round_to_scale(scale) {
            Numeric::NaN => Ok(Numeric::NaN),
            Numeric::PosInf | Numeric::NegInf => Err(overflow),
            Numeric::Finite { mantissa, dscale } => {
                // Zero has no integer digits: its dscale is then >= precision >= 1.
                let len = mantissa.magnitude().to_str_radix(10).len() as i64;
                if len - i64::from(dscale) > i64::from(precision) - i64::from(scale) {
                    return Err(overflow);
                }
                Ok(Numeric::finite(mantissa, dscale))
            }
        }
    }

    /// `numeric_int8`: round half away from zero; error outside `i64`.
    pub fn to_i64_round(&self) -> Result<i64, NumericError> {
        match self.round_to_scale(0) {
            Numeric::NaN => Err(NumericError::NanToBigint),
            Numeric::PosInf | Numeric::NegInf => Err(NumericError::InfinityToBigint),
            Numeric::Finite { mantissa, .. } => {
                mantissa.to_i64().ok_or(NumericError::BigintOutOfRange)
            }
        }
    }
}
