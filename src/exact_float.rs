//! Drift-free `sum(float8)` / `avg(float8)` under inserts and deletes.
//!
//! PostgreSQL 15 aggregates `float8` by repeated IEEE additions: `sum` uses
//! `float8pl` (`float8_pl` in `utils/float.h`), `avg` uses `float8_accum`
//! followed by `float8_avg` (`Sx / N`, both in `utils/adt/float.c`). A view
//! maintained incrementally cannot replay that: subtracting a deleted value
//! from a rounded running sum does not undo its addition, and after millions
//! of changes the error grows without bound. This accumulator instead keeps
//! the *exact* sum: every finite `f64` is an integer multiple of 2^-1074, so
//! the sum of finite values is a `BigInt` counted in units of 2^-1074, which
//! inserts and retracts update exactly. Reading the sum rounds that exact
//! value once, to nearest with ties to even, which is what PostgreSQL
//! returns whenever its own additions are exact (integers, few-digit data)
//! and otherwise the best possible `f64` of the true sum.
//!
//! Special values follow IEEE arithmetic as `float8pl` applies it: any NaN,
//! or both infinities, gives NaN; otherwise one kind of infinity wins. A sum
//! of only `-0.0` values is `-0.0` (`sum` starts from the first value), while
//! `float8_accum` starts `Sx` at `+0.0`, so the average is then `0`.
//!
//! Differences from PostgreSQL: where finite inputs overflow, PostgreSQL
//! raises "value out of range: overflow" (`float_overflow_error`) and this
//! returns ±Infinity; and for zero rows PostgreSQL returns NULL, which the
//! caller decides from `count()`.

use num_bigint::BigInt;
use num_traits::{Signed, ToPrimitive};
use serde::{Deserialize, Serialize};

/// Exact running sum of `f64` values that supports retraction.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct ExactFloatSum {
    /// Exact sum of the finite values, in units of 2^-1074.
    #[serde(with = "shifted_bytes")]
    finite: BigInt,
    nan: i64,
    pos_inf: i64,
    neg_inf: i64,
    /// How many of the values are `-0.0`.
    neg_zero: i64,
    count: i64,
}

/// Serializes the exact sum as its trailing zero bits and the rest, in two's-complement
/// little-endian bytes. Counted in units of 2^-1074, a sum of ordinary values (runtimes, prices)
/// has about a thousand zero low bits: about 135 bytes as a plain integer, about 10 this way, in
/// every group record that holds a float SUM or AVG.
mod shifted_bytes {
    use num_bigint::BigInt;
    use serde::{de::Error, Deserialize, Deserializer, Serialize, Serializer};

    /// No sum of `f64` values needs more bits than this (2^1024 / 2^-1074 is 2^2098, and a
    /// count of values adds at most 64): a larger shift is a damaged record, not a number.
    const MAX_SHIFT: u64 = 4096;

    pub fn serialize<S: Serializer>(v: &BigInt, s: S) -> Result<S::Ok, S::Error> {
        let shift = v.trailing_zeros().unwrap_or(0);
        (shift, (v >> shift).to_signed_bytes_le()).serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<BigInt, D::Error> {
        let (shift, bytes) = <(u64, Vec<u8>)>::deserialize(d)?;
        if shift > MAX_SHIFT {
            return Err(D::Error::custom(format!(
                "an exact float sum shifted by {shift} bits (at most {MAX_SHIFT})"
            )));
        }
        Ok(BigInt::from_signed_bytes_le(&bytes) << shift)
    }
}

/// A finite `f64` as an exact multiple of 2^-1074.
fn to_units(v: f64) -> BigInt {
    let bits = v.to_bits();
    let exponent = (bits >> 52) & 0x7ff;
    let fraction = bits & ((1u64 << 52) - 1);
    // Normal: (2^52 + fraction) * 2^(exponent - 1075); subnormal: fraction * 2^-1074.
    let (significand, shift) = if exponent == 0 {
        (fraction, 0)
    } else {
        (fraction | (1u64 << 52), exponent - 1)
    };
    let magnitude = BigInt::from(significand) << shift;
    if v.is_sign_negative() {
        -magnitude
    } else {
        magnitude
    }
}

/// `units * 2^-1074` rounded to the nearest `f64`, ties to even.
fn from_units(units: &BigInt) -> f64 {
    let magnitude = units.magnitude();
    let bits = magnitude.bits();
    let value = if bits <= 53 {
        // At most 53 significant bits: exactly representable.
        magnitude.to_u64().unwrap_or(0) as f64 * f64::from_bits(1)
    } else {
        let shift = bits - 53;
        let mut top = (magnitude >> shift).to_u64().unwrap_or(0);
        let half = magnitude.bit(shift - 1);
        let below_half = magnitude.trailing_zeros().is_some_and(|tz| tz < shift - 1);
        if half && (below_half || top & 1 == 1) {
            top += 1;
        }
        // value = top * 2^(shift - 1074) with top in [2^52, 2^53].
        let (top, biased_exponent) = if top >> 53 == 1 {
            (top >> 1, shift + 2)
        } else {
            (top, shift + 1)
        };
        if biased_exponent >= 0x7ff {
            f64::INFINITY
        } else {
            f64::from_bits((biased_exponent << 52) | (top & ((1u64 << 52) - 1)))
        }
    };
    if units.is_negative() {
        -value
    } else {
        value
    }
}

impl ExactFloatSum {
    pub fn new() -> ExactFloatSum {
        ExactFloatSum::default()
    }

    /// Includes `v` (an inserted row).
    pub fn add(&mut self, v: f64) {
        self.apply(v, 1);
    }

    /// Removes `v`, which must have been added before (a deleted row).
    pub fn retract(&mut self, v: f64) {
        self.apply(v, -1);
    }

    fn apply(&mut self, v: f64, delta: i64) {
        self.count += delta;
        if v.is_nan() {
            self.nan += delta;
        } else if v == f64::INFINITY {
            self.pos_inf += delta;
        } else if v == f64::NEG_INFINITY {
            self.neg_inf += delta;
        } else if v == 0.0 {
            self.neg_zero += if v.is_sign_negative() { delta } else { 0 };
        } else if delta > 0 {
            self.finite += to_units(v);
        } else {
            self.finite -= to_units(v);
        }
    }

    /// Number of values currently included (NaN and infinities count too).
    pub fn count(&self) -> i64 {
        self.count
    }

    /// The sum, as `sum(float8)` defines it for the current values (0 when
    /// there are none; PostgreSQL returns NULL then).
    pub fn sum(&self) -> f64 {
        if self.nan > 0 || (self.pos_inf > 0 && self.neg_inf > 0) {
            f64::NAN
        } else if self.pos_inf > 0 {
            f64::INFINITY
        } else if self.neg_inf > 0 {
            f64::NEG_INFINITY
        } else if self.count > 0 && self.neg_zero == self.count {
            -0.0
        } else {
            from_units(&self.finite)
        }
    }

    /// `avg(float8)`: `float8_avg`'s `Sx / N`, or `None` for no values.
    pub fn avg(&self) -> Option<f64> {
        // float8_accum starts Sx at +0.0, so an all -0.0 input averages to 0.
        (self.count != 0).then(|| (self.sum() + 0.0) / self.count as f64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sum_of(values: &[f64]) -> ExactFloatSum {
        let mut acc = ExactFloatSum::new();
        values.iter().for_each(|&v| acc.add(v));
        acc
    }

    /// Shewchuk's exact summation with CPython `math.fsum`'s correctly rounded
    /// final step: an independent way to compute the correctly rounded sum.
    fn fsum(values: &[f64]) -> f64 {
        let mut partials: Vec<f64> = Vec::new();
        for &value in values {
            let mut x = value;
            let mut kept = 0;
            for i in 0..partials.len() {
                let mut y = partials[i];
                if x.abs() < y.abs() {
                    std::mem::swap(&mut x, &mut y);
                }
                let hi = x + y;
                let lo = y - (hi - x);
                if lo != 0.0 {
                    partials[kept] = lo;
                    kept += 1;
                }
                x = hi;
            }
            partials.truncate(kept);
            partials.push(x);
        }
        let Some(mut hi) = partials.pop() else {
            return 0.0;
        };
        let mut lo = 0.0;
        while let Some(y) = partials.pop() {
            let x = hi;
            hi = x + y;
            lo = y - (hi - x);
            if lo != 0.0 {
                break;
            }
        }
        // Half-way cases: the next partial decides which way to round.
        if let Some(&next) = partials.last() {
            if (lo < 0.0 && next < 0.0) || (lo > 0.0 && next > 0.0) {
                let y = lo * 2.0;
                let x = hi + y;
                if y == x - hi {
                    hi = x;
                }
            }
        }
        hi
    }

    #[test]
    fn sums_are_correctly_rounded() {
        // PostgreSQL: sum/avg over (0.1),(0.2) print 0.30000000000000004 and 0.15000000000000002.
        let acc = sum_of(&[0.1, 0.2]);
        assert_eq!(acc.sum(), 0.30000000000000004);
        assert_eq!(acc.avg(), Some(0.15000000000000002));
        // Sequential addition gives 1.0; the exact sum 1 + 2e-16 rounds up.
        assert_eq!(sum_of(&[1.0, 1e-16, 1e-16]).sum(), 1.0000000000000002);
        assert_eq!(sum_of(&[1e100, 1.0, -1e100]).sum(), 1.0);
        let two53 = 9007199254740992.0;
        assert_eq!(sum_of(&[two53, 1.0]).sum(), two53); // tie to even
        assert_eq!(sum_of(&[two53, 3.0]).sum(), two53 + 4.0);
        assert_eq!(sum_of(&[5e-324, 5e-324]).sum(), 1e-323);
        assert_eq!(
            sum_of(&[f64::MIN_POSITIVE, -5e-324]).sum(),
            2.225073858507201e-308
        );
        assert_eq!(sum_of(&[f64::MAX, -f64::MAX, f64::MAX]).sum(), f64::MAX);
        assert_eq!(sum_of(&[1e308, 1e308]).sum(), f64::INFINITY);
        assert_eq!(sum_of(&[-1e308, -1e308]).sum(), f64::NEG_INFINITY);
        assert_eq!(sum_of(&[1e308, 1e308]).avg(), Some(f64::INFINITY));
    }

    #[test]
    fn retraction_is_exact() {
        let mut acc = sum_of(&[1e16, 1.0]);
        acc.retract(1e16);
        assert_eq!((acc.sum(), acc.count()), (1.0, 1));
        acc.retract(1.0);
        assert_eq!((acc.sum(), acc.count(), acc.avg()), (0.0, 0, None));
    }

    #[test]
    fn special_values_follow_float8pl() {
        let mut acc = sum_of(&[1.5, f64::NAN]);
        assert!(acc.sum().is_nan());
        acc.retract(f64::NAN);
        assert_eq!(acc.sum(), 1.5);
        acc.add(f64::INFINITY);
        assert_eq!((acc.sum(), acc.avg()), (f64::INFINITY, Some(f64::INFINITY)));
        acc.add(f64::NEG_INFINITY); // PostgreSQL: Infinity + -Infinity gives NaN
        assert!(acc.sum().is_nan() && acc.avg().is_some_and(f64::is_nan));
        acc.retract(f64::INFINITY);
        assert_eq!((acc.sum(), acc.count()), (f64::NEG_INFINITY, 2));
        acc.retract(f64::NEG_INFINITY);
        assert_eq!(acc.sum(), 1.5);
        // PostgreSQL: sum over ('-0'),('-0') prints -0, avg prints 0.
        let zeros = sum_of(&[-0.0, -0.0]);
        assert!(zeros.sum() == 0.0 && zeros.sum().is_sign_negative());
        assert!(zeros
            .avg()
            .is_some_and(|a| a == 0.0 && a.is_sign_positive()));
        assert!(sum_of(&[-0.0, 0.0]).sum().is_sign_positive());
    }

    #[test]
    fn million_inserts_then_retractions_leave_the_exact_subset_sum() {
        let mut state = 0x2545_f491_4f6c_dd1d_u64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let values: Vec<f64> = (0..1_000_000)
            .map(|_| {
                let r = next();
                // Exponents 2^-60..2^60, and some subnormals; random sign and fraction.
                let exponent = match r % 100 {
                    0 => 0,
                    _ => 1023 - 60 + (r >> 8) % 121,
                };
                f64::from_bits((r & (1 << 63)) | (exponent << 52) | (next() >> 12))
            })
            .collect();
        let mut acc = sum_of(&values);
        assert_eq!(acc.sum().to_bits(), fsum(&values).to_bits());
        let keep = |i: usize| i % 997 == 3;
        for (i, &v) in values.iter().enumerate().rev() {
            if !keep(i) {
                acc.retract(v);
            }
        }
        let subset: Vec<f64> = (0..values.len())
            .filter(|&i| keep(i))
            .map(|i| values[i])
            .collect();
        assert_eq!(acc.count(), subset.len() as i64);
        assert_eq!(acc.sum().to_bits(), fsum(&subset).to_bits());
    }

    #[test]
    fn serde_round_trip() {
        let acc = sum_of(&[0.1, f64::NAN, -3.5e-310]);
        let json = serde_json::to_string(&acc).expect("serialize");
        let mut back: ExactFloatSum = serde_json::from_str(&json).expect("deserialize");
        back.retract(f64::NAN);
        assert_eq!((back.sum(), back.count()), (0.1 - 3.5e-310, 2));
    }

    /// Any value a float8 column can hold, ordinary ones most often.
    fn float() -> impl proptest::strategy::Strategy<Value = f64> {
        use proptest::prelude::*;
        prop_oneof![
            6 => (-1e6f64..1e6).prop_map(|v| (v * 1000.0).round() / 1000.0),
            2 => any::<f64>(),
            1 => prop_oneof![
                Just(0.0),
                Just(-0.0),
                Just(f64::MIN_POSITIVE / 3.0),
                Just(-f64::MAX),
                Just(f64::MAX),
                Just(f64::INFINITY),
                Just(f64::NAN),
            ],
        ]
    }

    proptest::proptest! {
        /// After any stream of inserts and retractions, the stored form reads back as the same
        /// accumulator (the exact integer and every count), and encodes again to the same bytes.
        #[test]
        fn records_read_back_as_the_same_sum(
            values in proptest::collection::vec(float(), 1..60),
            retract in proptest::collection::vec(proptest::bool::ANY, 60),
        ) {
            use crate::state::keys::{decode_record, encode_record};
            let mut acc = ExactFloatSum::new();
            for (i, &v) in values.iter().enumerate() {
                acc.add(v);
                if retract[i] {
                    acc.retract(values[i / 2]);
                    acc.add(values[i / 2]);
                    acc.retract(v);
                }
                let bytes = encode_record(&acc);
                let back: ExactFloatSum = decode_record(&bytes).expect("a stored sum reads back");
                proptest::prop_assert_eq!(&back.finite, &acc.finite);
                proptest::prop_assert_eq!(
                    (back.nan, back.pos_inf, back.neg_inf, back.neg_zero, back.count),
                    (acc.nan, acc.pos_inf, acc.neg_inf, acc.neg_zero, acc.count)
                );
                proptest::prop_assert_eq!(back.sum().to_bits(), acc.sum().to_bits());
                proptest::prop_assert_eq!(encode_record(&back), bytes);
            }
        }
    }

    /// An ordinary value's sum is stored in a few bytes, not as a 1,080-bit integer; a shift no
    /// sum can have is a damaged record.
    #[test]
    fn ordinary_sums_are_stored_small_and_damage_is_refused() {
        use crate::state::keys::{decode_record, encode_record};
        let bytes = encode_record(&sum_of(&[12.345, 7.5, 1.25]));
        assert!(bytes.len() <= 24, "{} bytes", bytes.len());
        #[derive(Serialize)]
        struct Damaged {
            finite: (u64, Vec<u8>),
            counts: [i64; 5],
        }
        let damaged = encode_record(&Damaged {
            finite: (1 << 40, vec![1]),
            counts: [0, 0, 0, 0, 1],
        });
        let read = decode_record::<ExactFloatSum>(&damaged);
        assert!(read.is_err_and(|e| e.to_string().contains("shifted by")));
    }
}
