//! Unit tests: results checked against what PostgreSQL 15.18 printed.

use super::*;

/// `operation arguments => output`, each output being what PostgreSQL 15.18
/// printed for the equivalent SQL (`'x'::numeric`, `a / b`, `avg(...)`,
/// `round(x, s)`, `x::numeric(p, s)`, `x::int8`, `x::float8::numeric`,
/// `x::numeric::float8`); errors are `ERROR: message`. `avg s n` is the
/// average of n values summing to s.
const PG_RESULTS: &str = "
    in 0.00 => 0.00 | in -0.5 => -0.5 | in 1e3 => 1000 | in 1.5E-2 => 0.015 | in 5. => 5
    in -0.00 => 0.00 | in +.5 => 0.5 | in 1.23e+2 => 123 | in 1.2345e2 => 123.45 | in -0 => 0
    in 100.0 => 100.0 | in 0001.10 => 1.10 | in 12.5e-1 => 1.25 | in 0.0e5 => 0
    in nan => NaN | in infinity => Infinity | in -INFINITY => -Infinity | in inf => Infinity
    in +Infinity => Infinity | in -inf => -Infinity | in 1e => ERROR: invalid input syntax for
    in . => ERROR: invalid input syntax for | in 1.2.3 => ERROR: invalid input syntax for
    in 1e+ => ERROR: invalid input syntax for | in e5 => ERROR: invalid input syntax for
    in 1_000 => ERROR: invalid input syntax for | in 0x10 => ERROR: invalid input syntax for
    in Infinityx => ERROR: invalid input syntax for | in --1 => ERROR: invalid input syntax for
    in 1e-16384 => ERROR: value overflows numeric format | in 1e-16383x => ERROR: invalid input
    in 1e131072 => ERROR: value overflows numeric format
    in 0e-20000 => ERROR: value overflows numeric format
    in 1e99999999999 => ERROR: value overflows numeric format
    / 1 3 => 0.33333333333333333333 | / 10 3 => 3.3333333333333333 | / 1 8 => 0.12500000000000000000
    / 2 3.0 => 0.66666666666666666667 | / 700.0 9 => 77.7777777777777778
    / 12.3400 7 => 1.7628571428571429 | / 0.0001 3 => 0.000033333333333333333333
    / 123456789.1234 0.07 => 1763668416.04857143 | / -5 3 => -1.6666666666666667
    / 2.5 1 => 2.5000000000000000 | / 0 3 => 0.00000000000000000000 | / 5 -3 => -1.6666666666666667
    / 0.00 7 => 0.00000000000000000000 | / 9999 9999 => 1.00000000000000000000
    / 10000 9999 => 1.0001000100010001 | / 1 10000 => 0.000100000000000000000000
    / -2 3 => -0.66666666666666666667 | / 1 3.00000000000000000000000001 => 0.33333333333333333333333333
    / 1e-20 3 => 0.0000000000000000000033333333333333333333 | / 1e20 3 => 33333333333333333333
    / 123456789012345678901234567890 7 => 17636684144620811271604938270
    / 0.5 1 => 0.50000000000000000000 | / 1.5 2 => 0.75000000000000000000
    / 0.00000005 1 => 0.000000050000000000000000 | / NaN 0 => NaN | / Infinity -Infinity => NaN
    / Infinity -2 => -Infinity | / -Infinity -2 => Infinity | / 5 Infinity => 0
    / -5 -Infinity => 0 | / 1 0 => ERROR: division by zero | / 0 0.00 => ERROR: division by zero
    / Infinity 0 => ERROR: division by zero | / -Infinity 0 => ERROR: division by zero
    avg 5.0000 3 => 1.6666666666666667 | avg 5 3 => 1.6666666666666667
    avg -3.25 3 => -1.08333333333333333333 | avg 100000000004 3 => 33333333334.66666667
    avg NaN 3 => NaN | avg -Infinity 2 => -Infinity
    * 1.50 2.0 => 3.000 | * 0.1 0.1 => 0.01 | * 1.000 0 => 0.000 | * -1.5 2 => -3.0
    * 1e-10 1e-10 => 0.00000000000000000001 | * 123.45 -0.001 => -0.12345 | * 100.0 7 => 700.0
    * Infinity 0 => NaN | * -Infinity -2 => Infinity | * NaN 0 => NaN
    + 1.5 2.25 => 3.75 | + -0.5 0.50 => 0.00 | + Infinity -Infinity => NaN
    + Infinity 5 => Infinity | - 1.5 1.50 => 0.00 | - 0.001 1 => -0.999
    - Infinity Infinity => NaN | - 5 Infinity => -Infinity
    round 1.5 3 => 1.500 | round 1234.5678 2 => 1234.57 | round 1234.5 -2 => 1200
    round -0.5 0 => -1 | round -0.45 1 => -0.5 | round 0.0049 2 => 0.00 | round 1250 -2 => 1300
    round -1250 -2 => -1300 | round NaN 2 => NaN | round Infinity 2 => Infinity
    round 5.5 0 => 6 | round 12.34 -5 => 0
    typmod 1.23 5 1 => 1.2 | typmod 1.25 5 1 => 1.3 | typmod -1.25 5 1 => -1.3
    typmod 0.5 1 0 => 1 | typmod NaN 3 1 => NaN | typmod 999.95 5 1 => 1000.0
    typmod 0.001 3 3 => 0.001 | typmod 12345 3 -2 => 12300 | typmod 0 2 2 => 0.00
    typmod 999.95 4 1 => ERROR: numeric field overflow
    typmod Infinity 3 1 => ERROR: numeric field overflow
    int8 2.5 => 3 | int8 -2.5 => -3 | int8 2.4999 => 2 | int8 -0.5 => -1 | int8 0.49 => 0
    int8 9223372036854775807.4 => 9223372036854775807
    int8 -9223372036854775808.4 => -9223372036854775808
    int8 9223372036854775807.5 => ERROR: bigint out of range
    int8 -9223372036854775808.5 => ERROR: bigint out of range
    int8 NaN => ERROR: cannot convert NaN to bigint
    int8 Infinity => ERROR: cannot convert infinity to bigint
    f8num 0.1 => 0.1 | f8num 1e-5 => 0.00001 | f8num 1.5e-7 => 0.00000015 | f8num -0.0 => 0
    f8num 123.456789012345678 => 123.456789012346 | f8num 1234567890123455 => 1234567890123460
    f8num 1234567890123445 => 1234567890123440 | f8num 99999999999999.99 => 100000000000000
    f8num 0.000123456789012345678 => 0.000123456789012346 | f8num 0.30000000000000004 => 0.3
    f8num 1e22 => 10000000000000000000000 | f8num -2.5 => -2.5 | f8num 4.35 => 4.35
    f8num NaN => NaN | f8num -inf => -Infinity | f8num inf => Infinity
    numf8 0.1 => 0.1 | numf8 1e300 => 1e+300 | numf8 123.456789012345678 => 123.45678901234568
    numf8 0.30000000000000004 => 0.30000000000000004 | numf8 1e-320 => 1e-320
    numf8 1.00000000000000011102230246251565404236316680908203125 => 1
    numf8 1.00000000000000011102230246251565404236316680908203126 => 1.0000000000000002
    numf8 -0.5 => -0.5 | numf8 -Infinity => -Infinity | numf8 NaN => NaN";

fn n(s: &str) -> Numeric {
    Numeric::parse(s).expect("valid numeric literal")
}

fn eval(op: &str, args: &[&str]) -> Result<String, NumericError> {
    let (a, b) = (
        Numeric::parse(args[0])?,
        args.get(1).copied().unwrap_or("0"),
    );
    let int = |s: &str| s.parse::<i32>().expect("integer argument");
    Ok(match op {
        "in" => a.to_string(),
        "+" => a.add(&n(b)).to_string(),
        "-" => a.sub(&n(b)).to_string(),
        "*" => a.mul(&n(b)).to_string(),
        "/" => a.div(&n(b))?.to_string(),
        "avg" => Numeric::avg(&a, i64::from(int(b)))?.to_string(),
        "round" => a.round_to_scale(int(b)).to_string(),
        "typmod" => a.apply_typmod(int(b), int(args[2]))?.to_string(),
        "int8" => a.to_i64_round()?.to_string(),
        "f8num" => Numeric::from_f64(args[0].parse().expect("f64 literal")).to_string(),
        // Compared as doubles: PostgreSQL prints 1e+300 where Rust prints 1e300.
        "numf8" => format!("{:e}", a.try_to_f64()?),
        _ => panic!("unknown operation {op}"),
    })
}

#[test]
fn results_match_postgres() {
    let mut checked = 0;
    for case in PG_RESULTS
        .split(['|', '\n'])
        .filter(|c| !c.trim().is_empty())
    {
        let (call, want) = case.split_once(" => ").expect("case has =>");
        let words: Vec<&str> = call.split_whitespace().collect();
        let got = eval(words[0], &words[1..]).unwrap_or_else(|e| format!("ERROR: {e}"));
        let want = match (words[0], want.trim().parse::<f64>()) {
            ("numf8", Ok(v)) => format!("{v:e}"),
            _ => want.trim().to_string(),
        };
        if want.starts_with("ERROR") {
            assert!(
                got.starts_with(&want),
                "{call}: got {got}, PostgreSQL printed {want}"
            );
        } else {
            assert_eq!(got, want, "{call}");
        }
        checked += 1;
    }
    assert_eq!(checked, 152);
}

#[test]
fn texts_with_blanks_and_long_outputs() {
    assert_eq!(n("  12.3400  ").to_string(), "12.3400");
    assert!(matches!(n("12.3400"), Numeric::Finite { dscale: 4, .. }));
    assert!(n(" NaN ").is_nan());
    assert_eq!(n("1e 3").to_string(), "1000"); // strtol skips blanks after 'e'
    for bad in ["", "- 1", "1 2"] {
        let msg = format!("invalid input syntax for type numeric: \"{bad}\"");
        assert_eq!(Numeric::parse(bad).map_err(|e| e.to_string()), Err(msg));
    }
    assert_eq!(n("1e-16383").to_string().len(), 16385);
    assert_eq!(n("1e131071").to_string().len(), 131072);
    let tiny = n("1e-1000").div(&n("7")).expect("nonzero");
    assert_eq!(tiny.to_string(), format!("0.{}", "0".repeat(1000)));
    // The product's scale is capped at NUMERIC_DSCALE_MAX (rounding half up).
    let capped = n("1e-10000").mul(&n("5e-6384")).to_string();
    assert_eq!((capped.len(), &capped[16379..]), (16385, "000001"));
    assert!(n("1e-10000").mul(&n("1e-10000")).is_zero());
    let f8num = |v: f64| Numeric::from_f64(v).to_string();
    assert_eq!(f8num(1e300), format!("1{}", "0".repeat(300)));
    assert_eq!(
        f8num(5e-324),
        format!("0.{}494065645841247", "0".repeat(323))
    );
    assert_eq!(
        f8num(1e-311),
        format!("0.{}999999999999948", "0".repeat(311))
    );
    assert_eq!(Numeric::from_f64(f64::MAX), n("1.79769313486232e308"));
    for big in ["1e400", "-1e400", "1e-400"] {
        let msg = format!("\"{}\" is out of range for type double precision", n(big));
        assert_eq!(n(big).try_to_f64().map_err(|e| e.to_string()), Err(msg));
    }
    // Without float8in's check, strtod's saturated values come back.
    let (inf, neg_zero) = (n("1e400").to_f64(), n("-1e-400").to_f64());
    assert!(inf == f64::INFINITY && neg_zero == 0.0 && neg_zero.is_sign_negative());
}

#[test]
fn ordering_equality_and_hash() {
    use std::collections::hash_map::DefaultHasher;
    let hash = |s: &str| {
        let mut h = DefaultHasher::new();
        n(s).hash(&mut h);
        h.finish()
    };
    assert_eq!(n("1.50"), n("1.5"));
    assert_eq!(
        [hash("1.50"), hash("100"), hash("0.000")],
        [hash("1.5"), hash("1e2"), hash("-0")]
    );
    assert_ne!(hash("10"), hash("1"));
    assert_eq!(n("NaN"), n("NaN"));
    let order = [
        "-Infinity",
        "-1e100",
        "-0.5",
        "0",
        "0.25",
        "1e100",
        "Infinity",
        "NaN",
    ];
    let mut sorted: Vec<Numeric> = order.iter().rev().map(|s| n(s)).collect();
    sorted.sort();
    assert_eq!(sorted, order.map(n));
}

#[test]
fn serde_round_trip_keeps_dscale() {
    let json = serde_json::to_string(&n("-12345678901234567890.1200")).expect("serialize");
    let back: Numeric = serde_json::from_str(&json).expect("deserialize");
    assert_eq!(back.to_string(), "-12345678901234567890.1200");
}

#[test]
fn reals_cast_to_numeric_with_six_significant_digits() {
    // SELECT x::real::numeric in PostgreSQL 15 (float4_numeric: "%.6g" of the float4's value).
    let f4num = |v: f32| Numeric::from_float_digits(f64::from(v), 6).to_string();
    assert_eq!(f4num(0.1), "0.1");
    assert_eq!(f4num(1.0 / 3.0), "0.333333");
    assert_eq!(f4num(123.456_79), "123.457");
    assert_eq!(f4num(1234567.0), "1234570");
    assert_eq!(f4num(-2.5e-7), "-0.00000025");
}

proptest::proptest! {
    /// Numerics whose digits fit in 128 bits are printed from a buffer on the stack: the same
    /// text as the digits of the big integer, padded and split at the scale.
    #[test]
    fn the_stack_printed_digits_are_the_big_integers(
        mantissa in proptest::prelude::any::<i128>(),
        wide in proptest::prelude::any::<bool>(),
        dscale in 0u32..48,
    ) {
        let mut m = num_bigint::BigInt::from(mantissa);
        if wide {
            // Past 128 bits too, where the big integer prints itself.
            m *= num_bigint::BigInt::from(u64::MAX);
        }
        let digits = m.magnitude().to_str_radix(10);
        let width = dscale as usize + 1;
        let padded = format!("{digits:0>width$}");
        let (int_part, frac_part) = padded.split_at(padded.len() - dscale as usize);
        let sign = if m < num_bigint::BigInt::from(0) { "-" } else { "" };
        let expected = if dscale == 0 {
            format!("{sign}{int_part}")
        } else {
            format!("{sign}{int_part}.{frac_part}")
        };
        proptest::prop_assert_eq!(Numeric::finite(m, dscale).to_string(), expected);
    }
}
