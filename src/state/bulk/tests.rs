use std::collections::BTreeMap;

use rand::{rngs::SmallRng, Rng, SeedableRng};

use super::*;
use crate::state::keys::{CF_META, CF_ROWS, CF_TIME};
use crate::state::store::{Durability, Store};

fn temp_dir() -> Result<tempfile::TempDir, StoreError> {
    tempfile::tempdir().map_err(|e| StoreError::Bulk(e.to_string()))
}

/// Random keys (many put more than once, in different runs; sharing a long prefix, as a
/// table's or a view's do, and some a prefix of others), values of random length.
fn entries(seed: u64, n: usize) -> Vec<(Vec<u8>, Vec<u8>)> {
    let mut rng = SmallRng::seed_from_u64(seed);
    let ids: Vec<u32> = (0..n / 2).map(|_| rng.gen()).collect();
    (0..n)
        .map(|i| {
            let id = ids[rng.gen_range(0..ids.len())].to_be_bytes();
            let mut key = b"a prefix all keys share".to_vec();
            key.extend_from_slice(&id[..rng.gen_range(1..=4)]);
            let len = rng.gen_range(0..40);
            let mut value = vec![rng.gen::<u8>(); len];
            value.extend_from_slice(&(i as u32).to_le_bytes());
            (key, value)
        })
        .collect()
}

/// Every key reads back with its last value bulk-loaded, over what was committed before; the
/// scratch files are gone; after a flush, a reopened store reads the same. Run with a budget
/// that spills many runs (merged at the end) and with one that spills none.
#[test]
fn ingested_entries_read_back_last_put_wins() -> Result<(), StoreError> {
    for (seed, budget) in [(1, 4096), (2, RUN_BYTES)] {
        let dir = temp_dir()?;
        let data = entries(seed, 20_000);
        let mut expected: BTreeMap<Vec<u8>, Vec<u8>> = BTreeMap::new();
        {
            let mut store = Store::open(dir.path())?;
            // Older than the load: overwritten where the load has the key, kept elsewhere.
            for i in (0..20_000u32).step_by(7) {
                let key = [b"a prefix all keys share".as_slice(), &i.to_be_bytes()].concat();
                store.put_encoded(CF_ROWS, key.clone(), b"old".to_vec());
                expected.insert(key, b"old".to_vec());
            }
            store.commit(&[], Durability::Held)?;
            let mut writer = BulkWriter::new(CF_ROWS, dir.path().join("bulk-rows"), budget)?;
            for (k, v) in &data {
                writer.put(k, v)?;
                expected.insert(k.clone(), v.clone());
            }
            if budget < RUN_BYTES {
                assert!(writer.spills > 10, "the small budget spills many runs");
            } else {
                assert_eq!(writer.spills, 0);
            }
            assert_eq!(store.ingest(writer.finish()?)?, data.len() as u64);
            assert!(!dir.path().join("bulk-rows").exists());
            for (k, v) in &expected {
                assert_eq!(store.get_raw(CF_ROWS, k)?.as_ref(), Some(v), "key {k:?}");
            }
            let scanned = store.scan_prefix(CF_ROWS, &[], None)?;
            assert_eq!(scanned.len(), expected.len());
            store.flush()?;
        }
        let store = Store::open(dir.path())?;
        let scanned: BTreeMap<Vec<u8>, Vec<u8>> =
            store.scan_prefix(CF_ROWS, &[], None)?.into_iter().collect();
        assert_eq!(scanned, expected, "seed {seed}, after reopening");
    }
    Ok(())
}

/// Nothing put: nothing ingested, and no error.
#[test]
fn an_empty_load_ingests_nothing() -> Result<(), StoreError> {
    let dir = temp_dir()?;
    let mut store = Store::open(dir.path())?;
    let writer = store.bulk_writer(CF_TIME, 0)?;
    assert_eq!(store.ingest(writer.finish()?)?, 0);
    assert!(store.scan_prefix(CF_TIME, &[], None)?.is_empty());
    assert_eq!(store.get_raw(CF_META, b"x")?, None);
    Ok(())
}

/// A crashed load's scratch files are cleared, not ingested.
#[test]
fn a_crashed_loads_scratch_files_are_cleared() -> Result<(), StoreError> {
    let dir = temp_dir()?;
    let io = |e: std::io::Error| StoreError::Bulk(e.to_string());
    // As a load killed while spilling leaves it: runs and a table file half written, for a
    // table of this load and for one the next load does not have.
    for part in ["bulk-rows-0", "bulk-time_index-7"] {
        let scratch = dir.path().join(part);
        std::fs::create_dir_all(&scratch).map_err(io)?;
        std::fs::write(scratch.join("run-00000"), [1, 0, 0, 0, 7, 0, 0, 0, b'k']).map_err(io)?;
        std::fs::write(scratch.join("table-00000.sst"), b"partial").map_err(io)?;
    }
    let mut store = Store::open(dir.path())?;
    store.clear_bulk()?;
    let left: Vec<_> = std::fs::read_dir(dir.path())
        .map_err(io)?
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().starts_with("bulk-"))
        .collect();
    assert!(left.is_empty(), "left behind: {left:?}");
    let mut writer = store.bulk_writer(CF_ROWS, 0)?;
    writer.put(b"k", b"v")?;
    store.ingest(writer.finish()?)?;
    let all = store.scan_prefix(CF_ROWS, &[], None)?;
    assert_eq!(all, vec![(b"k".to_vec(), b"v".to_vec())]);
    Ok(())
}
