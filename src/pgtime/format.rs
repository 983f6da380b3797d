//! Text output as the server prints it with `DateStyle = ISO` and
//! `IntervalStyle = postgres`.

use std::fmt::Write as _;

use super::calendar::civil_from_days;
use super::interval::Interval;
use super::zone::{local_split, PgTimeZone};
use super::{
    DATE_NEG_INF, DATE_POS_INF, TS_NEG_INF, TS_POS_INF, USECS_PER_HOUR, USECS_PER_MINUTE,
    USECS_PER_SEC,
};

fn push_date(out: &mut String, days: i64) -> bool {
    let (y, m, d) = civil_from_days(days);
    let _ = write!(
        out,
        "{:04}-{:02}-{:02}",
        if y > 0 { y } else { 1 - y },
        m,
        d
    );
    y <= 0
}

/// Seconds with trailing zeros of the fraction stripped (`AppendSeconds`).
fn push_secs(out: &mut String, sec: i64, fsec: i64) {
    let _ = write!(out, "{:02}", sec.unsigned_abs());
    if fsec != 0 {
        let frac = format!("{:06}", fsec.unsigned_abs());
        out.push('.');
        out.push_str(frac.trim_end_matches('0'));
    }
}

fn push_time(out: &mut String, tod: i64) {
    let secs = tod / USECS_PER_SEC;
    let _ = write!(out, "{:02}:{:02}:", secs / 3600, secs / 60 % 60);
    push_secs(out, secs % 60, tod % USECS_PER_SEC);
}

/// `EncodeTimezone`: `+hh`, `+hh:mm` or `+hh:mm:ss` (seconds east).
pub(super) fn push_offset(out: &mut String, off: i64) {
    let a = off.unsigned_abs();
    let _ = write!(out, "{}{:02}", if off >= 0 { '+' } else { '-' }, a / 3600);
    if !a.is_multiple_of(60) {
        let _ = write!(out, ":{:02}:{:02}", a / 60 % 60, a % 60);
    } else if !(a / 60).is_multiple_of(60) {
        let _ = write!(out, ":{:02}", a / 60 % 60);
    }
}

fn format_ts_with(ts: i64, off: Option<i64>, tz: &PgTimeZone) -> String {
    match ts {
        TS_NEG_INF => return "-infinity".into(),
        TS_POS_INF => return "infinity".into(),
        _ => {}
    }
    let (days, tod) = local_split(ts, tz);
    let mut s = String::with_capacity(32);
    let bc = push_date(&mut s, days);
    s.push(' ');
    push_time(&mut s, tod);
    if let Some(off) = off {
        push_offset(&mut s, off);
    }
    if bc {
        s.push_str(" BC");
    }
    s
}

/// ISO output of a date (`2026-11-23`, `0044-03-15 BC`, `infinity`).
pub fn format_date(d: i32) -> String {
    match d {
        DATE_NEG_INF => "-infinity".into(),
        DATE_POS_INF => "infinity".into(),
        _ => {
            let mut s = String::with_capacity(16);
            if push_date(&mut s, i64::from(d)) {
                s.push_str(" BC");
            }
            s
        }
    }
}

pub fn format_timestamp(ts: i64) -> String {
    format_ts_with(ts, None, &PgTimeZone::UTC)
}

/// ISO output in UTC, ending in `+00` (valid COPY text input in any zone).
pub fn format_timestamptz_utc(ts: i64) -> String {
    format_ts_with(ts, Some(0), &PgTimeZone::UTC)
}

/// ISO output as the server prints it with this `TimeZone`.
pub fn format_timestamptz(ts: i64, tz: &PgTimeZone) -> String {
    let off = tz.utc_offset_secs(ts.div_euclid(USECS_PER_SEC));
    format_ts_with(ts, Some(off), tz)
}

/// `IntervalStyle = postgres` output, e.g. `1 year 2 mons -3 days +04:05:06.5`.
pub fn format_interval(iv: Interval) -> String {
    let mut s = String::with_capacity(32);
    let (mut is_zero, mut is_before) = (true, false);
    let parts = [
        (iv.months / 12, "year"),
        (iv.months % 12, "mon"),
        (iv.days, "day"),
    ];
    for (v, unit) in parts.into_iter().filter(|(v, _)| *v != 0) {
        let sep = if is_zero { "" } else { " " };
        let plus = if is_before && v > 0 { "+" } else { "" };
        let _ = write!(s, "{sep}{plus}{v} {unit}{}", if v != 1 { "s" } else { "" });
        is_before = v < 0;
        is_zero = false;
    }
    let t = iv.micros;
    let (hour, min, sec, fsec) = (
        t / USECS_PER_HOUR,
        t % USECS_PER_HOUR / USECS_PER_MINUTE,
        t % USECS_PER_MINUTE / USECS_PER_SEC,
        t % USECS_PER_SEC,
    );
    if is_zero || t != 0 {
        let minus = hour < 0 || min < 0 || sec < 0 || fsec < 0;
        let sign = if minus {
            "-"
        } else if is_before {
            "+"
        } else {
            ""
        };
        let _ = write!(
            s,
            "{}{sign}{:02}:{:02}:",
            if is_zero { "" } else { " " },
            hour.unsigned_abs(),
            min.unsigned_abs()
        );
        push_secs(&mut s, sec, fsec);
    }
    s
}
