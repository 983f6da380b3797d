//! Unit tests of the PostgreSQL date/time port. Expected values were printed
//! by a real PostgreSQL 15.18 server (DateStyle ISO, IntervalStyle postgres)
//! for the same expressions; the shared harness lives here.

use super::calendar::is_finite;
use super::*;

mod arith;
mod text;
mod zones;

fn zone(name: &str) -> PgTimeZone {
    PgTimeZone::parse(name).unwrap()
}

/// Evaluates a small expression language mirroring the SQL that produced
/// the expected values; errors render as `ERROR: <message>`.
fn eval(tz: &PgTimeZone, op: &str, a: &str, b: &str) -> String {
    let tstz = |s: &str| parse_timestamptz(s, tz);
    let out = (|| -> Result<String> {
        Ok(match op {
            "tstz" => format_timestamptz(tstz(a)?, tz),
            "date" => format_date(timestamptz_to_date(tstz(a)?, tz)?),
            "tstz::ts" => format_timestamp(timestamptz_to_timestamp(tstz(a)?, tz)?),
            "ts::tstz" => {
                format_timestamptz(timestamp_to_timestamptz(parse_timestamp(a)?, tz)?, tz)
            }
            "date::tstz" => format_timestamptz(date_to_timestamptz(parse_date(a)?, tz)?, tz),
            "date-iv::tstz" => {
                let ts = date_minus_interval(parse_date(a)?, parse_interval(b)?)?;
                format_timestamptz(timestamp_to_timestamptz(ts, tz)?, tz)
            }
            "trunc" => format_timestamptz(date_trunc_timestamptz(b, tstz(a)?, tz)?, tz),
            "trunc_ts" => format_timestamp(date_trunc_timestamp(b, parse_timestamp(a)?)?),
            "+" => {
                let r = timestamptz_plus_interval(tstz(a)?, parse_interval(b)?, tz)?;
                format_timestamptz(r, tz)
            }
            "-" => {
                let r = timestamptz_minus_interval(tstz(a)?, parse_interval(b)?, tz)?;
                format_timestamptz(r, tz)
            }
            "ts+" => format_timestamp(timestamp_plus_interval(
                parse_timestamp(a)?,
                parse_interval(b)?,
            )?),
            "date+" => format_timestamp(date_plus_interval(parse_date(a)?, parse_interval(b)?)?),
            "interval" => format_interval(parse_interval(a)?),
            "timestamp" => format_timestamp(parse_timestamp(a)?),
            "date_in" => format_date(parse_date(a)?),
            "ts-ts" => format_interval(timestamp_minus_timestamp(
                parse_timestamp(a)?,
                parse_timestamp(b)?,
            )?),
            _ => unreachable!("{op}"),
        })
    })();
    out.unwrap_or_else(|e| format!("ERROR: {e}"))
}

fn check(zone_name: &str, cases: &[(&str, &str, &str, &str)]) {
    let tz = zone(zone_name);
    for &(op, a, b, want) in cases {
        assert_eq!(eval(&tz, op, a, b), want, "{zone_name}: {op} {a:?} {b:?}");
    }
}

/// xorshift64*: deterministic pseudo-random numbers without a dependency.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn range(&mut self, lo: i64, hi: i64) -> i64 {
        lo + (self.next() % (hi - lo) as u64) as i64
    }
}

#[test]
fn never_panics() {
    let mut rng = Rng(42);
    let zones = [
        zone("America/New_York"),
        zone("Pacific/Kiritimati"),
        zone("<-08>+08"),
    ];
    let units = ["day", "week", "millennium", "decade", "hour", "ms", "bogus"];
    let special = [
        i64::MIN,
        i64::MIN + 1,
        i64::MAX - 1,
        i64::MAX,
        MIN_TS,
        MIN_TS - 1,
        0,
    ];
    for i in 0..20_000 {
        let ts = if i % 5 == 0 {
            special[i % 7]
        } else {
            rng.next() as i64
        };
        let d = if i % 7 == 0 {
            [i32::MIN, i32::MAX, i32::MIN + 1, i32::MAX - 1][i % 4]
        } else {
            rng.next() as i32
        };
        let iv = Interval::new(
            rng.next() as i32 >> (i % 32),
            rng.next() as i32 >> (i % 32),
            rng.next() as i64 >> (i % 64),
        );
        let tz = &zones[i % 3];
        let _ = (
            timestamptz_to_date(ts, tz),
            timestamp_to_date(ts),
            date_to_timestamp(d),
        );
        let _ = (date_to_timestamptz(d, tz), timestamp_to_timestamptz(ts, tz));
        let _ = (
            timestamptz_to_timestamp(ts, tz),
            tz.utc_to_local(ts),
            tz.local_to_utc(ts),
        );
        let _ = (
            timestamp_plus_interval(ts, iv),
            timestamp_minus_interval(ts, iv),
        );
        let _ = (
            timestamptz_plus_interval(ts, iv, tz),
            timestamptz_minus_interval(ts, iv, tz),
        );
        let _ = (
            date_plus_interval(d, iv),
            date_minus_interval(d, iv),
            date_plus_days(d, d),
        );
        let _ = (
            date_minus_days(d, d),
            date_minus_date(d, d),
            timestamp_minus_timestamp(ts, !ts),
        );
        let _ = (
            date_trunc_timestamp(units[i % 7], ts),
            date_trunc_timestamptz(units[i % 7], ts, tz),
        );
        let _ = (
            cmp_date_timestamptz(d, ts, tz),
            cmp_timestamp_timestamptz(ts, ts, tz),
        );
        let _ = (
            format_date(d),
            format_timestamp(ts),
            format_timestamptz(ts, tz),
        );
        let _ = (
            format_timestamptz_utc(ts),
            format_interval(iv),
            iv.pg_cmp(&Interval::ZERO),
        );
        let s = format_timestamp(ts);
        if is_finite(ts) && (MIN_TS..TS_POS_INF).contains(&ts) {
            assert_eq!(parse_timestamp(&s), Ok(ts), "{s}");
            assert_eq!(
                parse_interval(&format_interval(iv)).map(|p| p.span()),
                Ok(iv.span())
            );
        }
    }
    let alphabet = b"0123456789-+:. tTzZ/@abcdehmnorsuwyBC\xc3\xa9";
    for _ in 0..50_000 {
        let len = rng.range(0, 24) as usize;
        let bytes: Vec<u8> = (0..len)
            .map(|_| alphabet[rng.range(0, alphabet.len() as i64) as usize])
            .collect();
        let s = String::from_utf8_lossy(&bytes);
        let _ = (
            parse_date(&s),
            parse_timestamp(&s),
            parse_timestamptz(&s, &zones[0]),
        );
        let _ = (parse_interval(&s), PgTimeZone::parse(&s));
    }
}
