//! PostgreSQL `interval`, its ordering, and date/timestamp arithmetic
//! (`+`/`-` with intervals, days and other timestamps).

use std::cmp::Ordering;
use std::fmt;

use serde::{Deserialize, Serialize};

use super::calendar::{
    check_ts, civil_from_days, days_from_civil, days_in_month, is_finite, make_ts, split, tm_days,
};
use super::convert::date_to_timestamp;
use super::format::format_interval;
use super::zone::{local_fields_to_utc, local_split, PgTimeZone};
use super::{Result, TimeError, DATE_NEG_INF, DATE_POS_INF, END_DATE, MIN_DATE, USECS_PER_DAY};

/// PostgreSQL `interval`. The derived `PartialEq`/`Hash` are structural
/// (`1 mon` != `30 days`); `Ord` orders by PostgreSQL's `interval_cmp` and
/// breaks its ties structurally so that it stays consistent with `Eq`. Use
/// [`Interval::pg_cmp`]/[`Interval::pg_eq`] for SQL `=`/`<`, and
/// [`Interval::span`] as a grouping/hash key matching `interval_hash`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Interval {
    pub months: i32,
    pub days: i32,
    pub micros: i64,
}

impl Interval {
    pub const ZERO: Interval = Interval::new(0, 0, 0);

    pub const fn new(months: i32, days: i32, micros: i64) -> Self {
        Interval {
            months,
            days,
            micros,
        }
    }

    /// Length in microseconds with a month counted as 30 days.
    pub fn span(&self) -> i128 {
        let days = i128::from(self.months) * 30 + i128::from(self.days);
        days * i128::from(USECS_PER_DAY) + i128::from(self.micros)
    }

    pub fn pg_cmp(&self, other: &Self) -> Ordering {
        self.span().cmp(&other.span())
    }

    pub fn pg_eq(&self, other: &Self) -> bool {
        self.span() == other.span()
    }

    /// Negation as PostgreSQL 15's `timestamp_mi_interval` does it (no
    /// overflow check; a wrapped minimum then fails as out of range).
    fn wrapping_neg(&self) -> Self {
        let (m, d, us) = (self.months, self.days, self.micros);
        Interval::new(m.wrapping_neg(), d.wrapping_neg(), us.wrapping_neg())
    }

    pub fn checked_neg(&self) -> Result<Self> {
        match (
            self.months.checked_neg(),
            self.days.checked_neg(),
            self.micros.checked_neg(),
        ) {
            (Some(months), Some(days), Some(micros)) => Ok(Interval::new(months, days, micros)),
            _ => Err(TimeError::IntervalOutOfRange),
        }
    }
}

impl PartialOrd for Interval {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Interval {
    fn cmp(&self, other: &Self) -> Ordering {
        self.pg_cmp(other).then_with(|| {
            (self.months, self.days, self.micros).cmp(&(other.months, other.days, other.micros))
        })
    }
}

/// Adds months like `timestamp_pl_interval`, clamping the day to month end.
fn add_months(y: i64, m: u32, d: u32, months: i32) -> (i64, u32, u32) {
    let total = y * 12 + i64::from(m) - 1 + i64::from(months);
    let (y, m) = (total.div_euclid(12), total.rem_euclid(12) as u32 + 1);
    (y, m, d.min(days_in_month(y, m)))
}

/// `timestamp + interval`: months (day clamped to month end), then days,
/// then microseconds.
pub fn timestamp_plus_interval(ts: i64, iv: Interval) -> Result<i64> {
    if !is_finite(ts) {
        return Ok(ts);
    }
    let mut ts = check_ts(ts)?;
    if iv.months != 0 {
        let (days, tod) = split(ts);
        let (y, m, d) = civil_from_days(days);
        let (y, m, d) = add_months(y, m, d, iv.months);
        ts = make_ts(tm_days(y, m, d)?, tod).ok_or(TimeError::TimestampOutOfRange)?;
    }
    if iv.days != 0 {
        let (days, tod) = split(ts);
        let (y, m, d) = civil_from_days(days + i64::from(iv.days));
        ts = make_ts(tm_days(y, m, d)?, tod).ok_or(TimeError::TimestampOutOfRange)?;
    }
    ts.checked_add(iv.micros)
        .ok_or(TimeError::TimestampOutOfRange)
        .and_then(check_ts)
}

pub fn timestamp_minus_interval(ts: i64, iv: Interval) -> Result<i64> {
    timestamp_plus_interval(ts, iv.wrapping_neg())
}

/// `timestamptz + interval`: months and days are added to the local wall
/// clock in `tz` (each step re-resolved with the DST rules), then micros.
pub fn timestamptz_plus_interval(ts: i64, iv: Interval, tz: &PgTimeZone) -> Result<i64> {
    if !is_finite(ts) {
        return Ok(ts);
    }
    let mut ts = check_ts(ts)?;
    let step = |ts: i64, f: &dyn Fn(i64, u32, u32) -> (i64, u32, u32)| -> Result<i64> {
        let (days, tod) = local_split(ts, tz);
        let (y, m, d) = civil_from_days(days);
        let (y, m, d) = f(y, m, d);
        local_fields_to_utc(tm_days(y, m, d)?, tod, tz).ok_or(TimeError::TimestampOutOfRange)
    };
    if iv.months != 0 {
        ts = step(ts, &|y, m, d| add_months(y, m, d, iv.months))?;
    }
    if iv.days != 0 {
        ts = step(ts, &|y, m, d| {
            civil_from_days(days_from_civil(y, m, d) + i64::from(iv.days))
        })?;
    }
    ts.checked_add(iv.micros)
        .ok_or(TimeError::TimestampOutOfRange)
        .and_then(check_ts)
}

pub fn timestamptz_minus_interval(ts: i64, iv: Interval, tz: &PgTimeZone) -> Result<i64> {
    timestamptz_plus_interval(ts, iv.wrapping_neg(), tz)
}

/// `date + interval` is a `timestamp`.
pub fn date_plus_interval(d: i32, iv: Interval) -> Result<i64> {
    timestamp_plus_interval(date_to_timestamp(d)?, iv)
}

pub fn date_minus_interval(d: i32, iv: Interval) -> Result<i64> {
    timestamp_minus_interval(date_to_timestamp(d)?, iv)
}

/// `date + integer`.
pub fn date_plus_days(d: i32, n: i32) -> Result<i32> {
    if d == DATE_NEG_INF || d == DATE_POS_INF {
        return Ok(d);
    }
    let r = i64::from(d) + i64::from(n);
    if (MIN_DATE..END_DATE).contains(&r) {
        Ok(r as i32)
    } else {
        Err(TimeError::DateOutOfRange)
    }
}

pub fn date_minus_days(d: i32, n: i32) -> Result<i32> {
    date_plus_days(d, n.checked_neg().ok_or(TimeError::DateOutOfRange)?)
}

/// `date - date` in days.
pub fn date_minus_date(a: i32, b: i32) -> Result<i32> {
    let inf = |d| d == DATE_NEG_INF || d == DATE_POS_INF;
    if inf(a) || inf(b) {
        return Err(TimeError::InfiniteSubtraction("dates"));
    }
    i32::try_from(i64::from(a) - i64::from(b)).map_err(|_| TimeError::IntervalOutOfRange)
}

/// `timestamp - timestamp` (either kind): days and time, via justify_hours.
pub fn timestamp_minus_timestamp(a: i64, b: i64) -> Result<Interval> {
    if !is_finite(a) || !is_finite(b) {
        return Err(TimeError::InfiniteSubtraction("timestamps"));
    }
    let diff = a.checked_sub(b).ok_or(TimeError::IntervalOutOfRange)?;
    let (mut days, mut micros) = (diff / USECS_PER_DAY, diff % USECS_PER_DAY);
    if days > 0 && micros < 0 {
        micros += USECS_PER_DAY;
        days -= 1;
    } else if days < 0 && micros > 0 {
        micros -= USECS_PER_DAY;
        days += 1;
    }
    Ok(Interval::new(0, days as i32, micros))
}

impl fmt::Display for Interval {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&format_interval(*self))
    }
}
