//! Proleptic Gregorian calendar arithmetic and the checked microsecond
//! timestamp representation shared by the other submodules.

use super::{Result, TimeError, MIN_TS, TS_NEG_INF, TS_POS_INF, USECS_PER_DAY};

/// Days since 1970-01-01 of a proleptic Gregorian date (astronomical year:
/// 0 = 1 BC), valid for any year that fits comfortably in i64.
pub(super) fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (i64::from(m) + 9) % 12;
    let doy = (153 * mp + 2) / 5 + i64::from(d) - 1;
    era * 146_097 + yoe * 365 + yoe / 4 - yoe / 100 + doy - 719_468
}

pub(super) fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

pub(super) fn is_leap(y: i64) -> bool {
    y % 4 == 0 && (y % 100 != 0 || y % 400 == 0)
}

pub(super) fn days_in_month(y: i64, m: u32) -> u32 {
    match m {
        2 if is_leap(y) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// PostgreSQL's IS_VALID_JULIAN.
pub(super) fn julian_ok(y: i64, m: u32) -> bool {
    (y > -4713 || (y == -4713 && m >= 11)) && y < 5_874_898
}

pub(super) fn split(ts: i64) -> (i64, i64) {
    (ts.div_euclid(USECS_PER_DAY), ts.rem_euclid(USECS_PER_DAY))
}

pub(super) fn is_finite(ts: i64) -> bool {
    ts != TS_NEG_INF && ts != TS_POS_INF
}

/// `days * USECS_PER_DAY + usecs`, if that is a valid finite timestamp.
pub(super) fn make_ts(days: i64, usecs: i64) -> Option<i64> {
    let v = i128::from(days) * i128::from(USECS_PER_DAY) + i128::from(usecs);
    i64::try_from(v)
        .ok()
        .filter(|t| (MIN_TS..TS_POS_INF).contains(t))
}

pub(super) fn check_ts(ts: i64) -> Result<i64> {
    make_ts(0, ts).ok_or(TimeError::TimestampOutOfRange)
}

/// Days since 1970 of broken-down fields, checked like `tm2timestamp`.
pub(super) fn tm_days(y: i64, m: u32, d: u32) -> Result<i64> {
    if julian_ok(y, m) {
        Ok(days_from_civil(y, m, d))
    } else {
        Err(TimeError::TimestampOutOfRange)
    }
}
