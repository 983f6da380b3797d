//! Positions and times as the WAL and the replication protocol state them.
//!
//! An [`Lsn`] is a byte position in the WAL; PostgreSQL prints it as two hexadecimal halves,
//! `X/Y` (`pg_lsn`), and deltamv stores it that way in `deltamv.progress`. Keeping it a type of
//! its own means an LSN cannot be mixed up with a row count or a time, and there is one parser
//! and one printer. Commit and keepalive times count microseconds from PostgreSQL's epoch,
//! 2000-01-01 00:00 UTC, not Unix's.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// A WAL position.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub struct Lsn(pub u64);

impl Lsn {
    pub const ZERO: Lsn = Lsn(0);
}

impl fmt::Display for Lsn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:X}/{:X}", self.0 >> 32, self.0 & 0xFFFF_FFFF)
    }
}

#[derive(Debug, thiserror::Error)]
#[error("{0:?} is not an LSN (expected two hexadecimal numbers, X/Y)")]
pub struct BadLsn(String);

impl FromStr for Lsn {
    type Err = BadLsn;

    fn from_str(text: &str) -> Result<Lsn, BadLsn> {
        let bad = || BadLsn(text.to_string());
        let (hi, lo) = text.split_once('/').ok_or_else(bad)?;
        let hi = u32::from_str_radix(hi, 16).map_err(|_| bad())?;
        let lo = u32::from_str_radix(lo, 16).map_err(|_| bad())?;
        Ok(Lsn((u64::from(hi) << 32) | u64::from(lo)))
    }
}

impl From<pgwire_replication::Lsn> for Lsn {
    fn from(l: pgwire_replication::Lsn) -> Lsn {
        Lsn(l.as_u64())
    }
}

impl From<Lsn> for pgwire_replication::Lsn {
    fn from(l: Lsn) -> pgwire_replication::Lsn {
        pgwire_replication::Lsn::from_u64(l.0)
    }
}

/// Seconds from the Unix epoch to PostgreSQL's (2000-01-01 00:00 UTC).
pub const PG_EPOCH_UNIX_SECS: i64 = 946_684_800;

/// A protocol time (microseconds since 2000-01-01 UTC) as Unix seconds.
pub fn pg_micros_to_unix_secs(micros: i64) -> f64 {
    micros as f64 / 1e6 + PG_EPOCH_UNIX_SECS as f64
}

/// Now, in protocol time (microseconds since 2000-01-01 UTC).
pub fn pg_micros_now() -> i64 {
    chrono::Utc::now().timestamp_micros() - PG_EPOCH_UNIX_SECS * 1_000_000
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lsn_text_round_trips() {
        for lsn in [0u64, 0x16B3748, 0x1_0000_0000 + 5, u64::MAX] {
            assert_eq!(Lsn(lsn).to_string().parse::<Lsn>().ok(), Some(Lsn(lsn)));
        }
        assert_eq!("0/16B3748".parse::<Lsn>().ok(), Some(Lsn(0x16B3748)));
        assert_eq!(Lsn(0x1_0000_00AB).to_string(), "1/AB");
        for bad in ["garbage", "1/", "/1", "1/2/3", "100000000/0", "-1/0"] {
            assert!(bad.parse::<Lsn>().is_err(), "{bad}");
        }
    }

    #[test]
    fn protocol_times_count_from_2000() {
        assert_eq!(pg_micros_to_unix_secs(0), 946_684_800.0);
        let now = chrono::Utc::now().timestamp() as f64;
        assert!((pg_micros_to_unix_secs(pg_micros_now()) - now).abs() < 5.0);
    }
}
