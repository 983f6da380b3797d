//! Calendar arithmetic, `date_trunc`, and cross-type comparisons.

use std::cmp::Ordering;

use super::*;

#[test]
fn calendar_arithmetic_and_trunc() {
    check(
        "UTC",
        &[
            ("ts+", "2026-01-31 10:00", "1 month", "2026-02-28 10:00:00"),
            ("ts+", "2024-02-29", "1 year", "2025-02-28 00:00:00"),
            ("ts+", "2024-02-29", "-13 mons", "2023-01-29 00:00:00"),
            (
                "ts+",
                "2026-03-31 23:59:59.999999",
                "1 mon -1 day",
                "2026-04-29 23:59:59.999999",
            ),
            ("ts+", "0001-01-31 BC", "1 month", "0001-02-29 00:00:00 BC"),
            (
                "ts+",
                "2026-12-31",
                "2147483647 days",
                "ERROR: timestamp out of range",
            ),
            ("date+", "2026-01-31", "1 mon 1 day", "2026-03-01 00:00:00"),
            (
                "trunc_ts",
                "2026-05-17 13:14:15.123456",
                "milliseconds",
                "2026-05-17 13:14:15.123",
            ),
            (
                "trunc_ts",
                "2026-05-17 13:14:15.123456",
                "MicroSecondsXYZ",
                "2026-05-17 13:14:15.123456",
            ),
            (
                "trunc_ts",
                "2026-05-17 13:14:15.123456",
                "w",
                "2026-05-11 00:00:00",
            ),
            (
                "trunc_ts",
                "2026-05-17 13:14:15.123456",
                "qtr",
                "2026-04-01 00:00:00",
            ),
            (
                "trunc_ts",
                "2026-05-17 13:14:15.123456",
                "decade",
                "2020-01-01 00:00:00",
            ),
            (
                "trunc_ts",
                "2026-05-17 13:14:15.123456",
                "c",
                "2001-01-01 00:00:00",
            ),
            (
                "trunc_ts",
                "2000-03-15",
                "millennium",
                "1001-01-01 00:00:00",
            ),
            (
                "trunc_ts",
                "0044-03-15 12:00 BC",
                "week",
                "0044-03-11 00:00:00 BC",
            ),
            ("trunc_ts", "0005-03-15", "decade", "0001-01-01 00:00:00 BC"),
            (
                "trunc_ts",
                "0001-03-15 BC",
                "century",
                "0100-01-01 00:00:00 BC",
            ),
            (
                "trunc_ts",
                "2026-05-17",
                "timezone",
                "ERROR: unit \"timezone\" not supported for type timestamp without time zone",
            ),
            (
                "trunc",
                "2026-05-17",
                "Fortnight",
                "ERROR: unit \"fortnight\" not recognized for type timestamp with time zone",
            ),
            ("ts-ts", "2026-03-10", "2026-03-08 12:00", "1 day 12:00:00"),
            (
                "ts-ts",
                "2026-03-08 12:00",
                "2026-03-10",
                "-1 days -12:00:00",
            ),
        ],
    );
    let d = |s| parse_date(s).unwrap();
    assert_eq!(
        date_plus_days(d("2026-01-01"), -7)
            .map(format_date)
            .unwrap(),
        "2025-12-25"
    );
    assert_eq!(date_minus_date(d("2026-03-08"), d("2026-01-01")), Ok(66));
    assert_eq!(
        date_plus_days(d("5874897-12-31"), 1),
        Err(TimeError::DateOutOfRange)
    );
    assert_eq!(
        date_minus_date(DATE_POS_INF, 0).unwrap_err().to_string(),
        "cannot subtract infinite dates"
    );
    assert_eq!(date_plus_days(DATE_POS_INF, 5), Ok(DATE_POS_INF));
}

#[test]
fn cross_type_comparisons() {
    let ny = zone("America/New_York");
    let t = |s| parse_timestamptz(s, &ny).unwrap();
    let d = |s| parse_date(s).unwrap();
    assert_eq!(
        cmp_date_timestamptz(d("2026-03-08"), t("2026-03-08 05:00:00+00"), &ny),
        Ordering::Equal
    );
    assert_eq!(
        cmp_date_timestamptz(d("2026-03-08"), t("2026-03-08 04:59:59+00"), &ny),
        Ordering::Greater
    );
    assert_eq!(
        cmp_date_timestamptz(d("5874897-12-31"), TS_POS_INF, &ny),
        Ordering::Less
    );
    assert_eq!(
        cmp_date_timestamptz(d("5874897-12-31"), t("294247-01-01 00:00+00"), &ny),
        Ordering::Greater
    );
    assert_eq!(
        cmp_date_timestamp(DATE_POS_INF, TS_POS_INF),
        Ordering::Equal
    );
    let ts = parse_timestamp("2026-11-01 01:30").unwrap();
    assert_eq!(
        cmp_timestamp_timestamptz(ts, t("2026-11-01 06:30:00+00"), &ny),
        Ordering::Equal
    );
    assert_eq!(
        cmp_timestamp_timestamptz(ts, t("2026-11-01 05:30:00+00"), &ny),
        Ordering::Greater
    );
}
