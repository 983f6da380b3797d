use super::*;
use crate::pgtime::PgTimeZone;

fn text(text: &str, ty: SqlType) -> Value {
    Value::parse_text(text, ty, &PgTimeZone::UTC).expect("valid text")
}

/// `numeric_send`'s bytes: digit count, weight, sign, display scale, base-10000 digits.
fn numeric_bytes(weight: i16, sign: u16, dscale: u16, digits: &[u16]) -> Vec<u8> {
    let mut b = Vec::new();
    for w in [digits.len() as u16, weight as u16, sign, dscale] {
        b.extend_from_slice(&w.to_be_bytes());
    }
    for d in digits {
        b.extend_from_slice(&d.to_be_bytes());
    }
    b
}

#[test]
fn numerics_decode_as_their_text_reads() {
    let cases: [(&str, Vec<u8>); 9] = [
        ("0", numeric_bytes(0, 0, 0, &[])),
        ("0.000", numeric_bytes(0, 0, 3, &[])),
        ("123.4500", numeric_bytes(0, 0, 4, &[123, 4500])),
        ("-0.0001", numeric_bytes(-1, 0x4000, 4, &[1])),
        ("100000000000000000000", numeric_bytes(5, 0, 0, &[1])),
        ("12345678.9", numeric_bytes(1, 0, 1, &[1234, 5678, 9000])),
        ("NaN", numeric_bytes(0, 0xC000, 0, &[])),
        ("Infinity", numeric_bytes(0, 0xD000, 0, &[])),
        ("-Infinity", numeric_bytes(0, 0xF000, 0, &[])),
    ];
    for (t, bytes) in cases {
        let got = value(&bytes, SqlType::Numeric).expect("decodes");
        assert_eq!(
            format!("{got:?}"),
            format!("{:?}", text(t, SqlType::Numeric)),
            "{t}"
        );
    }
    // A digit past the display scale is not a numeric PostgreSQL stores.
    assert!(value(&numeric_bytes(0, 0, 1, &[1, 2345]), SqlType::Numeric).is_err());
    assert!(value(&numeric_bytes(0, 0, 0, &[10_000]), SqlType::Numeric).is_err());
}

#[test]
fn dates_times_and_floats_decode_as_their_text_reads() {
    let ts = |micros: i64| micros.to_be_bytes().to_vec();
    let cases: Vec<(&str, SqlType, Vec<u8>)> = vec![
        ("2000-01-01", SqlType::Date, 0i32.to_be_bytes().to_vec()),
        (
            "1970-01-01",
            SqlType::Date,
            (-10_957i32).to_be_bytes().to_vec(),
        ),
        ("infinity", SqlType::Date, i32::MAX.to_be_bytes().to_vec()),
        ("-infinity", SqlType::Date, i32::MIN.to_be_bytes().to_vec()),
        ("2000-01-01 00:00:01.5", SqlType::Timestamp, ts(1_500_000)),
        (
            "1999-12-31 23:59:59+00",
            SqlType::TimestampTz,
            ts(-1_000_000),
        ),
        ("infinity", SqlType::TimestampTz, ts(i64::MAX)),
        ("-infinity", SqlType::Timestamp, ts(i64::MIN)),
        ("-0", SqlType::Float8, (-0.0f64).to_be_bytes().to_vec()),
        ("NaN", SqlType::Float8, (-f64::NAN).to_be_bytes().to_vec()),
        ("0.1", SqlType::Float4, 0.1f32.to_be_bytes().to_vec()),
        (
            "-Infinity",
            SqlType::Float4,
            f32::NEG_INFINITY.to_be_bytes().to_vec(),
        ),
        ("-32768", SqlType::Int2, i16::MIN.to_be_bytes().to_vec()),
        ("t", SqlType::Bool, vec![1]),
        ("ab", SqlType::Bpchar, b"ab   ".to_vec()),
    ];
    for (t, ty, bytes) in cases {
        let got = value(&bytes, ty).expect("decodes");
        let want = text(t, ty);
        assert_eq!(
            format!("{got:?}"),
            format!("{want:?}"),
            "{t} as {}",
            ty.pg_name()
        );
        if let (Value::Float(a), Value::Float(b)) = (&got, &want) {
            assert_eq!(a.to_bits(), b.to_bits(), "{t}: the same bits");
        }
    }
    let mut iv = 90_000_000i64.to_be_bytes().to_vec();
    iv.extend_from_slice(&3i32.to_be_bytes());
    iv.extend_from_slice(&14i32.to_be_bytes());
    let want = text("1 year 2 mons 3 days 00:01:30", SqlType::Interval);
    assert_eq!(
        format!("{:?}", value(&iv, SqlType::Interval).expect("decodes")),
        format!("{want:?}")
    );
    assert!(
        value(&[0, 0, 0], SqlType::Int4).is_err(),
        "a short field is an error"
    );
}

/// A stream cut anywhere: the header and each row are taken only once whole.
#[test]
fn rows_are_taken_only_when_whole() {
    let mut stream = SIGNATURE.to_vec();
    stream.extend_from_slice(&0u32.to_be_bytes());
    stream.extend_from_slice(&2u32.to_be_bytes());
    stream.extend_from_slice(b"xy"); // a header extension, skipped
    stream.extend_from_slice(&2i16.to_be_bytes());
    stream.extend_from_slice(&4i32.to_be_bytes());
    stream.extend_from_slice(&7i32.to_be_bytes());
    stream.extend_from_slice(&(-1i32).to_be_bytes());
    stream.extend_from_slice(&(-1i16).to_be_bytes());
    for cut in 0..stream.len() {
        let part = &stream[..cut];
        let Step::Done((), h) = header(part).expect("a valid header") else {
            assert!(cut < SIGNATURE.len() + 10, "header incomplete at {cut}");
            continue;
        };
        assert_eq!(h, SIGNATURE.len() + 10);
        match row(&part[h..]).expect("a valid row") {
            Step::More => assert!(cut < h + 2 + 8 + 4),
            Step::Done(Some(fields), len) => {
                assert_eq!(len, 2 + 8 + 4);
                assert_eq!(fields, vec![Some((6, 10)), None]);
                assert_eq!(
                    value(&part[h + 6..h + 10], SqlType::Int4).ok(),
                    Some(Value::Int(7))
                );
                let rest = &part[h + len..];
                assert!(matches!(row(rest), Ok(Step::More)) == (rest.len() < 2));
            }
            Step::Done(None, _) => panic!("the trailer before the row"),
        }
    }
    assert!(
        header(b"PGCOPY\nXXXXXXXXXXXXXXX").is_err(),
        "a bad signature"
    );
}
