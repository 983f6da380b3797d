//! "Now", from the system clock or from a file tests can move.
//!
//! Tests cross midnight by writing a timestamp into `DELTAMV_CLOCK_FILE`; the engine re-reads it
//! on every tick (at least once a second). An unreadable or malformed file is reported once and the
//! last good reading is kept, so a half-written file never moves time backwards.

use std::path::PathBuf;
use std::sync::Mutex;

use crate::pgtime::{self, PgTimeZone};

pub struct Clock {
    file: Option<PathBuf>,
    last: Mutex<Option<i64>>,
}

impl Clock {
    pub fn new(file: Option<PathBuf>) -> Clock {
        Clock {
            file,
            last: Mutex::new(None),
        }
    }

    /// Microseconds since 1970-01-01 UTC.
    pub fn now_micros(&self) -> i64 {
        let system = || chrono::Utc::now().timestamp_micros();
        let Some(path) = &self.file else {
            return system();
        };
        let read = std::fs::read_to_string(path)
            .map_err(|e| e.to_string())
            .and_then(|t| {
                chrono::DateTime::parse_from_rfc3339(t.trim()).map_err(|e| format!("{e} in {t:?}"))
            });
        let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
        match read {
            Ok(t) => {
                let micros = t.timestamp_micros();
                *last = Some(micros);
                micros
            }
            Err(e) => {
                tracing::warn!(file = %path.display(), error = %e, "cannot read the clock file (one RFC 3339 timestamp); keeping the last reading");
                last.unwrap_or_else(system)
            }
        }
    }

    /// CURRENT_DATE in the server's time zone.
    pub fn today(&self, tz: &PgTimeZone) -> i32 {
        let now = self.now_micros();
        pgtime::timestamptz_to_date(now, tz).unwrap_or_else(|e| {
            tracing::error!(now, error = %e, "the clock is out of PostgreSQL's date range; using 1970-01-01");
            0
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clock_file_moves_time_and_survives_garbage() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("clock");
        std::fs::write(&path, "2026-03-08T04:30:00Z").expect("write");
        let clock = Clock::new(Some(path.clone()));
        let tz = PgTimeZone::parse("America/New_York").expect("tz");
        let first = clock.today(&tz);
        std::fs::write(&path, "not a time").expect("write");
        assert_eq!(clock.today(&tz), first, "garbage keeps the last reading");
        std::fs::write(&path, "2026-03-08T05:30:00Z").expect("write");
        assert_eq!(
            clock.today(&tz),
            first + 1,
            "local midnight in New York passed"
        );
    }
}
