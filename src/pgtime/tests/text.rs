//! Text input and output of dates, timestamps and intervals, and interval
//! ordering and serde.

use std::cmp::Ordering;

use super::*;

#[test]
fn text_input_and_output() {
    check(
        "UTC",
        &[
            (
                "timestamp",
                "2026-11-23 10:00:00.123456",
                "",
                "2026-11-23 10:00:00.123456",
            ),
            (
                "timestamp",
                "2026-11-23 05:00:00.5-05",
                "",
                "2026-11-23 05:00:00.5",
            ),
            (
                "timestamp",
                "2026-01-01 24:00:00",
                "",
                "2026-01-02 00:00:00",
            ),
            (
                "timestamp",
                "2026-01-01 23:59:60",
                "",
                "2026-01-02 00:00:00",
            ),
            (
                "timestamp",
                "2026-01-01 10:00:00.1234565",
                "",
                "2026-01-01 10:00:00.123456",
            ),
            (
                "timestamp",
                "2026-01-01 10:00:00.9999999",
                "",
                "2026-01-01 10:00:01",
            ),
            ("timestamp", "2026-1-5 1:2:3", "", "2026-01-05 01:02:03"),
            ("timestamp", "10000-01-01", "", "10000-01-01 00:00:00"),
            ("timestamp", "0001-02-29 BC", "", "0001-02-29 00:00:00 BC"),
            ("timestamp", "026-01-01", "", "0026-01-01 00:00:00"),
            (
                "tstz",
                "2026-11-23 05:00:00+05:30",
                "",
                "2026-11-22 23:30:00+00",
            ),
            ("date_in", "2026-11-23 10:00:00+05", "", "2026-11-23"),
            ("date_in", "0044-03-15 BC", "", "0044-03-15 BC"),
            ("date_in", "5874897-12-31", "", "5874897-12-31"),
            ("date_in", "infinity", "", "infinity"),
            ("date_in", "epoch", "", "1970-01-01"),
            (
                "timestamp",
                "2026-01-01 23:59:60.5",
                "",
                "ERROR: date/time field value out of range: \"2026-01-01 23:59:60.5\"",
            ),
            (
                "timestamp",
                "2026-02-29",
                "",
                "ERROR: date/time field value out of range: \"2026-02-29\"",
            ),
            (
                "timestamp",
                "0000-01-01",
                "",
                "ERROR: date/time field value out of range: \"0000-01-01\"",
            ),
            (
                "tstz",
                "2026-01-01 10:00:00+16",
                "",
                "ERROR: time zone displacement out of range: \"2026-01-01 10:00:00+16\"",
            ),
            (
                "tstz",
                "4714-11-23 23:59:59+00 BC",
                "",
                "ERROR: timestamp out of range: \"4714-11-23 23:59:59+00 BC\"",
            ),
            (
                "date_in",
                "5874898-01-01",
                "",
                "ERROR: date out of range: \"5874898-01-01\"",
            ),
            (
                "timestamp",
                "2026-01-01 10",
                "",
                "ERROR: invalid input syntax for type timestamp: \"2026-01-01 10\"",
            ),
        ],
    );
    assert!(parse_timestamp("now")
        .unwrap_err()
        .to_string()
        .contains("current time"));
    assert_eq!(
        format_timestamptz_utc(parse_timestamp("2026-11-23 10:00").unwrap()),
        "2026-11-23 10:00:00+00"
    );
    assert_eq!(
        format_timestamptz_utc(-62_135_596_800_000_000 - USECS_PER_DAY),
        "0001-12-31 00:00:00+00 BC"
    );
    assert_eq!(format_date(DATE_NEG_INF), "-infinity");
    assert_eq!(format_timestamp(TS_POS_INF), "infinity");
}

#[test]
fn intervals() {
    let cases = [
        ("7 days", "7 days"),
        ("30 days", "30 days"),
        ("1 month", "1 mon"),
        ("3 mons", "3 mons"),
        ("2 hours", "02:00:00"),
        ("90 days", "90 days"),
        ("1 day 2 hours", "1 day 02:00:00"),
        ("1 week", "7 days"),
        ("00:00:00", "00:00:00"),
        (
            "1 year 2 mons 3 days 04:05:06.5",
            "1 year 2 mons 3 days 04:05:06.5",
        ),
        ("-1 days +02:00:00", "-1 days +02:00:00"),
        ("1 day -02:00:00", "1 day -02:00:00"),
        ("1day", "1 day"),
        ("1 2 hours", "1 day 02:00:00"),
        ("1 day ago", "-1 days"),
        ("ago 1 day", "-1 days"),
        ("1 day ago 2 hours", "-1 days -02:00:00"),
        ("@ 1 day", "1 day"),
        ("1.5 days", "1 day 12:00:00"),
        ("0.5 months", "15 days"),
        ("1.5 years", "1 year 6 mons"),
        ("-1.5 hours", "-01:30:00"),
        ("0.1 seconds", "00:00:00.1"),
        ("1.0000005 seconds", "00:00:01"),
        ("1.0000015 seconds", "00:00:01.000001"),
        ("5", "00:00:05"),
        ("1:30", "01:30:00"),
        ("1:30.5", "00:01:30.5"),
        ("100000000:00:00", "100000000:00:00"),
        ("2562047788:00:54.775807", "2562047788:00:54.775807"),
        ("-9223372036854775808 us", "-2562047788:00:54.775808"),
        ("1 week 2 days", "9 days"),
        ("1 c", "100 years"),
        ("1 mil", "1000 years"),
        ("1 y 2 mon", "1 year 2 mons"),
        (".5 hours", "00:30:00"),
        ("+5 days", "5 days"),
        ("1 day, 2 hours", "1 day 02:00:00"),
        ("1 microsecondsfoo", "00:00:00.000001"),
        ("2147483647 days", "2147483647 days"),
        ("178956970 years", "178956970 years"),
        ("0.3333333333 months", "9 days 23:59:59.999914"),
        ("1.000001 weeks", "7 days 00:00:00.6048"),
        ("-00:00:01", "-00:00:01"),
        (
            "-1 year -2 mons +3 days -04:05:06",
            "-1 years -2 mons +3 days -04:05:06",
        ),
    ];
    for (input, want) in cases {
        assert_eq!(
            eval(&PgTimeZone::UTC, "interval", input, ""),
            want,
            "{input}"
        );
    }
    for (input, err) in [
        ("1 ago", "invalid input syntax for type interval: \"1 ago\""),
        (
            "1 day 2 days",
            "invalid input syntax for type interval: \"1 day 2 days\"",
        ),
        (
            "1 hour 00:30",
            "invalid input syntax for type interval: \"1 hour 00:30\"",
        ),
        (
            "-.5 hours",
            "invalid input syntax for type interval: \"-.5 hours\"",
        ),
        (
            "1 quarter",
            "invalid input syntax for type interval: \"1 quarter\"",
        ),
        (
            "infinity",
            "invalid input syntax for type interval: \"infinity\"",
        ),
        (" ", "invalid input syntax for type interval: \" \""),
        (
            "2147483648 days",
            "interval field value out of range: \"2147483648 days\"",
        ),
        ("178956971 years", "interval out of range"),
        (
            "2562047788:00:54.775808",
            "interval field value out of range: \"2562047788:00:54.775808\"",
        ),
    ] {
        assert_eq!(parse_interval(input).unwrap_err().to_string(), err);
    }
}

#[test]
fn interval_ordering_and_serde() {
    let iv = |s| parse_interval(s).unwrap();
    assert!(iv("1 mon").pg_eq(&iv("30 days")));
    assert_ne!(iv("1 mon"), iv("30 days"));
    assert_eq!(iv("1 day").pg_cmp(&iv("25 hours")), Ordering::Less);
    assert_eq!(iv("-1 mon").pg_cmp(&iv("-29 days")), Ordering::Less);
    let mut v = [
        iv("1 mon"),
        iv("30 days"),
        iv("29 days 23:59:59"),
        iv("-1 day"),
    ];
    v.sort();
    assert_eq!(
        v.iter().map(|i| format_interval(*i)).collect::<Vec<_>>(),
        ["-1 days", "29 days 23:59:59", "30 days", "1 mon"]
    );
    let json = serde_json::to_string(&iv("1 mon 2 days 00:00:03")).unwrap();
    assert_eq!(json, r#"{"months":1,"days":2,"micros":3000000}"#);
    assert_eq!(
        serde_json::from_str::<Interval>(&json).unwrap(),
        iv("1 mon 2 days 3 seconds")
    );
}
