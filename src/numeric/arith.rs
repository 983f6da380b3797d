//! Arithmetic with PostgreSQL's result scales: `+`, `-`, `*`, `/` (with
//! `select_div_scale`), `avg` and `round(numeric, int)`.

use num_bigint::BigInt;
use num_traits::{ToPrimitive, Zero};

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
    let pad = frac_groups * 4 - dscale;
    let (ngroups, first) = match small_groups(mantissa, pad) {
        Some(found) => found,
        None => text_groups(mantissa, pad),
    };
    (ngroups as i64 - 1 - i64::from(frac_groups), first)
}

/// The base-10000 digit count and leading digit of `|mantissa| * 10^pad`, in `u128`
/// arithmetic: the common case, without printing the number (a division per batch and group
/// otherwise printed two numbers). `None` when it does not fit.
fn small_groups(mantissa: &BigInt, pad: u32) -> Option<(usize, u32)> {
    let padded = mantissa
        .magnitude()
        .to_u128()?
        .checked_mul(10u128.pow(pad))?;
    let mut groups = 1;
    let mut lead = padded;
    while lead >= 10_000 {
        lead /= 10_000;
        groups += 1;
    }
    Some((groups, lead as u32))
}

/// [`small_groups`] for any size, through the decimal text.
fn text_groups(mantissa: &BigInt, pad: u32) -> (usize, u32) {
    let mut digits = mantissa.magnitude().to_str_radix(10);
    digits.push_str(&"0".repeat(pad as usize));
    let ngroups = digits.len().div_ceil(4);
    let lead_len = digits.len() - 4 * (ngroups - 1);
    (ngroups, digits[..lead_len].parse::<u32>().unwrap_or(0))
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

#[cfg(test)]
mod tests {
    use super::*;

    /// The `u128` path agrees with the text path it replaces on every size it accepts,
    /// including the boundaries of base-10000 digits and of `u128` itself.
    #[test]
    fn small_groups_equal_text_groups() {
        let mut seeds: Vec<BigInt> = Vec::new();
        let mut p = BigInt::from(1u32);
        for _ in 0..40 {
            for delta in [-1i32, 0, 1] {
                seeds.push(&p + delta);
            }
            p *= 10u32;
        }
        seeds.push(BigInt::from(u128::MAX));
        seeds.push(BigInt::from(u128::MAX / 1000));
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        for _ in 0..10_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            seeds.push(BigInt::from(x >> (x % 64)) * BigInt::from(x % 1_000_003));
        }
        for m in seeds.iter().filter(|m| !m.is_zero()) {
            for sign in [1i32, -1] {
                let m = m * sign;
                for pad in 0..4 {
                    if let Some(fast) = small_groups(&m, pad) {
                        assert_eq!(fast, text_groups(&m, pad), "{m} padded by {pad}");
                    }
                }
            }
        }
    }
}
