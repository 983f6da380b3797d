//! Exact `numeric` arithmetic with PostgreSQL 15's scale and rounding rules.
//!
//! Incrementally maintained views must print exactly what PostgreSQL would
//! print for the same query, so this module reproduces the rules of
//! `src/backend/utils/adt/numeric.c` rather than using a generic decimal type:
//!
//! * Input (`numeric_in` / `set_var_from_str`): surrounding whitespace, sign,
//!   digits with an optional point, an optional exponent (`strtol` rules, so
//!   `1e 3` is accepted); the display scale is the number of fraction digits
//!   minus the exponent, floored at 0. `make_result` rejects a display scale
//!   above `NUMERIC_DSCALE_MAX` (16383) or a base-10000 weight above 32767.
//! * Output (`numeric_out` / `get_str_from_var`): exactly `dscale` fraction
//!   digits; zero never carries a minus sign.
//! * `add_var`/`sub_var` keep `max(dscale1, dscale2)`; `numeric_mul` keeps
//!   `dscale1 + dscale2`, rounded to `NUMERIC_DSCALE_MAX` digits if larger
//!   (the cap is 16383, not `NUMERIC_MAX_DISPLAY_SCALE`).
//! * `numeric_div` picks its scale with `select_div_scale` (at least 16
//!   significant digits estimated from the base-10000 weights and first
//!   digits, never less than either input's dscale, clamped to [0, 1000]) and
//!   `div_var(.., round = true)` rounds the exact quotient half away from zero.
//! * `numeric_avg`, `int8_avg` and `numeric_poly_avg` all return
//!   `numeric_div(sum, count)`.
//! * `numeric_float8` prints the value and reads it back with `strtod` via
//!   `float8in`, which rejects overflow and underflow to zero (`try_to_f64`;
//!   `to_f64` returns strtod's ±Infinity / ±0 instead); `float8_numeric`
//!   prints with `%.15g` (`DBL_DIG` digits) and parses that text.
//! * `numeric_int8` and `numeric_round` / `apply_typmod` use `round_var`,
//!   which rounds half away from zero.
//! * `cmp_numerics`: NaN equals NaN and sorts above everything, including
//!   +Infinity; finite values compare by value, ignoring dscale.
//!
//! Results that PostgreSQL would reject with "value overflows numeric format"
//! (weights beyond 10^131072) are not checked in `add`/`sub`/`mul`.

mod arith;
mod convert;
mod text;

#[cfg(test)]
mod tests;

use std::cmp::Ordering;
use std::hash::{Hash, Hasher};

use num_bigint::BigInt;
use num_integer::Integer;
use num_traits::{Signed, ToPrimitive, Zero};
use serde::{Deserialize, Serialize};

/// `NUMERIC_DSCALE_MAX`: the largest display scale a stored numeric can have.
pub const NUMERIC_DSCALE_MAX: u32 = 0x3FFF;
/// `NUMERIC_MAX_DISPLAY_SCALE`: upper clamp of division result scales.
pub const NUMERIC_MAX_DISPLAY_SCALE: u32 = 1000;
/// `NUMERIC_MIN_SIG_DIGITS`: significant digits a quotient aims for.
const NUMERIC_MIN_SIG_DIGITS: i64 = 16;
/// `NUMERIC_WEIGHT_MAX`: largest base-10000 weight of a stored numeric.
const NUMERIC_WEIGHT_MAX: i64 = 0x7FFF;
/// `NUMERIC_MAX_RESULT_SCALE`: limit applied to `round(numeric, int)`.
const NUMERIC_MAX_RESULT_SCALE: i64 = 2000;
/// `DBL_DIG`: significant digits `float8_numeric` keeps.
const DBL_DIG: usize = 15;

/// Errors PostgreSQL raises for the operations in this module (its messages).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NumericError {
    #[error("invalid input syntax for type numeric: \"{0}\"")]
    InvalidSyntax(String),
    #[error("value overflows numeric format")]
    Overflow,
    #[error("division by zero")]
    DivisionByZero,
    #[error("\"{0}\" is out of range for type double precision")]
    FloatOutOfRange(String),
    #[error("bigint out of range")]
    BigintOutOfRange,
    #[error("cannot convert NaN to bigint")]
    NanToBigint,
    #[error("cannot convert infinity to bigint")]
    InfinityToBigint,
    #[error("numeric field overflow")]
    FieldOverflow { precision: i32, scale: i32 },
}

/// A PostgreSQL `numeric`: `mantissa * 10^-dscale`, or one of the specials.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum Numeric {
    Finite {
        #[serde(with = "bigint_bytes")]
        mantissa: BigInt,
        dscale: u32,
    },
    NaN,
    PosInf,
    NegInf,
}

/// Serializes a `BigInt` as its two's-complement little-endian bytes: compact and fast to
/// encode, which matters because every group record holds exact sums (num-bigint's own serde
/// feature is off).
pub(crate) mod bigint_bytes {
    use num_bigint::BigInt;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &BigInt, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(&v.to_signed_bytes_le())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<BigInt, D::Error> {
        let bytes = Vec::<u8>::deserialize(d)?;
        Ok(BigInt::from_signed_bytes_le(&bytes))
    }
}

/// Powers of ten below this are computed once (scales of real data are small).
const POW10_CACHED: u32 = 64;

fn pow10(n: u32) -> BigInt {
    static CACHE: std::sync::OnceLock<Vec<BigInt>> = std::sync::OnceLock::new();
    let cache = CACHE.get_or_init(|| {
        (0..POW10_CACHED)
            .scan(BigInt::from(1u32), |p, _| {
                let this = p.clone();
                *p *= 10u32;
                Some(this)
            })
            .collect()
    });
    match cache.get(n as usize) {
        Some(p) => p.clone(),
        None => BigInt::from(10u32).pow(n),
    }
}

/// `mantissa` re-expressed at a display scale `to >= from`.
fn rescale(mantissa: &BigInt, from: u32, to: u32) -> BigInt {
    if to > from {
        mantissa * pow10(to - from)
    } else {
        mantissa.clone()
    }
}

/// `round_var`: divide by `10^shift`, rounding half away from zero.
fn div_pow10_round(mantissa: &BigInt, shift: u32) -> BigInt {
    div_round(mantissa, &pow10(shift))
}

/// `num / den` (`den != 0`), rounded half away from zero.
fn div_round(num: &BigInt, den: &BigInt) -> BigInt {
    let (q, r) = num.magnitude().div_rem(den.magnitude());
    let round_up = u32::from(r * 2u32 >= *den.magnitude());
    BigInt::from_biguint(num.sign() * den.sign(), q + round_up)
}

impl Numeric {
    /// A finite value from its parts.
    pub fn finite(mantissa: BigInt, dscale: u32) -> Numeric {
        Numeric::Finite { mantissa, dscale }
    }

    /// `int64_to_numeric`: display scale 0.
    pub fn from_i64(v: i64) -> Numeric {
        Numeric::finite(BigInt::from(v), 0)
    }

    pub fn is_zero(&self) -> bool {
        matches!(self, Numeric::Finite { mantissa, .. } if mantissa.is_zero())
    }

    pub fn is_nan(&self) -> bool {
        matches!(self, Numeric::NaN)
    }

    /// -1, 0 or 1 (`numeric_sign_internal`); NaN reports 0.
    fn signum(&self) -> i32 {
        match self {
            Numeric::Finite { mantissa, .. } => mantissa.signum().to_i32().unwrap_or(0),
            Numeric::NaN => 0,
            Numeric::PosInf => 1,
            Numeric::NegInf => -1,
        }
    }

    fn infinity(sign: i32) -> Numeric {
        if sign < 0 {
            Numeric::NegInf
        } else {
            Numeric::PosInf
        }
    }

    /// The mantissa and display scale of a finite value.
    pub fn parts(&self) -> Option<(&BigInt, u32)> {
        match self {
            Numeric::Finite { mantissa, dscale } => Some((mantissa, *dscale)),
            _ => None,
        }
    }
}

impl Ord for Numeric {
    /// `cmp_numerics`.
    fn cmp(&self, other: &Numeric) -> Ordering {
        let rank = |n: &Numeric| match n {
            Numeric::NegInf => 0,
            Numeric::Finite { .. } => 1,
            Numeric::PosInf => 2,
            Numeric::NaN => 3,
        };
        let (Some((m1, d1)), Some((m2, d2))) = (self.parts(), other.parts()) else {
            return rank(self).cmp(&rank(other));
        };
        if m1.sign() != m2.sign() || d1 == d2 {
            return m1.sign().cmp(&m2.sign()).then_with(|| m1.cmp(m2));
        }
        let d = d1.max(d2);
        rescale(m1, d1, d).cmp(&rescale(m2, d2, d))
    }
}

impl PartialOrd for Numeric {
    fn partial_cmp(&self, other: &Numeric) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl PartialEq for Numeric {
    fn eq(&self, other: &Numeric) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for Numeric {}

impl Hash for Numeric {
    /// Hashes the value with trailing zeros removed, so `1.50` and `1.5` agree.
    fn hash<H: Hasher>(&self, state: &mut H) {
        match self {
            Numeric::Finite { mantissa, dscale } => {
                0u8.hash(state);
                let digits = mantissa.magnitude().to_str_radix(10);
                let significant = digits.trim_end_matches('0');
                let exponent = (digits.len() - significant.len()) as i64 - i64::from(*dscale);
                mantissa.sign().hash(state);
                significant.hash(state);
                if !significant.is_empty() {
                    exponent.hash(state);
                }
            }
            Numeric::NaN => 1u8.hash(state),
            Numeric::PosInf => 2u8.hash(state),
            Numeric::NegInf => 3u8.hash(state),
        }
    }
}
