//! Text input for `date`, `timestamp`, `timestamptz` (ISO order) and
//! `interval` (`DecodeInterval`), rejecting session-dependent forms.

use super::calendar::{days_from_civil, days_in_month, julian_ok, make_ts};
use super::interval::Interval;
use super::trunc::{lookup_unit, Unit};
use super::zone::{local_fields_to_utc, PgTimeZone};
use super::{
    syntax, unsupported, Result, TimeError, DATE_NEG_INF, DATE_POS_INF, END_DATE, MIN_DATE,
    TS_NEG_INF, TS_POS_INF, TY_DATE, TY_IV, TY_TSTZ, TY_TS_IN, USECS_PER_DAY, USECS_PER_HOUR,
    USECS_PER_MINUTE, USECS_PER_SEC,
};

enum Parsed {
    NegInf,
    PosInf,
    /// Local fields: days since 1970 of (y, m, d), micros of day (may reach
    /// 24:00:00), and an explicit zone if one was given.
    Value(i64, i64, Option<ZoneSpec>),
}

enum ZoneSpec {
    Offset(i64),
    Named(PgTimeZone),
}

fn digits(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit())
}

/// `rint(strtod(".123") * 1e6)`, as ParseFractionalSecond does.
fn frac_micros(f: &str) -> Option<i64> {
    if f.is_empty() {
        return Some(0);
    }
    digits(f)
        .then(|| (format!("0.{f}").parse::<f64>().unwrap_or(0.0) * 1e6).round_ties_even() as i64)
}

/// Parses the text forms of date, timestamp and timestamptz (ISO order).
fn parse_datetime(input: &str, ty: &'static str) -> Result<Parsed> {
    let bad = || syntax(ty, input);
    let range = || TimeError::FieldOutOfRange(input.to_string());
    let s = input.trim().to_ascii_lowercase();
    match s.as_str() {
        "infinity" => return Ok(Parsed::PosInf),
        "-infinity" => return Ok(Parsed::NegInf),
        "epoch" => return Ok(Parsed::Value(0, 0, Some(ZoneSpec::Offset(0)))),
        "now" | "today" | "tomorrow" | "yesterday" => {
            let why = "it depends on the current time; evaluate it on the server";
            return Err(unsupported(ty, input, why));
        }
        _ => {}
    }
    let mut tokens: Vec<&str> = s.split_ascii_whitespace().collect();
    // ISO "T" separator between date and time.
    let first = tokens.first().copied().ok_or_else(bad)?;
    if let Some(p) = first
        .find('t')
        .filter(|&p| first[p + 1..].starts_with(|c: char| c.is_ascii_digit()))
    {
        tokens.splice(0..1, [&first[..p], &first[p + 1..]]);
    }
    let date: Vec<&str> = tokens[0].split('-').collect();
    let iso = date.len() == 3 && date.iter().all(|p| digits(p)) && date[0].len() >= 3;
    if !iso || date[1].len() > 2 || date[2].len() > 2 {
        let why = "only ISO 8601 text such as '2026-01-31 10:00:00.5+00' is read";
        return Err(unsupported(ty, input, why));
    }
    let year: i64 = date[0].parse().map_err(|_| range())?;
    let (m, d): (u32, u32) = (
        date[1].parse().map_err(|_| bad())?,
        date[2].parse().map_err(|_| bad())?,
    );
    let (mut tod, mut zone, mut bc, mut have_time) = (0i64, None, false, false);
    for tok in &tokens[1..] {
        let mut tok = *tok;
        if tok.starts_with(|c: char| c.is_ascii_digit()) {
            if have_time || zone.is_some() {
                return Err(bad());
            }
            have_time = true;
            let cut = tok
                .find(['+', '-'])
                .or_else(|| tok.find('z'))
                .unwrap_or(tok.len());
            tod = parse_time(&tok[..cut])
                .ok_or_else(bad)?
                .map_err(|_| range())?;
            tok = &tok[cut..];
            if tok.is_empty() {
                continue;
            }
        }
        if zone.is_some() && !(tok == "bc" || tok == "ad") {
            return Err(bad());
        }
        if tok.starts_with(['+', '-']) {
            zone = Some(ZoneSpec::Offset(parse_tz_offset(tok, input)?));
        } else if matches!(tok, "z" | "zulu" | "utc" | "gmt" | "ut") {
            zone = Some(ZoneSpec::Offset(0));
        } else if tok == "bc" {
            bc = true;
        } else if tok == "ad" {
        } else if tok.contains('/') {
            let tz = PgTimeZone::parse(tok).map_err(|_| bad())?;
            zone = Some(ZoneSpec::Named(tz));
        } else {
            let why = "time zone abbreviations other than UTC/GMT/Z are not supported; use a numeric offset or an IANA zone name";
            return Err(unsupported(ty, input, why));
        }
    }
    if year == 0 {
        return Err(range());
    }
    let y = if bc { 1 - year } else { year };
    if !(1..=12).contains(&m) || d < 1 || d > days_in_month(y, m) {
        return Err(range());
    }
    if !julian_ok(y, m) {
        return Err(TimeError::InputOutOfRange {
            ty: if ty == TY_DATE { "date" } else { "timestamp" },
            input: input.to_string(),
        });
    }
    Ok(Parsed::Value(days_from_civil(y, m, d), tod, zone))
}

/// `h:mm[:ss[.frac]]`; outer None = bad syntax, inner Err = out of range.
fn parse_time(t: &str) -> Option<std::result::Result<i64, ()>> {
    let (hms, frac) = t.split_once('.').unwrap_or((t, ""));
    let parts: Vec<&str> = hms.split(':').collect();
    if !(2..=3).contains(&parts.len()) || !parts.iter().all(|p| digits(p) && p.len() <= 2) {
        return None;
    }
    if parts.len() == 2 && !frac.is_empty() {
        return None;
    }
    let v = |i: usize| parts.get(i).map_or(0, |p| p.parse::<i64>().unwrap_or(0));
    let (h, mi, s, fsec) = (v(0), v(1), v(2), frac_micros(frac)?);
    let bad = mi > 59
        || s > 60
        || fsec > USECS_PER_SEC
        || h > 24
        || (h == 24 && (mi > 0 || s > 0 || fsec > 0))
        || (s == 60 && fsec > 0);
    Some(if bad {
        Err(())
    } else {
        Ok(((h * 60 + mi) * 60 + s) * USECS_PER_SEC + fsec)
    })
}

/// `DecodeTimezone`: `+h`, `+hh`, `+hhmm`, `+hh:mm`, `+hh:mm:ss` → secs east.
fn parse_tz_offset(tok: &str, input: &str) -> Result<i64> {
    let bad = || syntax(TY_TSTZ, input);
    let (neg, body) = (tok.starts_with('-'), &tok[1..]);
    let parts: Vec<&str> = body.split(':').collect();
    if parts.len() > 3 || !parts.iter().all(|p| digits(p) && p.len() <= 9) {
        return Err(bad());
    }
    let n = |i: usize| parts.get(i).map_or(0, |p| p.parse::<i64>().unwrap_or(0));
    let (mut h, mut m, s) = (n(0), n(1), n(2));
    if parts.len() == 1 && tok.len() > 3 {
        (h, m) = (h / 100, h % 100);
    }
    if h > 15 || m >= 60 || s >= 60 {
        return Err(TimeError::TzDisplacementOutOfRange(input.to_string()));
    }
    let secs = (h * 60 + m) * 60 + s;
    Ok(if neg { -secs } else { secs })
}

/// Date input (`2026-11-23`, `0044-03-15 BC`, `infinity`, `epoch`); a time
/// or zone part is accepted and ignored, as the server does.
pub fn parse_date(s: &str) -> Result<i32> {
    match parse_datetime(s, TY_DATE)? {
        Parsed::NegInf => Ok(DATE_NEG_INF),
        Parsed::PosInf => Ok(DATE_POS_INF),
        Parsed::Value(days, ..) if (MIN_DATE..END_DATE).contains(&days) => Ok(days as i32),
        Parsed::Value(..) => Err(TimeError::InputOutOfRange {
            ty: "date",
            input: s.to_string(),
        }),
    }
}

/// `timestamp` input; an explicit zone is ignored, as the server does.
pub fn parse_timestamp(s: &str) -> Result<i64> {
    match parse_datetime(s, TY_TS_IN)? {
        Parsed::NegInf => Ok(TS_NEG_INF),
        Parsed::PosInf => Ok(TS_POS_INF),
        Parsed::Value(days, tod, _) => {
            make_ts(days, tod).ok_or_else(|| TimeError::InputOutOfRange {
                ty: "timestamp",
                input: s.to_string(),
            })
        }
    }
}

/// `timestamptz` input; without an explicit zone the value is local in `tz`.
pub fn parse_timestamptz(s: &str, tz: &PgTimeZone) -> Result<i64> {
    let oor = || TimeError::InputOutOfRange {
        ty: "timestamp",
        input: s.to_string(),
    };
    match parse_datetime(s, TY_TSTZ)? {
        Parsed::NegInf => Ok(TS_NEG_INF),
        Parsed::PosInf => Ok(TS_POS_INF),
        Parsed::Value(days, tod, zone) => match zone {
            Some(ZoneSpec::Offset(off)) => make_ts(days, tod - off * USECS_PER_SEC),
            Some(ZoneSpec::Named(z)) => local_fields_to_utc(days, tod, &z),
            None => local_fields_to_utc(days, tod, tz),
        }
        .ok_or_else(oor),
    }
}

/// Interval input, following `DecodeInterval` (fields read right to left):
/// `1 year 2 mons 3 days 04:05:06.5`, `-1 days +02:00:00`, `7 days`,
/// `1.5 hours`, `1 week`, `@ 2 days ago`, `90` (seconds).
pub fn parse_interval(input: &str) -> Result<Interval> {
    let bad = || syntax(TY_IV, input);
    let unsupported = |why| unsupported(TY_IV, input, why);
    let overflow = || TimeError::IntervalFieldOutOfRange(input.to_string());
    let s = input.to_ascii_lowercase();
    if s.trim_start().starts_with('p') {
        return Err(unsupported("ISO 8601 interval syntax is not supported"));
    }
    let b = s.as_bytes();
    // Tokenize like ParseDateTime: (is_time, text) or a unit word.
    let mut toks: Vec<(u8, &str)> = Vec::new(); // kind: b'n' number, b't' time, b'w' word
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        let start = i;
        if c.is_ascii_whitespace() || (c.is_ascii_punctuation() && !matches!(c, b'.' | b'+' | b'-'))
        {
            i += 1;
            continue;
        }
        let kind = if c.is_ascii_alphabetic() {
            while i < b.len() && b[i].is_ascii_alphabetic() {
                i += 1;
            }
            b'w'
        } else if c.is_ascii_digit() || c == b'.' || c == b'+' || c == b'-' {
            i += 1;
            if c == b'+' || c == b'-' {
                while i < b.len() && b[i].is_ascii_whitespace() {
                    i += 1;
                }
                if i >= b.len() || !b[i].is_ascii_digit() {
                    return Err(bad());
                }
            }
            while i < b.len()
                && (b[i].is_ascii_digit() || matches!(b[i], b':' | b'.' | b'-' | b'/'))
            {
                i += 1;
            }
            if s[start..i].contains(':') {
                b't'
            } else {
                b'n'
            }
        } else {
            return Err(bad());
        };
        toks.push((kind, &s[start..i]));
    }
    let (mut usec, mut days, mut months, mut years) = (0i64, 0i32, 0i32, 0i32);
    let (mut fmask, mut is_before, mut unit): (u32, bool, Option<Unit>) = (0, false, None);
    const TIME_M: u32 = 1 << Unit::Hour as u32 | 1 << Unit::Minute as u32 | ALL_SECS_M;
    const ALL_SECS_M: u32 =
        1 << Unit::Second as u32 | 1 << Unit::Milli as u32 | 1 << Unit::Micro as u32;
    for &(kind, tok) in toks.iter().rev() {
        let mut tmask = 0u32;
        match kind {
            b'w' => match lookup_unit(tok) {
                Some(Unit::Ago) => {
                    is_before = true;
                    unit = Some(Unit::Ago);
                }
                Some(u) => unit = Some(u),
                None => return Err(bad()),
            },
            b't' => {
                let (neg, body) = match tok.as_bytes()[0] {
                    b'-' => (true, tok[1..].trim_start()),
                    b'+' => (false, tok[1..].trim_start()),
                    _ => (false, tok),
                };
                // A signed field that fails to decode falls back to the number
                // path in PostgreSQL, where it is a syntax error.
                let t = parse_interval_time(body).ok_or_else(bad)?;
                let signed = tok.starts_with(['+', '-']);
                usec = t.ok_or_else(|| if signed { bad() } else { overflow() })?;
                if neg {
                    usec = -usec;
                }
                tmask = TIME_M;
                unit = Some(Unit::Day);
            }
            _ => {
                let body = tok.trim_start_matches(['+', '-']).trim_start();
                let (int, frac) = body.split_once('.').unwrap_or((body, ""));
                if int.contains(['-', '/']) {
                    return Err(unsupported(
                        "SQL-standard year-month and ISO 8601 interval syntax are not supported",
                    ));
                }
                if !(int.is_empty() || digits(int)) || !(frac.is_empty() || digits(frac)) {
                    return Err(bad());
                }
                let neg = tok.starts_with('-');
                let val: i64 = match int {
                    "" => 0,
                    _ => format!("{}{int}", if neg { "-" } else { "" })
                        .parse()
                        .map_err(|_| overflow())?,
                };
                let fval = frac_f64(frac) * if neg { -1.0 } else { 1.0 };
                let u = unit.unwrap_or(Unit::Second);
                let add_us = |acc: &mut i64, scale: i64| -> Option<()> {
                    *acc = acc.checked_add(val.checked_mul(scale)?)?;
                    add_frac_us(acc, fval, scale)
                };
                let add_i32 = |acc: &mut i32, v: i64, scale: i32| -> Option<()> {
                    *acc = acc.checked_add(i32::try_from(v).ok()?.checked_mul(scale)?)?;
                    Some(())
                };
                let ok = match u {
                    Unit::Micro => add_us(&mut usec, 1),
                    Unit::Milli => add_us(&mut usec, 1000),
                    Unit::Second => add_us(&mut usec, USECS_PER_SEC),
                    Unit::Minute => add_us(&mut usec, USECS_PER_MINUTE),
                    Unit::Hour => add_us(&mut usec, USECS_PER_HOUR),
                    Unit::Day => add_i32(&mut days, val, 1)
                        .and_then(|_| add_frac_us(&mut usec, fval, USECS_PER_DAY)),
                    Unit::Week => add_i32(&mut days, val, 7)
                        .and_then(|_| add_frac_days(&mut days, &mut usec, fval, 7.0)),
                    Unit::Month => add_i32(&mut months, val, 1)
                        .and_then(|_| add_frac_days(&mut days, &mut usec, fval, 30.0)),
                    Unit::Year | Unit::Decade | Unit::Century | Unit::Millennium => {
                        let scale = match u {
                            Unit::Year => 1,
                            Unit::Decade => 10,
                            Unit::Century => 100,
                            _ => 1000,
                        };
                        let extra = (fval * f64::from(scale) * 12.0).round_ties_even() as i64;
                        add_i32(&mut years, val, scale).and_then(|_| add_i32(&mut months, extra, 1))
                    }
                    Unit::Quarter | Unit::Tz | Unit::Ago => return Err(bad()),
                };
                ok.ok_or_else(overflow)?;
                tmask = match u {
                    Unit::Second if fval != 0.0 => ALL_SECS_M,
                    _ => 1 << u as u32,
                };
                if u == Unit::Hour {
                    unit = Some(Unit::Day);
                }
            }
        }
        if tmask & fmask != 0 {
            return Err(bad());
        }
        fmask |= tmask;
    }
    if fmask == 0 {
        return Err(bad());
    }
    if is_before {
        usec = usec.checked_neg().ok_or_else(overflow)?;
        days = days.checked_neg().ok_or_else(overflow)?;
        months = months.checked_neg().ok_or_else(overflow)?;
        years = years.checked_neg().ok_or_else(overflow)?;
    }
    let total = i64::from(years) * 12 + i64::from(months);
    let months = i32::try_from(total).map_err(|_| TimeError::IntervalOutOfRange)?;
    Ok(Interval::new(months, days, usec))
}

fn frac_f64(f: &str) -> f64 {
    if f.is_empty() {
        0.0
    } else {
        format!("0.{f}").parse().unwrap_or(0.0)
    }
}

/// `AdjustFractMicroseconds`: rounds half away... toward zero, like PG 15.
fn add_frac_us(acc: &mut i64, frac: f64, scale: i64) -> Option<()> {
    if frac == 0.0 {
        return Some(());
    }
    let f = frac * scale as f64;
    let mut us = f as i64;
    let rest = f - us as f64;
    if rest > 0.5 {
        us += 1;
    } else if rest < -0.5 {
        us -= 1;
    }
    *acc = acc.checked_add(us)?;
    Some(())
}

/// `AdjustFractDays`.
fn add_frac_days(days: &mut i32, usec: &mut i64, frac: f64, scale: f64) -> Option<()> {
    if frac == 0.0 {
        return Some(());
    }
    let f = frac * scale;
    let extra = f as i32;
    *days = days.checked_add(extra)?;
    add_frac_us(usec, f - f64::from(extra), USECS_PER_DAY)
}

/// Interval time field: `h:mm`, `h:mm:ss[.f]` or `mm:ss.f`; outer None =
/// bad syntax, inner None = overflow.
fn parse_interval_time(t: &str) -> Option<Option<i64>> {
    let (hms, frac) = t.split_once('.').map_or((t, None), |(a, b)| (a, Some(b)));
    let parts: Vec<&str> = hms.split(':').collect();
    if !(2..=3).contains(&parts.len()) || !parts.iter().all(|p| digits(p)) {
        return None;
    }
    let fsec = frac_micros(frac.unwrap_or(""))?;
    let n = |p: &str| p.parse::<i64>().ok();
    let (h, m, s) = match (parts.len(), frac.is_some()) {
        (2, true) => (Some(0), n(parts[0]), n(parts[1])),
        (2, false) => (n(parts[0]), n(parts[1]), Some(0)),
        _ => (n(parts[0]), n(parts[1]), n(parts[2])),
    };
    let (Some(h), Some(m), Some(s)) = (h, m, s) else {
        return Some(None);
    };
    if m > 59 || s > 60 || fsec > USECS_PER_SEC {
        return Some(None);
    }
    Some(
        h.checked_mul(USECS_PER_HOUR)
            .and_then(|v| v.checked_add(m * USECS_PER_MINUTE + s * USECS_PER_SEC + fsec)),
    )
}
