//! Text input (`numeric_in`) and output (`numeric_out`).

use std::fmt;
use std::str::FromStr;

use num_bigint::BigInt;
use num_traits::{Signed, ToPrimitive, Zero};

use super::{pow10, Numeric, NumericError, NUMERIC_DSCALE_MAX, NUMERIC_WEIGHT_MAX};

/// C `isspace` in the "C" locale.
fn is_c_space(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\n' | '\x0b' | '\x0c' | '\r')
}

impl Numeric {
    /// `numeric_in`: PostgreSQL 15 text input.
    pub fn parse(input: &str) -> Result<Numeric, NumericError> {
        let bad = || NumericError::InvalidSyntax(input.to_string());
        let s = input.trim_matches(is_c_space);
        let named = |names: &[&str]| names.iter().any(|name| s.eq_ignore_ascii_case(name));
        if named(&["nan"]) {
            return Ok(Numeric::NaN);
        } else if named(&["infinity", "+infinity", "inf", "+inf"]) {
            return Ok(Numeric::PosInf);
        } else if named(&["-infinity", "-inf"]) {
            return Ok(Numeric::NegInf);
        }
        let (negative, body) = match s.strip_prefix('-') {
            Some(rest) => (true, rest),
            None => (false, s.strip_prefix('+').unwrap_or(s)),
        };
        let split = body.find(|c: char| !(c.is_ascii_digit() || c == '.'));
        let (number, rest) = body.split_at(split.unwrap_or(body.len()));
        let (int_part, frac_part) = number.split_once('.').unwrap_or((number, ""));
        if frac_part.contains('.') || int_part.len() + frac_part.len() == 0 {
            return Err(bad());
        }
        let exponent = match rest.strip_prefix(['e', 'E']) {
            None if rest.is_empty() => 0,
            None => return Err(bad()),
            Some(exp) => {
                // strtol: leading blanks, an optional sign, then at least one digit.
                let exp = exp.trim_start_matches(is_c_space);
                let unsigned = exp.strip_prefix(['+', '-']).unwrap_or(exp);
                if unsigned.is_empty() || !unsigned.bytes().all(|c| c.is_ascii_digit()) {
                    return Err(bad());
                }
                let magnitude = unsigned.trim_start_matches('0');
                let value = if magnitude.len() > 10 {
                    i64::MAX
                } else {
                    magnitude.parse().unwrap_or(0)
                };
                if value >= i64::from(i32::MAX / 2) {
                    return Err(NumericError::Overflow);
                }
                if exp.starts_with('-') {
                    -value
                } else {
                    value
                }
            }
        };
        let frac_digits = frac_part.len() as i64;
        let digits = format!("{int_part}{frac_part}");
        let dscale = (frac_digits - exponent).max(0);
        if dscale > i64::from(NUMERIC_DSCALE_MAX) {
            return Err(NumericError::Overflow);
        }
        let significant = digits.trim_start_matches('0');
        if significant.is_empty() {
            return Ok(Numeric::finite(BigInt::zero(), dscale as u32));
        }
        // Decimal exponent of the leading digit, then its base-10000 weight.
        let lead_exp = significant.len() as i64 - 1 + exponent - frac_digits;
        if lead_exp.div_euclid(4) > NUMERIC_WEIGHT_MAX {
            return Err(NumericError::Overflow);
        }
        let mut mantissa = BigInt::parse_bytes(significant.as_bytes(), 10).ok_or_else(bad)?;
        mantissa *= pow10((dscale + exponent - frac_digits) as u32);
        if negative {
            mantissa = -mantissa;
        }
        Ok(Numeric::finite(mantissa, dscale as u32))
    }
}

impl FromStr for Numeric {
    type Err = NumericError;

    fn from_str(s: &str) -> Result<Numeric, NumericError> {
        Numeric::parse(s)
    }
}

impl fmt::Display for Numeric {
    /// `numeric_out`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (mantissa, dscale) = match self {
            Numeric::NaN => return f.write_str("NaN"),
            Numeric::PosInf => return f.write_str("Infinity"),
            Numeric::NegInf => return f.write_str("-Infinity"),
            Numeric::Finite { mantissa, dscale } => (mantissa, *dscale as usize),
        };
        if mantissa.is_negative() {
            f.write_str("-")?;
        }
        // Most numerics fit in 128 bits (39 digits): their digits come from a buffer on the
        // stack; larger ones from the big integer.
        let mut buf = [0u8; 39];
        let big;
        let digits = match mantissa.magnitude().to_u128() {
            Some(mut rest) => {
                let mut at = buf.len();
                loop {
                    at -= 1;
                    buf[at] = b'0' + (rest % 10) as u8;
                    rest /= 10;
                    if rest == 0 {
                        break;
                    }
                }
                std::str::from_utf8(&buf[at..]).map_err(|_| fmt::Error)?
            }
            None => {
                big = mantissa.magnitude().to_str_radix(10);
                big.as_str()
            }
        };
        // At least one digit before the point: zeros where the digits do not reach it.
        if digits.len() <= dscale {
            f.write_str("0.")?;
            for _ in digits.len()..dscale {
                f.write_str("0")?;
            }
            return f.write_str(digits);
        }
        let (int_part, frac_part) = digits.split_at(digits.len() - dscale);
        f.write_str(int_part)?;
        if dscale > 0 {
            f.write_str(".")?;
            f.write_str(frac_part)?;
        }
        Ok(())
    }
}
