//! The server's `TimeZone` (IANA zone or fixed offset) and PostgreSQL's
//! local-time/UTC mapping, including DST gaps, overlaps and years past 2099.

use std::fmt;

use chrono::{DateTime, Offset, TimeZone};
use chrono_tz::Tz;

use super::calendar::{civil_from_days, days_from_civil, is_finite, is_leap, make_ts, split};
use super::format::push_offset;
use super::{Result, TimeError, SECS_PER_DAY, USECS_PER_DAY, USECS_PER_SEC};

/// Local wall-clock fields (`tod` may be 24:00:00) → UTC, via
/// `DetermineTimeZoneOffset`; only the UTC result is range-checked.
pub(super) fn local_fields_to_utc(days: i64, tod: i64, tz: &PgTimeZone) -> Option<i64> {
    let off = tz.local_offset_secs(days * SECS_PER_DAY + tod.div_euclid(USECS_PER_SEC));
    make_ts(days, tod - off * USECS_PER_SEC)
}

/// The server's `TimeZone`: an IANA zone or a fixed offset.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PgTimeZone(ZoneKind);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ZoneKind {
    /// `periodic`: the zone still observes DST in 2099, so its yearly rule is
    /// extended past the end of chrono-tz's transition table. `constant`: the
    /// zone's one offset, for a zone tzdata defines without any transition
    /// ([`constant_offset`]).
    Named {
        tz: Tz,
        periodic: bool,
        constant: Option<i32>,
    },
    /// Seconds east of UTC.
    Fixed(i32),
}

/// chrono-tz has no transitions before this instant (1811) ...
const ZONE_LOW: i64 = -5_000_000_000;
/// ... and none from 2100-01-01 on.
const ZONE_HIGH: i64 = 4_102_444_800;

impl PgTimeZone {
    pub const UTC: PgTimeZone = PgTimeZone(ZoneKind::Fixed(0));

    pub fn from_tz(tz: Tz) -> Self {
        let at = |y, m| tz_offset(tz, days_from_civil(y, m, 15) * SECS_PER_DAY);
        let periodic = at(2099, 1) != at(2099, 7);
        PgTimeZone(ZoneKind::Named {
            tz,
            periodic,
            constant: constant_offset(tz),
        })
    }

    /// A fixed offset in seconds east of UTC (less than 24 hours).
    pub fn fixed(secs_east: i32) -> Result<Self> {
        if secs_east.unsigned_abs() >= SECS_PER_DAY as u32 {
            return Err(TimeError::UnsupportedTimeZone(format!(
                "{secs_east} seconds"
            )));
        }
        Ok(PgTimeZone(ZoneKind::Fixed(secs_east)))
    }

    /// Parses what `SHOW TimeZone` returns: an IANA name (case-insensitive),
    /// or a POSIX zone without daylight-saving rules such as `<+05:30>-05:30`
    /// (what `SET TIME ZONE 5.5` shows) or `UTC0`.
    pub fn parse(s: &str) -> Result<Self> {
        let name = s.trim();
        if let Ok(tz) = name.parse::<Tz>() {
            return Ok(Self::from_tz(tz));
        }
        if let Some(tz) = chrono_tz::TZ_VARIANTS
            .iter()
            .find(|t| t.name().eq_ignore_ascii_case(name))
        {
            return Ok(Self::from_tz(*tz));
        }
        parse_posix_fixed(name)
            .and_then(|off| Self::fixed(off).ok())
            .ok_or_else(|| TimeError::UnsupportedTimeZone(s.to_string()))
    }

    pub fn name(&self) -> String {
        match self.0 {
            ZoneKind::Named { tz, .. } => tz.name().to_string(),
            ZoneKind::Fixed(off) => {
                let mut s = String::from("UTC");
                push_offset(&mut s, i64::from(off));
                s
            }
        }
    }

    /// Offset (seconds east) in force at the UTC instant `t` (seconds).
    pub fn utc_offset_secs(&self, t: i64) -> i64 {
        match self.0 {
            ZoneKind::Fixed(off)
            | ZoneKind::Named {
                constant: Some(off),
                ..
            } => i64::from(off),
            ZoneKind::Named { tz, periodic, .. } => tz_offset(tz, clamp_instant(t, periodic)),
        }
    }

    /// Offset (seconds east) PostgreSQL's `DetermineTimeZoneOffset` assigns to
    /// the local wall-clock time `local` (seconds since 1970-01-01 00:00).
    pub fn local_offset_secs(&self, local: i64) -> i64 {
        let ZoneKind::Named {
            tz,
            periodic,
            constant: None,
        } = self.0
        else {
            return self.utc_offset_secs(0);
        };
        // Far beyond any valid timestamp; keeps the arithmetic below in range.
        let local = local.clamp(-(1 << 50), 1 << 50);
        let span = |t: i64| tz.offset_from_utc_datetime(&naive(clamp_instant(t, periodic)));
        // Offsets are under 24h, so the boundary that matters (if any) is the
        // first one after `mytime - 1 day`; PostgreSQL (like this code) assumes
        // boundaries are at least 48 hours apart.
        let prev = local - SECS_PER_DAY;
        let limit = local + SECS_PER_DAY;
        let before = span(prev);
        let before_off = i64::from(before.fix().local_minus_utc());
        if span(limit) == before {
            return before_off;
        }
        let (mut lo, mut hi) = (prev, limit);
        while hi - lo > 1 {
            let mid = lo + (hi - lo) / 2;
            if span(mid) == before {
                lo = mid;
            } else {
                hi = mid;
            }
        }
        let boundary = hi;
        let after_off = i64::from(span(hi).fix().local_minus_utc());
        let (beforetime, aftertime) = (local - before_off, local - after_off);
        if beforetime < boundary && aftertime < boundary {
            before_off
        } else if beforetime > boundary && aftertime >= boundary {
            after_off
        } else if beforetime > aftertime {
            // Nonexistent local time (spring forward): "before" interpretation.
            before_off
        } else {
            // Ambiguous local time (fall back): "after" interpretation.
            after_off
        }
    }

    /// timestamptz → local wall clock. Infinities pass through; results past
    /// the i64 range saturate (callers wanting errors use the conversions).
    pub fn utc_to_local(&self, ts_utc: i64) -> i64 {
        if !is_finite(ts_utc) {
            return ts_utc;
        }
        let off = self.utc_offset_secs(ts_utc.div_euclid(USECS_PER_SEC));
        ts_utc.saturating_add(off * USECS_PER_SEC)
    }

    /// Local wall clock → timestamptz with PostgreSQL's DST-gap/overlap rules.
    pub fn local_to_utc(&self, ts_local: i64) -> i64 {
        if !is_finite(ts_local) {
            return ts_local;
        }
        let off = self.local_offset_secs(ts_local.div_euclid(USECS_PER_SEC));
        ts_local.saturating_sub(off * USECS_PER_SEC)
    }
}

/// The first day (1970-01-01, in days since then) whose local midnight
/// [`PgTimeZone::midnights_are_clean`] speaks for.
pub const CLEAN_MIDNIGHTS_FROM: i32 = 0;

/// How far apart the offsets [`PgTimeZone::midnights_are_clean`] samples are: shorter than
/// any interval between two transitions (PostgreSQL's own rules assume at least 48 hours).
const SAMPLE_SECS: i64 = 6 * 3600;

impl PgTimeZone {
    /// Whether, from [`CLEAN_MIDNIGHTS_FROM`] on, no offset change of the zone moves the wall
    /// clock into, out of or across a local midnight. Then every such local midnight exists
    /// exactly once, `local_to_utc` maps it to the first instant of its day, and the wall clock
    /// never crosses it backwards: `x >= (midnight of day e)` holds exactly when the local date
    /// of `x` is at least `e`, which lets a window on days be decided from a group's `DATE(x)`
    /// key (see `maintain::view::window`). False for zones that switched at midnight in that
    /// time (Sao Paulo until 2019, Havana). Earlier changes (most zones left local mean time at
    /// a midnight in the 19th century) are outside the claim. Checked over every transition
    /// chrono-tz knows up to 2099 (the yearly rule repeats after that): about 230k offset
    /// lookups, so the answer is kept per zone.
    pub fn midnights_are_clean(&self) -> bool {
        // A zone of one offset has no transition to check.
        let ZoneKind::Named {
            tz, constant: None, ..
        } = self.0
        else {
            return true;
        };
        static CLEAN: std::sync::Mutex<Vec<(Tz, bool)>> = std::sync::Mutex::new(Vec::new());
        let mut known = CLEAN
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some((_, clean)) = known.iter().find(|(z, _)| *z == tz) {
            return *clean;
        }
        let clean = no_transition_touches_midnight(tz);
        known.push((tz, clean));
        clean
    }
}

fn no_transition_touches_midnight(tz: Tz) -> bool {
    // A day's wall clock is off UTC by less than a day on either side.
    let mut t = i64::from(CLEAN_MIDNIGHTS_FROM) * SECS_PER_DAY - 2 * SECS_PER_DAY;
    let mut off = tz_offset(tz, t);
    while t < ZONE_HIGH {
        let next = t + SAMPLE_SECS;
        let next_off = tz_offset(tz, next);
        if next_off != off {
            // The transition: the first second with the new offset.
            let (mut lo, mut hi) = (t, next);
            while hi - lo > 1 {
                let mid = lo + (hi - lo) / 2;
                if tz_offset(tz, mid) == off {
                    lo = mid;
                } else {
                    hi = mid;
                }
            }
            // The wall-clock span skipped (gap) or repeated (overlap); a midnight in it is
            // missing, doubled, or crossed backwards.
            let (a, b) = (hi + off.min(next_off), hi + off.max(next_off));
            if (b - 1).div_euclid(SECS_PER_DAY) != (a - 1).div_euclid(SECS_PER_DAY) {
                return false;
            }
        }
        (t, off) = (next, next_off);
    }
    true
}

impl fmt::Display for PgTimeZone {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name())
    }
}

fn naive(t: i64) -> chrono::NaiveDateTime {
    DateTime::from_timestamp(t, 0)
        .map(|d| d.naive_utc())
        .unwrap_or_default()
}

/// The offset of a zone that tzdata defines with one offset and no transition
/// at all: `Etc/UTC`, `Etc/GMT+5` and the other `Etc/` zones, and their links
/// (`UTC`, `GMT`, `Zulu`, ...). A server's `TimeZone` is most often one of
/// these, and every conversion of a timestamptz to its local date or time then
/// is an addition instead of a search of chrono-tz's table (about 1% of the
/// initial load's CPU, 2026-12-07). Any other zone is looked up as before.
fn constant_offset(tz: Tz) -> Option<i32> {
    const LINKS: [&str; 9] = [
        "UTC",
        "UCT",
        "GMT",
        "GMT0",
        "GMT+0",
        "GMT-0",
        "Greenwich",
        "Universal",
        "Zulu",
    ];
    let name = tz.name();
    (name.starts_with("Etc/") || LINKS.contains(&name)).then(|| {
        tz.offset_from_utc_datetime(&naive(0))
            .fix()
            .local_minus_utc()
    })
}

fn tz_offset(tz: Tz, t: i64) -> i64 {
    i64::from(
        tz.offset_from_utc_datetime(&naive(t))
            .fix()
            .local_minus_utc(),
    )
}

/// Maps an instant into the range chrono-tz has data for. From 2100 on, an
/// instant is moved by whole weeks to the same month and day of the latest
/// year before 2100 whose calendar matches (weekday of March 1st for March to
/// December; weekday of January 1st and leap-ness for January and February).
/// That reproduces any "n-th weekday of month" rule, i.e. the POSIX TZ rule
/// PostgreSQL extends forever, and stays clear of irregular years such as the
/// Ramadan-adjusted ones tzdata lists for Gaza up to 2086.
fn clamp_instant(t: i64, periodic: bool) -> i64 {
    if t < ZONE_LOW {
        return ZONE_LOW;
    }
    if t < ZONE_HIGH {
        return t;
    }
    if !periodic {
        return ZONE_HIGH;
    }
    let (y, m, _) = civil_from_days(t.div_euclid(SECS_PER_DAY));
    let anchor_month = if m >= 3 { 3 } else { 1 };
    let anchor = days_from_civil(y, anchor_month, 1);
    (2072..2100)
        .rev()
        .map(|y2| (y2, days_from_civil(y2, anchor_month, 1)))
        .find(|&(y2, a2)| (a2 - anchor).rem_euclid(7) == 0 && (m >= 3 || is_leap(y2) == is_leap(y)))
        .map_or(ZONE_HIGH, |(_, a2)| t + (a2 - anchor) * SECS_PER_DAY)
}

/// `<+05:30>-05:30`, `UTC0`, `GMT+5`: a POSIX TZ without DST part.
fn parse_posix_fixed(s: &str) -> Option<i32> {
    let rest = if let Some(r) = s.strip_prefix('<') {
        &r[r.find('>')? + 1..]
    } else {
        let n = s
            .find(|c: char| !c.is_ascii_alphabetic())
            .unwrap_or(s.len());
        (n >= 3).then_some(&s[n..])?
    };
    let (neg, body) = match rest.as_bytes().first()? {
        b'-' => (true, &rest[1..]),
        b'+' => (false, &rest[1..]),
        _ => (false, rest),
    };
    let mut secs = 0i32;
    let parts: Vec<&str> = body.split(':').collect();
    if parts.len() > 3 {
        return None;
    }
    for (i, p) in parts.iter().enumerate() {
        let ok = (1..=2).contains(&p.len()) && p.bytes().all(|b| b.is_ascii_digit());
        let v: i32 = if ok { p.parse().ok()? } else { return None };
        if i > 0 && v >= 60 {
            return None;
        }
        secs += v * [3600, 60, 1][i];
    }
    // POSIX offsets count west of UTC.
    Some(if neg { secs } else { -secs })
}

/// Local (days, time of day) of a finite timestamptz, without overflow.
pub(super) fn local_split(ts: i64, tz: &PgTimeZone) -> (i64, i64) {
    let off = tz.utc_offset_secs(ts.div_euclid(USECS_PER_SEC));
    let (days, tod) = split(ts);
    let tod = tod + off * USECS_PER_SEC;
    (
        days + tod.div_euclid(USECS_PER_DAY),
        tod.rem_euclid(USECS_PER_DAY),
    )
}
