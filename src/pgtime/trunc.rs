//! `date_trunc` for `timestamp` and `timestamptz`, and the unit names it
//! shares with interval input (PostgreSQL's `deltatktbl`).

use super::calendar::{check_ts, civil_from_days, is_finite, make_ts, split, tm_days};
use super::zone::{local_fields_to_utc, local_split, PgTimeZone};
use super::{Result, TimeError, TY_TS, TY_TSTZ, USECS_PER_HOUR, USECS_PER_MINUTE, USECS_PER_SEC};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Unit {
    Micro,
    Milli,
    Second,
    Minute,
    Hour,
    Day,
    Week,
    Month,
    Quarter,
    Year,
    Decade,
    Century,
    Millennium,
    Tz,
    Ago,
}

/// PostgreSQL's `deltatktbl`; lookups compare at most 10 characters.
const UNITS: &[(Unit, &[&str])] = &[
    (Unit::Ago, &["ago"]),
    (Unit::Century, &["c", "cent", "centuries", "century"]),
    (Unit::Day, &["d", "day", "days"]),
    (Unit::Decade, &["dec", "decade", "decades", "decs"]),
    (Unit::Hour, &["h", "hour", "hours", "hr", "hrs"]),
    (Unit::Minute, &["m", "min", "mins", "minute", "minutes"]),
    (
        Unit::Micro,
        &["microsecon", "us", "usec", "usecs", "useconds"],
    ),
    (
        Unit::Millennium,
        &["mil", "millennia", "millennium", "mils"],
    ),
    (
        Unit::Milli,
        &["millisecon", "ms", "msec", "msecs", "mseconds"],
    ),
    (Unit::Month, &["mon", "mons", "month", "months"]),
    (Unit::Quarter, &["qtr", "quarter"]),
    (Unit::Second, &["s", "sec", "second", "seconds", "secs"]),
    (Unit::Tz, &["timezone", "timezone_h", "timezone_m"]),
    (Unit::Week, &["w", "week", "weeks"]),
    (Unit::Year, &["y", "year", "years", "yr", "yrs"]),
];

pub(super) fn lookup_unit(lower: &str) -> Option<Unit> {
    let key = &lower.as_bytes()[..lower.len().min(10)];
    let hit = |names: &&[&str]| names.iter().any(|n| n.as_bytes() == key);
    UNITS.iter().find(|(_, names)| hit(names)).map(|&(u, _)| u)
}

fn trunc_unit(unit: &str, ty: &'static str) -> Result<Unit> {
    let lower = unit.to_ascii_lowercase();
    match lookup_unit(&lower) {
        Some(Unit::Tz) => Err(TimeError::UnitNotSupported { unit: lower, ty }),
        Some(Unit::Ago) | None => Err(TimeError::UnitNotRecognized { unit: lower, ty }),
        Some(u) => Ok(u),
    }
}

/// Truncates a wall-clock value to (days, time of day); the flag says whether
/// the zone offset must be recomputed (units of a day or more), as in
/// `timestamptz_trunc`.
fn trunc_local(unit: Unit, days: i64, tod: i64) -> Result<(i64, i64, bool)> {
    let cut = |q: i64| Ok((days, tod - tod % q, false));
    let (mut y, mut m, mut d) = civil_from_days(days);
    match unit {
        Unit::Micro => return Ok((days, tod, false)),
        Unit::Milli => return cut(1000),
        Unit::Second => return cut(USECS_PER_SEC),
        Unit::Minute => return cut(USECS_PER_MINUTE),
        Unit::Hour => return cut(USECS_PER_HOUR),
        Unit::Week => (y, m, d) = civil_from_days(days - (days + 3).rem_euclid(7)),
        Unit::Day => {}
        _ => {
            // C division truncates toward zero; operands here are positive.
            y = match unit {
                Unit::Millennium if y > 0 => ((y + 999) / 1000) * 1000 - 999,
                Unit::Millennium => -((999 - (y - 1)) / 1000) * 1000 + 1,
                Unit::Century if y > 0 => ((y + 99) / 100) * 100 - 99,
                Unit::Century => -((99 - (y - 1)) / 100) * 100 + 1,
                Unit::Decade if y > 0 => (y / 10) * 10,
                Unit::Decade => -((8 - (y - 1)) / 10) * 10,
                _ => y,
            };
            m = if unit == Unit::Quarter {
                3 * ((m - 1) / 3) + 1
            } else if unit == Unit::Month {
                m
            } else {
                1
            };
            d = 1;
        }
    }
    Ok((tm_days(y, m, d)?, 0, true))
}

/// `date_trunc(unit, timestamp)`.
pub fn date_trunc_timestamp(unit: &str, ts: i64) -> Result<i64> {
    if !is_finite(ts) {
        return Ok(ts);
    }
    let u = trunc_unit(unit, TY_TS)?;
    let (days, tod) = split(check_ts(ts)?);
    let (days, tod, _) = trunc_local(u, days, tod)?;
    make_ts(days, tod).ok_or(TimeError::TimestampOutOfRange)
}

/// `date_trunc(unit, timestamptz)`, truncating in local time in `tz`. Units
/// below a day keep the original UTC offset (as PostgreSQL does).
pub fn date_trunc_timestamptz(unit: &str, ts: i64, tz: &PgTimeZone) -> Result<i64> {
    if !is_finite(ts) {
        return Ok(ts);
    }
    let u = trunc_unit(unit, TY_TSTZ)?;
    let off = tz.utc_offset_secs(check_ts(ts)?.div_euclid(USECS_PER_SEC));
    let (days, tod) = local_split(ts, tz);
    let (days, tod, redo) = trunc_local(u, days, tod)?;
    let r = if redo {
        local_fields_to_utc(days, tod, tz)
    } else {
        make_ts(days, tod - off * USECS_PER_SEC)
    };
    r.ok_or(TimeError::TimestampOutOfRange)
}
