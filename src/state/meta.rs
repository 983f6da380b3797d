//! The state's meta keys, each with a typed writer and reader, so a key's name and type are
//! stated once. They are written with the state they describe, in the same atomic RocksDB
//! batch, which is what lets `init` decide whether the state on disk can be trusted:
//! - `lsn`: S, the source position the state reflects;
//! - `acked`: the acknowledgement recorded before an idle slot was told to go past S;
//! - `partial`: the first parts of a large transaction are in the state without its LSN, or
//!   those of a date change without its dates;
//! - `dates`: per view, the server-zone date its time-dependent rows were last revisited on;
//! - `fingerprint` and `snapshot_done`: which views and sources the state was built for, and
//!   that its initial load finished.

use crate::pg::Lsn;
use crate::state::keys;
use crate::state::store::{Store, StoreError};

/// A meta key with its encoded value, for [`Store::commit`].
pub type Entry = (&'static str, Vec<u8>);

const LSN: &str = "lsn";
const ACKED: &str = "acked";
const PARTIAL: &str = "partial";
const DATES: &str = "dates";
const FINGERPRINT: &str = "fingerprint";
const SNAPSHOT_DONE: &str = "snapshot_done";

pub fn lsn(v: Lsn) -> Entry {
    (LSN, keys::encode(&v))
}

pub fn read_lsn(store: &Store) -> Result<Option<Lsn>, StoreError> {
    store.meta(LSN)
}

pub fn acked(v: Lsn) -> Entry {
    (ACKED, keys::encode(&v))
}

/// The recorded acknowledgement (zero when none was recorded).
pub fn read_acked(store: &Store) -> Result<Lsn, StoreError> {
    Ok(store.meta(ACKED)?.unwrap_or_default())
}

pub fn partial(v: bool) -> Entry {
    (PARTIAL, keys::encode(&v))
}

pub fn read_partial(store: &Store) -> Result<bool, StoreError> {
    Ok(store.meta(PARTIAL)?.unwrap_or(false))
}

pub fn dates(v: &[i32]) -> Entry {
    (DATES, keys::encode(&v))
}

pub fn read_dates(store: &Store) -> Result<Vec<i32>, StoreError> {
    Ok(store.meta(DATES)?.unwrap_or_default())
}

pub fn fingerprint(v: &str) -> Entry {
    (FINGERPRINT, keys::encode(&v))
}

pub fn read_fingerprint(store: &Store) -> Result<Option<String>, StoreError> {
    store.meta(FINGERPRINT)
}

pub fn snapshot_done(v: bool) -> Entry {
    (SNAPSHOT_DONE, keys::encode(&v))
}

pub fn read_snapshot_done(store: &Store) -> Result<bool, StoreError> {
    Ok(store.meta(SNAPSHOT_DONE)?.unwrap_or(false))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::store::Durability;

    #[test]
    fn each_key_reads_back_what_was_written_and_defaults_when_absent() {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut store = Store::open(dir.path()).expect("open");
        assert_eq!(read_lsn(&store).expect("read"), None);
        assert_eq!(read_acked(&store).expect("read"), Lsn::ZERO);
        assert!(!read_partial(&store).expect("read"));
        assert!(read_dates(&store).expect("read").is_empty());
        assert!(!read_snapshot_done(&store).expect("read"));
        store
            .commit(
                &[
                    lsn(Lsn(0x1_0000_0010)),
                    acked(Lsn(7)),
                    partial(true),
                    dates(&[1, 2]),
                    fingerprint("fp"),
                    snapshot_done(true),
                ],
                Durability::Synced,
            )
            .expect("commit");
        assert_eq!(read_lsn(&store).expect("read"), Some(Lsn(0x1_0000_0010)));
        assert_eq!(read_acked(&store).expect("read"), Lsn(7));
        assert!(read_partial(&store).expect("read"));
        assert_eq!(read_dates(&store).expect("read"), vec![1, 2]);
        assert_eq!(
            read_fingerprint(&store).expect("read").as_deref(),
            Some("fp")
        );
        assert!(read_snapshot_done(&store).expect("read"));
    }
}
