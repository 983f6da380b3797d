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

/// The text PostgreSQL prints for a float8 (`float8out` at `extra_float_digits` 1, its default):
/// the shortest digits that read back to the same bits, in fixed point when the first digit's
/// power of ten is from -4 to 14 (`1`, `0.0001`), else as `d.ddde+XX` (`1e+15`, `1.5e-05`).
/// Printing exactly what PostgreSQL prints lets `init --resync` tell an unchanged target row by
/// its text ([`crate::sink::fill`]).
pub fn format_float(f: f64) -> String {
    shortest(f, format!("{:e}", f.abs()), 15)
}

/// The text PostgreSQL prints for a real (`float4out`): the shortest digits of the float4, in
/// fixed point for powers of ten from -4 to 5 (`0.1`, `123456`, `1.234567e+06`).
pub fn format_float4(f: f32) -> String {
    shortest(f64::from(f), format!("{:e}", f.abs()), 6)
}

/// Lays out `scientific` (Rust's shortest round-trip digits of `f`'s magnitude, `d.ddde<power>`)
/// as PostgreSQL does: fixed point for powers from -4 up to `fixed_below`.
fn shortest(f: f64, scientific: String, fixed_below: i32) -> String {
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
    let mut out = String::with_capacity(digits.len() + 8);
    if f < 0.0 {
        out.push('-');
    }
    let zeros = |out: &mut String, n: i32| (0..n).for_each(|_| out.push('0'));
    let whole = power + 1; // digits before the point
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
