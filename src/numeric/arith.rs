//! Arithmetic with PostgreSQL's result scales: `+`, `-`, `*`, `/` (with
//! `select_div_scale`), `avg` and `round(numeric, int)`.

use num_bigint::BigInt;
use num_traits::Zero;

use super::{
    div_pow10_round, div_round, pow10, rescale, Numeric, NumericError, NUMERIC_DSCALE_MAX,
    NUMERIC_MAX_DISPLAY_SCALE, NUMERIC_MAX_RESULT_SCALE, NUMERIC_MIN_SIG_DIGITS,
};

/// The base-10000 weight and first non-zero base-10000 digit of a finite
/// value, as `select_div_scale` reads them off a `NumericVar` (0, 0 for zero).
fn weight_and_first_digit(mantissa: &BigInt, dscale: u32) -> (i64, u32) {
    if mantissa.is_zero() {
        return (0, 0);
    }
    // Pad the fraction to whole base-10000 digits; the groups then align.
    let frac_groups = dscale.div_ceil(4);
    let mut digits = mantissa.magnitude().to_str_radix(10);
    digits.push_str(&"0".repeat((frac_groups * 4 - dscale) as usize));
    let ngroups = digits.len().div_ceil(4);
    let lead_len = digits.len() - 4 * (ngroups - 1);
    let first = digits[..lead_len].parse::<u32>().unwrap_or(0);
    (ngroups as i64 - 1 - i64::from(frac_groups), first)
}

impl Numeric {
    /// `numeric_uminus`.
    pub fn neg(&self) -> Numeric {
        match self {
            Numeric::Finite { mantissa, dscale } => Numeric::finite(-mantissa, *dscale),
            Numeric::NaN => Numeric::NaN,
            Numeric::PosInf => Numeric::NegInf,
            Numeric::NegInf => Numeric::PosInf,
        }
    }

    /// `numeric_add`: exact, display scale `max(dscale1, dscale2)`.
    pub fn add(&self, other: &Numeric) -> Numeric {
        use Numeric::{NaN, NegInf, PosInf};
        if let (Some((m1, d1)), Some((m2, d2))) = (self.parts(), other.parts()) {
            let d = d1.max(d2);
            return Numeric::finite(rescale(m1, d1, d) + rescale(m2, d2, d), d);
        }
        match (self, other) {
            (NaN, _) | (_, NaN) | (PosInf, NegInf) | (NegInf, PosInf) => NaN,
            (PosInf, _) | (_, PosInf) => PosInf,
            _ => NegInf,
        }
    }

    /// `numeric_sub`: exact, display scale `max(dscale1, dscale2)`.
    pub fn sub(&self, other: &Numeric) -> Numeric {
        self.add(&other.neg())
    }

    /// `numeric_mul`: exact, display scale `dscale1 + dscale2`, rounded to
    /// `NUMERIC_DSCALE_MAX` when that is exceeded.
    pub fn mul(&self, other: &Numeric) -> Numeric {
        if let (Some((m1, d1)), Some((m2, d2))) = (self.parts(), other.parts()) {
            let (product, scale) = (m1 * m2, d1 + d2);
            if scale > NUMERIC_DSCALE_MAX {
                let rounded = div_pow10_round(&product, scale - NUMERIC_DSCALE_MAX);
                return Numeric::finite(rounded, NUMERIC_DSCALE_MAX);
            }
            return Numeric::finite(product, scale);
        }
        // Infinity times zero is NaN, otherwise an infinity of the product's sign.
        match self.signum() * other.signum() {
            _ if self.is_nan() || other.is_nan() => Numeric::NaN,
            0 => Numeric::NaN,
            sign => Numeric::infinity(sign),
        }
    }

    /// `numeric_div`: quotient rounded half away from zero at the scale
    /// chosen by `select_div_scale`.
    pub fn div(&self, other: &Numeric) -> Result<Numeric, NumericError> {
        let (Some((m1, d1)), Some((m2, d2))) = (self.parts(), other.parts()) else {
            return match (self, other) {
                (Numeric::NaN, _) | (_, Numeric::NaN) => Ok(Numeric::NaN),
                (Numeric::Finite { .. }, _) => Ok(Numeric::from_i64(0)), // finite / ±Infinity
                (_, Numeric::Finite { .. }) if other.is_zero() => Err(NumericError::DivisionByZero),
                (_, Numeric::Finite { .. }) => {
                    Ok(Numeric::infinity(self.signum() * other.signum()))
                }
                _ => Ok(Numeric::NaN), // ±Infinity / ±Infinity
            };
        };
        if m2.is_zero() {
            return Err(NumericError::DivisionByZero);
        }
        let rscale = select_div_scale(m1, d1, m2, d2);
        // self / other * 10^rscale = m1 * 10^(d2 + rscale - d1) / m2
        let shift = i64::from(d2) + i64::from(rscale) - i64::from(d1);
        let (num, den) = if shift >= 0 {
            (m1 * pow10(shift as u32), m2.clone())
        } else {
            (m1.clone(), m2 * pow10((-shift) as u32))
        };
        Ok(Numeric::finite(div_round(&num, &den), rscale))
    }

    /// `numeric_avg` / `int8_avg` / `numeric_poly_avg`: `sum / count` through
    /// `numeric_div`. A count of 0 is SQL NULL, which the caller must handle
    /// (here it is reported as division by zero).
    pub fn avg(sum: &Numeric, count: i64) -> Result<Numeric, NumericError> {
        sum.div(&Numeric::from_i64(count))
    }

    /// `numeric_round(numeric, int)`: round half away from zero to `scale`
    /// fraction digits (negative: to tens, hundreds, ...). The result's dscale
    /// is `max(scale, 0)`, also when that adds zeros. Specials are unchanged.
    pub fn round_to_scale(&self, scale: impl Into<i64>) -> Numeric {
        let Some((mantissa, dscale)) = self.parts() else {
            return self.clone();
        };
        let scale = scale
            .into()
            .clamp(-NUMERIC_MAX_RESULT_SCALE, NUMERIC_MAX_RESULT_SCALE);
        if scale >= i64::from(dscale) {
            return Numeric::finite(rescale(mantissa, dscale, scale as u32), scale as u32);
        }
        let rounded = div_pow10_round(mantissa, (i64::from(dscale) - scale) as u32);
        if scale >= 0 {
            Numeric::finite(rounded, scale as u32)
        } else {
            Numeric::finite(rounded * pow10(scale.unsigned_abs() as u32), 0)
        }
    }
}

/// `select_div_scale` for finite operands.
fn select_div_scale(m1: &BigInt, d1: u32, m2: &BigInt, d2: u32) -> u32 {
    let (weight1, first1) = weight_and_first_digit(m1, d1);
    let (weight2, first2) = weight_and_first_digit(m2, d2);
    // If the first digits are equal, assume var1 is less than var2.
    let qweight = weight1 - weight2 - i64::from(first1 <= first2);
    let rscale = (NUMERIC_MIN_SIG_DIGITS - qweight * 4)
        .max(i64::from(d1))
        .max(i64::from(d2))
        .clamp(0, i64::from(NUMERIC_MAX_DISPLAY_SCALE));
    rscale as u32
}
