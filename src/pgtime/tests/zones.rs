//! Time zone behaviour: DST gaps and overlaps in several zones, fixed and
//! far-future zones, zone names, and local/UTC round trips.

use super::*;

#[test]
fn new_york_brief_queries() {
    check(
        "America/New_York",
        &[
            ("date", "2026-03-08 06:30:00+00", "", "2026-03-08"),
            (
                "date-iv::tstz",
                "2026-03-08",
                "7 days",
                "2026-03-01 00:00:00-05",
            ),
            ("tstz", "2026-03-08 02:30", "", "2026-03-08 03:30:00-04"),
            ("tstz", "2026-11-01 01:30", "", "2026-11-01 01:30:00-05"),
            (
                "trunc",
                "2026-11-01 12:00+00",
                "day",
                "2026-11-01 00:00:00-04",
            ),
            (
                "trunc",
                "2026-11-01 12:00+00",
                "week",
                "2026-10-26 00:00:00-04",
            ),
            ("+", "2026-01-31", "1 month", "2026-02-28 00:00:00-05"),
            (
                "+",
                "2026-03-07 12:00-05",
                "1 day",
                "2026-03-08 12:00:00-04",
            ),
            ("tstz", "2026-03-08 02:00", "", "2026-03-08 03:00:00-04"),
            ("tstz", "2026-03-08 03:00", "", "2026-03-08 03:00:00-04"),
            ("tstz", "2026-11-01 01:00", "", "2026-11-01 01:00:00-05"),
            ("tstz", "2026-11-01 02:00", "", "2026-11-01 02:00:00-05"),
            (
                "tstz",
                "2026-11-01 00:59:59.999999",
                "",
                "2026-11-01 00:59:59.999999-04",
            ),
            (
                "trunc",
                "2026-11-01 05:30:00+00",
                "hour",
                "2026-11-01 01:00:00-04",
            ),
            (
                "trunc",
                "2026-11-01 06:30:00+00",
                "hour",
                "2026-11-01 01:00:00-05",
            ),
            (
                "+",
                "2026-10-31 01:30-04",
                "1 day",
                "2026-11-01 01:30:00-05",
            ),
            (
                "+",
                "2026-03-07 02:30-05",
                "1 day",
                "2026-03-08 03:30:00-04",
            ),
            (
                "-",
                "2026-03-08 03:30-04",
                "1 day",
                "2026-03-07 03:30:00-05",
            ),
            (
                "-",
                "2026-03-31 12:00-04",
                "1 month",
                "2026-02-28 12:00:00-05",
            ),
            ("date", "2026-11-01 03:59:59+00", "", "2026-10-31"),
            ("date", "2026-11-01 04:00:00+00", "", "2026-11-01"),
            ("tstz", "2200-07-01 12:00", "", "2200-07-01 12:00:00-04"),
            (
                "tstz",
                "1800-07-01 12:00",
                "",
                "1800-07-01 12:00:00-04:56:02",
            ),
            (
                "tstz",
                "0044-03-15 12:00 BC",
                "",
                "0044-03-15 12:00:00-04:56:02 BC",
            ),
            (
                "tstz",
                "4714-11-24 00:00:00+00 BC",
                "",
                "4714-11-23 19:03:58-04:56:02 BC",
            ),
            (
                "trunc",
                "2026-05-17 13:14:15+00",
                "quarter",
                "2026-04-01 00:00:00-04",
            ),
            (
                "trunc",
                "2026-01-01 03:00+00",
                "year",
                "2025-01-01 00:00:00-05",
            ),
            ("trunc", "infinity", "fortnight", "infinity"),
            (
                "tstz",
                "2026-01-01 10:00:00+0530",
                "",
                "2025-12-31 23:30:00-05",
            ),
            (
                "tstz",
                "2026-01-01 10:00:00-03:30:15",
                "",
                "2026-01-01 08:30:15-05",
            ),
            ("tstz", "2026-01-01T10:00:00Z", "", "2026-01-01 05:00:00-05"),
            (
                "tstz",
                "2026-01-01 10:00 Europe/Berlin",
                "",
                "2026-01-01 04:00:00-05",
            ),
            (
                "tstz",
                "2026-01-01 10:00:00+00 BC",
                "",
                "2026-01-01 05:03:58-04:56:02 BC",
            ),
            ("tstz", "epoch", "", "1969-12-31 19:00:00-05"),
            ("tstz", " infinity ", "", "infinity"),
            ("tstz", "-infinity", "", "-infinity"),
        ],
    );
}

#[test]
fn santiago_midnight_does_not_exist() {
    // Clocks go from 2026-09-05 23:59:59 -04 to 2026-09-06 01:00:00 -03,
    // and from 2026-04-05 00:00 -03 back to 2026-04-04 23:00 -04.
    check(
        "America/Santiago",
        &[
            ("date::tstz", "2026-09-06", "", "2026-09-06 01:00:00-03"),
            ("tstz", "2026-09-06 00:30", "", "2026-09-06 01:30:00-03"),
            ("tstz", "2026-04-04 23:30", "", "2026-04-04 23:30:00-04"),
            ("date::tstz", "2026-04-05", "", "2026-04-05 00:00:00-04"),
            ("date", "2026-09-06 03:59:59+00", "", "2026-09-05"),
            ("date", "2026-09-06 04:00:00+00", "", "2026-09-06"),
            (
                "trunc",
                "2026-09-06 12:00+00",
                "day",
                "2026-09-06 01:00:00-03",
            ),
            (
                "trunc",
                "2026-04-04 23:30-04",
                "day",
                "2026-04-04 00:00:00-03",
            ),
            (
                "trunc",
                "2026-04-04 23:30-04",
                "hour",
                "2026-04-04 23:00:00-04",
            ),
            (
                "trunc",
                "2026-04-04 23:30-03",
                "hour",
                "2026-04-04 23:00:00-03",
            ),
            (
                "trunc",
                "2026-09-20 12:00+00",
                "month",
                "2026-09-01 00:00:00-04",
            ),
            (
                "trunc",
                "2026-09-07 12:00+00",
                "week",
                "2026-09-07 00:00:00-03",
            ),
            (
                "+",
                "2026-09-05 12:00-04",
                "1 day",
                "2026-09-06 12:00:00-03",
            ),
            (
                "+",
                "2026-09-05 00:00-04",
                "1 day",
                "2026-09-06 01:00:00-03",
            ),
            (
                "+",
                "2026-08-06 00:00-04",
                "1 month",
                "2026-09-06 01:00:00-03",
            ),
            (
                "+",
                "2026-09-05 12:00-04",
                "24 hours",
                "2026-09-06 13:00:00-03",
            ),
            (
                "ts::tstz",
                "2026-09-06 00:00:00",
                "",
                "2026-09-06 01:00:00-03",
            ),
            ("tstz::ts", "2026-09-06 12:00+00", "", "2026-09-06 09:00:00"),
            ("date", "2026-03-08 06:30:00+00", "", "2026-03-08"),
            (
                "+",
                "2026-03-07 12:00-05",
                "1 day",
                "2026-03-08 14:00:00-03",
            ),
        ],
    );
}

#[test]
fn lord_howe_half_hour_dst() {
    // +10:30 → +11 on 2026-10-04 at 02:00; +11 → +10:30 on 2026-04-05.
    check(
        "Australia/Lord_Howe",
        &[
            ("tstz", "2026-10-04 02:15", "", "2026-10-04 02:45:00+11"),
            ("tstz", "2026-10-04 02:30", "", "2026-10-04 02:30:00+11"),
            ("tstz", "2026-04-05 01:45", "", "2026-04-05 01:45:00+10:30"),
            ("tstz", "2026-04-05 01:30", "", "2026-04-05 01:30:00+10:30"),
            ("tstz", "2026-04-05 02:00", "", "2026-04-05 02:00:00+10:30"),
            ("date", "2026-10-03 13:59:59+00", "", "2026-10-04"),
            ("date", "2026-10-03 13:00:00+00", "", "2026-10-03"),
            (
                "trunc",
                "2026-10-04 12:00+00",
                "day",
                "2026-10-04 00:00:00+10:30",
            ),
            (
                "trunc",
                "2026-04-04 14:45:00+00",
                "hour",
                "2026-04-05 01:00:00+11",
            ),
            (
                "trunc",
                "2026-04-04 15:15:00+00",
                "hour",
                "2026-04-05 01:30:00+11",
            ),
            (
                "+",
                "2026-10-03 02:15+10:30",
                "1 day",
                "2026-10-04 02:45:00+11",
            ),
            (
                "+",
                "2026-10-03 12:00+10:30",
                "1 day",
                "2026-10-04 12:00:00+11",
            ),
            (
                "date-iv::tstz",
                "2026-03-08",
                "7 days",
                "2026-03-01 00:00:00+11",
            ),
            (
                "+",
                "2026-03-07 12:00-05",
                "1 day",
                "2026-03-09 04:00:00+11",
            ),
        ],
    );
}

#[test]
fn berlin_transitions() {
    check(
        "Europe/Berlin",
        &[
            ("tstz", "2026-03-29 02:30", "", "2026-03-29 03:30:00+02"),
            ("tstz", "2026-10-25 02:30", "", "2026-10-25 02:30:00+01"),
            ("tstz", "2026-10-25 02:00", "", "2026-10-25 02:00:00+01"),
            ("tstz", "2026-10-25 03:00", "", "2026-10-25 03:00:00+01"),
            ("tstz", "2026-03-29 02:00", "", "2026-03-29 03:00:00+02"),
            (
                "trunc",
                "2026-10-25 00:30+00",
                "hour",
                "2026-10-25 02:00:00+02",
            ),
            (
                "trunc",
                "2026-10-25 01:30+00",
                "hour",
                "2026-10-25 02:00:00+01",
            ),
            (
                "+",
                "2026-10-24 02:30+02",
                "1 day",
                "2026-10-25 02:30:00+01",
            ),
            (
                "-",
                "2026-10-25 02:30+02",
                "1 day",
                "2026-10-24 02:30:00+02",
            ),
            (
                "+",
                "2026-03-28 02:30+01",
                "1 day 1 hour",
                "2026-03-29 04:30:00+02",
            ),
            (
                "trunc",
                "2026-11-01 12:00+00",
                "week",
                "2026-10-26 00:00:00+01",
            ),
        ],
    );
}

#[test]
fn fixed_and_far_future_zones() {
    check(
        "<+05:30>-05:30",
        &[
            ("tstz", "2026-01-01 10:00", "", "2026-01-01 10:00:00+05:30"),
            (
                "tstz",
                "2026-01-01 10:00+00",
                "",
                "2026-01-01 15:30:00+05:30",
            ),
        ],
    );
    check(
        "<-08>+08",
        &[("tstz", "2026-07-01 10:00", "", "2026-07-01 10:00:00-08")],
    );
    check(
        "GMT+5",
        &[("tstz", "2026-07-01 10:00+00", "", "2026-07-01 05:00:00-05")],
    );
    check(
        "UTC0",
        &[("tstz", "2026-07-01 10:00+00", "", "2026-07-01 10:00:00+00")],
    );
    check(
        "America/Santiago",
        &[
            ("tstz", "2200-01-01 12:00", "", "2200-01-01 12:00:00-03"),
            ("tstz", "2200-07-01 12:00", "", "2200-07-01 12:00:00-04"),
            ("tstz", "2150-09-07 00:00", "", "2150-09-07 00:00:00-03"),
        ],
    );
    check(
        "Africa/Casablanca",
        &[
            ("tstz", "2087-04-01 12:00", "", "2087-04-01 12:00:00+00"),
            ("tstz", "2087-07-01 12:00", "", "2087-07-01 12:00:00+01"),
            ("tstz", "2200-05-01 12:00", "", "2200-05-01 12:00:00+01"),
        ],
    );
    check(
        "America/New_York",
        &[("tstz", "9999-07-01 12:00", "", "9999-07-01 12:00:00-04")],
    );
}

#[test]
fn zone_names() {
    for name in [
        "UTC",
        "Etc/UTC",
        "America/New_York",
        "Europe/Berlin",
        "GMT",
        "EST5EDT",
    ] {
        assert_eq!(zone(name).name(), name);
    }
    assert_eq!(zone(" america/new_york ").name(), "America/New_York");
    assert_eq!(zone("<+05:30>-05:30").utc_offset_secs(0), 19_800);
    assert_eq!(zone("<-08>+08").utc_offset_secs(0), -28_800);
    for bad in [
        "XXX3YYY,M3.2.0,M11.1.0",
        "localtime",
        "",
        "Mars/Olympus_Mons",
    ] {
        let err = PgTimeZone::parse(bad).unwrap_err().to_string();
        assert!(err.contains("IANA zone name"), "{err}");
    }
}

/// Zones tzdata defines with one offset (`Etc/UTC`, `Etc/GMT-14`, `Zulu`) skip chrono-tz's
/// table: every zone, so classified or not, still gives chrono-tz's offset at every instant
/// sampled (about every 97 days from 1812 to 2099, both seasons of any zone with DST), and the
/// local wall clock maps back through the same offset.
#[test]
fn every_zone_keeps_chrono_tz_offsets() {
    use chrono::{Offset, TimeZone};
    const DAY: i64 = 86_400;
    let (from, to) = (-4_980_000_000_i64, 4_090_000_000_i64);
    let mut constant = 0;
    for tz in chrono_tz::TZ_VARIANTS {
        let zone = PgTimeZone::from_tz(tz);
        let mut offsets = std::collections::BTreeSet::new();
        let mut t = from;
        while t < to {
            let utc = chrono::DateTime::from_timestamp(t, 0)
                .expect("in range")
                .naive_utc();
            let want = i64::from(tz.offset_from_utc_datetime(&utc).fix().local_minus_utc());
            assert_eq!(zone.utc_offset_secs(t), want, "{} at {t}", tz.name());
            offsets.insert(want);
            t += 97 * DAY + 3_607;
        }
        if offsets.len() == 1 {
            let off = *offsets.first().expect("one offset");
            assert_eq!(zone.local_offset_secs(1_000_000_000), off, "{}", tz.name());
            constant += 1;
        }
    }
    assert!(constant >= 30, "only {constant} zones kept one offset");
    for (name, off) in [
        ("Etc/UTC", 0),
        ("Zulu", 0),
        ("Etc/GMT+5", -18_000),
        ("Etc/GMT-14", 50_400),
    ] {
        assert_eq!(zone(name).utc_offset_secs(123_456_789), off, "{name}");
        assert_eq!(zone(name).name(), name);
    }
}

#[test]
fn local_utc_round_trip_away_from_transitions() {
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let zones = [
        "America/New_York",
        "Europe/Berlin",
        "Australia/Lord_Howe",
        "America/Santiago",
    ];
    for name in zones
        .iter()
        .chain(&["Asia/Kolkata", "Pacific/Chatham", "UTC"])
    {
        let tz = zone(name);
        for _ in 0..5_000 {
            // 1850..2400, microsecond precision.
            let utc = rng.range(-3_786_825_600_000_000, 13_569_465_600_000_000);
            let secs = utc.div_euclid(USECS_PER_SEC);
            let offs = [-2, -1, 0, 1, 2].map(|d| tz.utc_offset_secs(secs + d * SECS_PER_DAY));
            if offs.iter().any(|&o| o != offs[0]) {
                continue; // within two days of a transition
            }
            let local = tz.utc_to_local(utc);
            assert_eq!(tz.local_to_utc(local), utc, "{name} {utc}");
            assert_eq!(
                tz.utc_to_local(tz.local_to_utc(local)),
                local,
                "{name} {local}"
            );
            let text = format_timestamptz(utc, &tz);
            assert_eq!(
                parse_timestamptz(&text, &PgTimeZone::UTC),
                Ok(utc),
                "{text}"
            );
        }
    }
    assert_eq!(zone("UTC").local_to_utc(TS_NEG_INF), TS_NEG_INF);
    assert_eq!(zone("Europe/Berlin").utc_to_local(TS_POS_INF), TS_POS_INF);
}

/// Zones whose offsets never change at a midnight let a day window be decided by a `DATE(x)`
/// key; zones that switched at midnight (Sao Paulo's DST began at 00:00 until 2019, Havana's
/// at 00:00 in several years) do not, and the maintainer keeps per-row revisits there.
#[test]
fn zones_that_switch_at_midnight_are_told_apart() {
    for clean in [
        "UTC",
        "America/New_York",
        "Europe/Berlin",
        "Asia/Kolkata",
        "Australia/Sydney",
    ] {
        let tz = PgTimeZone::parse(clean).expect("a zone");
        assert!(tz.midnights_are_clean(), "{clean}");
    }
    assert!(PgTimeZone::fixed(-5 * 3600)
        .expect("an offset")
        .midnights_are_clean());
    for unclean in ["America/Sao_Paulo", "America/Havana"] {
        let tz = PgTimeZone::parse(unclean).expect("a zone");
        assert!(!tz.midnights_are_clean(), "{unclean}");
        assert!(!tz.midnights_are_clean(), "{unclean}, cached");
    }
}
