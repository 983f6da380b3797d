//! Conversions between `date`, `timestamp` and `timestamptz`, and the
//! cross-type comparisons built on them.

use std::cmp::Ordering;

use super::calendar::{check_ts, is_finite, make_ts, split};
use super::zone::{local_fields_to_utc, local_split, PgTimeZone};
use super::{
    Result, TimeError, DATE_NEG_INF, DATE_POS_INF, MIN_DATE, TS_NEG_INF, TS_POS_INF, USECS_PER_DAY,
    USECS_PER_SEC,
};

pub fn timestamp_to_date(ts: i64) -> Result<i32> {
    match ts {
        TS_NEG_INF => Ok(DATE_NEG_INF),
        TS_POS_INF => Ok(DATE_POS_INF),
        _ => Ok(split(check_ts(ts)?).0 as i32),
    }
}

/// `DATE(ts)` / `ts::date`: the local calendar date in `tz`.
pub fn timestamptz_to_date(ts: i64, tz: &PgTimeZone) -> Result<i32> {
    if !is_finite(ts) {
        return timestamp_to_date(ts);
    }
    Ok(local_split(check_ts(ts)?, tz).0 as i32)
}

fn date_days(d: i32) -> Result<i64> {
    let d = i64::from(d);
    if !(MIN_DATE..=TS_POS_INF / USECS_PER_DAY).contains(&d) {
        return Err(TimeError::DateOutOfRangeForTimestamp);
    }
    Ok(d)
}

/// `date::timestamp` (midnight).
pub fn date_to_timestamp(d: i32) -> Result<i64> {
    match d {
        DATE_NEG_INF => Ok(TS_NEG_INF),
        DATE_POS_INF => Ok(TS_POS_INF),
        _ => Ok(date_days(d)? * USECS_PER_DAY),
    }
}

/// `date::timestamptz`: local midnight in `tz` (DST rules apply).
pub fn date_to_timestamptz(d: i32, tz: &PgTimeZone) -> Result<i64> {
    match d {
        DATE_NEG_INF => Ok(TS_NEG_INF),
        DATE_POS_INF => Ok(TS_POS_INF),
        _ => local_fields_to_utc(date_days(d)?, 0, tz).ok_or(TimeError::DateOutOfRangeForTimestamp),
    }
}

pub fn timestamp_to_timestamptz(ts: i64, tz: &PgTimeZone) -> Result<i64> {
    if !is_finite(ts) {
        return Ok(ts);
    }
    let (days, tod) = split(check_ts(ts)?);
    local_fields_to_utc(days, tod, tz).ok_or(TimeError::TimestampOutOfRange)
}

pub fn timestamptz_to_timestamp(ts: i64, tz: &PgTimeZone) -> Result<i64> {
    if !is_finite(ts) {
        return Ok(ts);
    }
    let off = tz.utc_offset_secs(check_ts(ts)?.div_euclid(USECS_PER_SEC));
    ts.checked_add(off * USECS_PER_SEC)
        .and_then(|t| make_ts(0, t))
        .ok_or(TimeError::TimestampOutOfRange)
}

/// Cross-type comparison as in `date_cmp_timestamp` and friends: a value
/// that overflows when converted compares beyond every finite timestamp on
/// its side, but not beyond the matching infinity.
fn cmp_converted(conv: Result<i64>, high: bool, other: i64) -> Ordering {
    match conv {
        Ok(t) => t.cmp(&other),
        Err(_) if high && other == TS_POS_INF => Ordering::Less,
        Err(_) if high => Ordering::Greater,
        Err(_) if other == TS_NEG_INF => Ordering::Greater,
        Err(_) => Ordering::Less,
    }
}

pub fn cmp_date_timestamp(d: i32, ts: i64) -> Ordering {
    cmp_converted(date_to_timestamp(d), d > 0, ts)
}

pub fn cmp_date_timestamptz(d: i32, ts: i64, tz: &PgTimeZone) -> Ordering {
    cmp_converted(date_to_timestamptz(d, tz), d > 0, ts)
}

pub fn cmp_timestamp_timestamptz(ts: i64, tstz: i64, tz: &PgTimeZone) -> Ordering {
    cmp_converted(timestamp_to_timestamptz(ts, tz), ts > 0, tstz)
}
