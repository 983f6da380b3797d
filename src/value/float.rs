//! float8 and real as PostgreSQL orders, reads and prints them.
//!
//! Apart from the other values because floats are where text and value part: equal values
//! may print apart (`0` and `-0`), Rust and PostgreSQL print one value differently (`1.0`
//! against `1`, `1e300` against `1e+300`), and a real's text names a float4, not the float8
//! with the same digits. The engine must print what PostgreSQL prints: `init --resync` tells
//! an unchanged target row by its text ([`crate::sink::fill`]).

use std::cmp::Ordering;

/// PostgreSQL's float8 order: NaN is greater than everything and equal to itself; -0 equals 0.
pub fn cmp_float(a: f64, b: f64) -> Ordering {
    match (a.is_nan(), b.is_nan()) {
        (true, true) => Ordering::Equal,
        (true, false) => Ordering::Greater,
        (false, true) => Ordering::Less,
        (false, false) => a.partial_cmp(&b).unwrap_or(Ordering::Equal),
    }
}

pub(super) fn parse_float(text: &str) -> Option<f64> {
    match text.trim() {
        "NaN" => Some(f64::NAN),
        "Infinity" => Some(f64::INFINITY),
        "-Infinity" => Some(f64::NEG_INFINITY),
        t => t.parse().ok(),
    }
}

/// A real's text as the float4 it names, widened exactly (every f32 is an f64).
pub(super) fn parse_float4(text: &str) -> Option<f64> {
    match text.trim() {
        "NaN" => Some(f64::NAN),
        "Infinity" => Some(f64::INFINITY),
        "-Infinity" => Some(f64::NEG_INFINITY),
        t => t.parse::<f32>().ok().map(f64::from),
    }
}

/// Appends the text PostgreSQL prints for a float8 (`float8out` at `extra_float_digits` 1, its
/// default): the shortest digits that read back to the same bits, in fixed point when the first
/// digit's power of ten is from -4 to 14 (`1`, `0.0001`), else as `d.ddde+XX` (`1e+15`,
/// `1.5e-05`). Printing exactly what PostgreSQL prints lets `init --resync` tell an unchanged
/// target row by its text ([`crate::sink::fill`]). Nothing is allocated: the sink prints every
/// float of a batch's target rows this way.
pub fn write_float(out: &mut String, f: f64) {
    shortest(out, f, 15);
}

/// Appends the text PostgreSQL prints for a real (`float4out`): the shortest digits of the
/// float4, in fixed point for powers of ten from -4 to 5 (`0.1`, `123456`, `1.234567e+06`).
pub fn write_float4(out: &mut String, f: f32) {
    shortest(out, f, 6);
}

/// Rust's shortest round-trip digits of a float's magnitude (`d.ddde<power>`), held on the
/// stack: at most 17 digits, a point, and an exponent of three digits and a sign.
struct Scientific {
    bytes: [u8; 32],
    len: usize,
}

impl std::fmt::Write for Scientific {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        let end = self.len + s.len();
        let room = self.bytes.get_mut(self.len..end).ok_or(std::fmt::Error)?;
        room.copy_from_slice(s.as_bytes());
        self.len = end;
        Ok(())
    }
}

/// A float of either width, as [`shortest`] needs it.
trait Float: std::fmt::LowerExp + Copy {
    fn wide(self) -> f64;
}

impl Float for f64 {
    fn wide(self) -> f64 {
        self
    }
}

impl Float for f32 {
    fn wide(self) -> f64 {
        f64::from(self)
    }
}

/// Appends `f` as PostgreSQL prints it: Rust's shortest round-trip digits of its own width, in
/// fixed point for powers from -4 up to `fixed_below`, else as `d.ddde+XX`.
fn shortest<F: Float>(out: &mut String, f: F, fixed_below: i32) {
    use std::fmt::Write as _;
    let wide = f.wide();
    if wide.is_nan() {
        return out.push_str("NaN");
    }
    if wide.is_infinite() {
        return out.push_str(if wide > 0.0 { "Infinity" } else { "-Infinity" });
    }
    if wide == 0.0 {
        return out.push_str(if wide.is_sign_negative() { "-0" } else { "0" });
    }
    let mut sci = Scientific {
        bytes: [0; 32],
        len: 0,
    };
    // Never fails: the longest, `1.2345678901234567e-308`, takes 23 bytes.
    let _ = write!(sci, "{f:e}");
    let text = std::str::from_utf8(&sci.bytes[..sci.len]).unwrap_or("0");
    let text = text.strip_prefix('-').unwrap_or(text);
    let (mantissa, power) = text.split_once('e').unwrap_or((text, "0"));
    let power: i32 = power.parse().unwrap_or(0);
    // The digits without the point, and without trailing zeros (`1e2` has none to drop).
    let (first, rest) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    let rest = rest.trim_end_matches('0');
    let count = 1 + rest.len();
    // Digits `i` up to `j` (exclusive) of `first` and then `rest`.
    let digits = |out: &mut String, i: usize, j: usize| {
        if i == 0 {
            out.push_str(first);
        }
        out.push_str(&rest[i.max(1) - 1..j - 1]);
    };
    if wide < 0.0 {
        out.push('-');
    }
    let zeros = |out: &mut String, n: i32| (0..n).for_each(|_| out.push('0'));
    let whole = power + 1; // digits before the point
    if (-4..fixed_below).contains(&power) {
        if whole <= 0 {
            out.push_str("0.");
            zeros(out, -whole);
            digits(out, 0, count);
        } else if whole as usize >= count {
            digits(out, 0, count);
            zeros(out, whole - count as i32);
        } else {
            digits(out, 0, whole as usize);
            out.push('.');
            digits(out, whole as usize, count);
        }
    } else {
        out.push_str(first);
        if !rest.is_empty() {
            out.push('.');
            out.push_str(rest);
        }
        let sign = if power < 0 { '-' } else { '+' };
        let _ = write!(out, "e{sign}{:02}", power.abs());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn format_float(f: f64) -> String {
        let mut out = String::new();
        write_float(&mut out, f);
        out
    }

    fn format_float4(f: f32) -> String {
        let mut out = String::new();
        write_float4(&mut out, f);
        out
    }

    #[test]
    fn floats_print_as_postgres_prints_them() {
        // As PostgreSQL 15 prints them (`SELECT x::float8`).
        for (f, text) in [
            (0.1, "0.1"),
            (1.0, "1"),
            (-1234.5, "-1234.5"),
            (1e300, "1e+300"),
            (1e15, "1e+15"),
            (123456789012345.0, "123456789012345"),
            (9007199254740992.0, "9.007199254740992e+15"),
            (0.0001, "0.0001"),
            (0.00001, "1e-05"),
            (1.5e-7, "1.5e-07"),
            (-0.0, "-0"),
            (5e-324, "5e-324"),
            (f64::MAX, "1.7976931348623157e+308"),
            (1.0 / 3.0, "0.3333333333333333"),
        ] {
            assert_eq!(format_float(f), text, "{f:e}");
        }
        // As PostgreSQL 15 prints them (`SELECT x::real`).
        for (f, text) in [
            (0.1f32, "0.1"),
            (1.0, "1"),
            (123456.0, "123456"),
            (1234567.0, "1.234567e+06"),
            (0.0001, "0.0001"),
            (1.5e-5, "1.5e-05"),
            (f32::MAX, "3.4028235e+38"),
            (-0.0, "-0"),
        ] {
            assert_eq!(format_float4(f), text, "{f:e}");
        }
    }

    /// The layout `shortest` had when it was handed a `String` of Rust's digits: kept as the
    /// reference the in-place one is compared with.
    fn joined(f: f64, scientific: String, fixed_below: i32) -> String {
        if f.is_nan() {
            return "NaN".into();
        }
        if f.is_infinite() {
            return (if f > 0.0 { "Infinity" } else { "-Infinity" }).into();
        }
        if f == 0.0 {
            return (if f.is_sign_negative() { "-0" } else { "0" }).into();
        }
        let (mantissa, power) = scientific.split_once('e').unwrap_or((&scientific, "0"));
        let power: i32 = power.parse().unwrap_or(0);
        let digits: String = mantissa.chars().filter(|c| *c != '.').collect();
        let digits = digits.trim_end_matches('0');
        let mut out = String::new();
        if f < 0.0 {
            out.push('-');
        }
        let zeros = |out: &mut String, n: i32| (0..n).for_each(|_| out.push('0'));
        let whole = power + 1;
        if (-4..fixed_below).contains(&power) {
            if whole <= 0 {
                out.push_str("0.");
                zeros(&mut out, -whole);
                out.push_str(digits);
            } else if whole as usize >= digits.len() {
                out.push_str(digits);
                zeros(&mut out, whole - digits.len() as i32);
            } else {
                let (int, frac) = digits.split_at(whole as usize);
                out.push_str(int);
                out.push('.');
                out.push_str(frac);
            }
        } else {
            let (first, rest) = digits.split_at(1);
            out.push_str(first);
            if !rest.is_empty() {
                out.push('.');
                out.push_str(rest);
            }
            let sign = if power < 0 { '-' } else { '+' };
            out.push_str(&format!("e{sign}{:02}", power.abs()));
        }
        out
    }

    proptest::proptest! {
        /// Every float8 and real, NaNs, infinities, zeros and subnormals included, prints as
        /// the joined layout printed it, and appends after what the buffer holds.
        #[test]
        fn in_place_printing_matches_the_joined_layout(
            bits in proptest::prelude::any::<u64>(),
            bits4 in proptest::prelude::any::<u32>(),
            small in -1e7f64..1e7,
        ) {
            for f in [f64::from_bits(bits), small, small.round(), small / 1e6] {
                let mut out = String::from("x");
                write_float(&mut out, f);
                proptest::prop_assert_eq!(&out[1..], joined(f, format!("{:e}", f.abs()), 15));
            }
            let f = f32::from_bits(bits4);
            let mut out = String::from("x");
            write_float4(&mut out, f);
            let want = joined(f64::from(f), format!("{:e}", f.abs()), 6);
            proptest::prop_assert_eq!(&out[1..], want);
        }
    }
}
