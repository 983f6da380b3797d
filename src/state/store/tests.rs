use super::*;
use crate::state::keys::CF_GROUPS;

fn temp_dir() -> Result<tempfile::TempDir, StoreError> {
    tempfile::tempdir().map_err(|e| StoreError::Open {
        dir: "temp".into(),
        detail: e.to_string(),
    })
}

/// Held commits are read back (point reads and scans) before they reach RocksDB; dropped
/// without a checkpoint, they are gone and the store reopens exactly as of the last flush,
/// meta included; after `flush` they survive a reopen.
#[test]
fn held_commits_are_read_and_survive_only_a_checkpoint() -> Result<(), StoreError> {
    let dir = temp_dir()?;
    let key = |i: u32| [b"g".as_slice(), &i.to_be_bytes()].concat();
    {
        let mut store = Store::open(dir.path())?;
        store.put(CF_GROUPS, key(1), &10u32);
        store.commit(&[("lsn", vec![1])], Durability::Held)?;
        store.flush()?;
        store.put(CF_GROUPS, key(1), &11u32);
        store.put(CF_GROUPS, key(2), &20u32);
        store.commit(&[("lsn", vec![2])], Durability::Held)?;
        store.delete(CF_GROUPS, key(2));
        store.put(CF_GROUPS, key(3), &30u32);
        store.discard(); // a failed batch: the held layer keeps the last commit
        assert_eq!(store.get::<u32>(CF_GROUPS, &key(1))?, Some(11));
        assert_eq!(store.get::<u32>(CF_GROUPS, &key(2))?, Some(20));
        assert_eq!(store.get::<u32>(CF_GROUPS, &key(3))?, None);
        let keys: Vec<Vec<u8>> = store
            .scan_prefix(CF_GROUPS, b"g", None)?
            .into_iter()
            .map(|(k, _)| k)
            .collect();
        assert_eq!(keys, vec![key(1), key(2)]);
        assert_eq!(store.get_raw(CF_META, b"lsn")?, Some(vec![2]));
    } // dropped without a checkpoint: as after kill -9
    {
        let mut store = Store::open(dir.path())?;
        assert_eq!(store.get::<u32>(CF_GROUPS, &key(1))?, Some(10));
        assert_eq!(store.get::<u32>(CF_GROUPS, &key(2))?, None);
        assert_eq!(store.get_raw(CF_META, b"lsn")?, Some(vec![1]));
        store.put(CF_GROUPS, key(2), &21u32);
        store.commit(&[("lsn", vec![3])], Durability::Held)?;
        store.flush()?;
    }
    let store = Store::open(dir.path())?;
    assert_eq!(store.get::<u32>(CF_GROUPS, &key(2))?, Some(21));
    assert_eq!(store.get_raw(CF_META, b"lsn")?, Some(vec![3]));
    Ok(())
}

/// Pages cover every live key exactly once, in order, with pending writes (new keys,
/// overwrites, deletions) merged into the page their key falls in.
#[test]
fn pages_cover_committed_and_pending_keys_once() -> Result<(), StoreError> {
    let dir = temp_dir()?;
    let mut store = Store::open(dir.path())?;
    for i in (0u32..100).step_by(2) {
        store.put(CF_GROUPS, [b"p".as_slice(), &i.to_be_bytes()].concat(), &i);
    }
    store.put(CF_GROUPS, b"q-other-prefix".to_vec(), &0u32);
    store.commit(&[], Durability::Synced)?;
    for i in (1u32..100).step_by(10) {
        store.put(CF_GROUPS, [b"p".as_slice(), &i.to_be_bytes()].concat(), &i);
    }
    store.put(
        CF_GROUPS,
        [b"p".as_slice(), &4u32.to_be_bytes()].concat(),
        &1004u32,
    );
    store.delete(CF_GROUPS, [b"p".as_slice(), &6u32.to_be_bytes()].concat());

    let (mut seen, mut from) = (Vec::new(), b"p".to_vec());
    loop {
        let (page, next) = store.scan_page(CF_GROUPS, b"p", &from, 7)?;
        for (_, v) in page {
            seen.push(keys::decode::<u32>(&v).map_err(|e| StoreError::Corrupt {
                cf: CF_GROUPS,
                detail: e.to_string(),
            })?);
        }
        match next {
            Some(k) => from = k,
            None => break,
        }
    }
    let mut expected: Vec<u32> = (0u32..100)
        .filter(|i| i % 2 == 0 || i % 10 == 1)
        .filter(|i| *i != 6)
        .map(|i| if i == 4 { 1004 } else { i })
        .collect();
    expected.sort_by_key(|v| if *v == 1004 { 4 } else { *v });
    assert_eq!(seen, expected);
    Ok(())
}

/// A batched read answers every key as a point read would: pending writes and deletes first,
/// then held ones, then RocksDB (memtable and SST files), whatever the order of the keys.
#[test]
fn batched_reads_see_every_layer_like_point_reads() -> Result<(), StoreError> {
    let dir = temp_dir()?;
    let key = |i: u32| [b"g".as_slice(), &i.to_be_bytes()].concat();
    let mut store = Store::open(dir.path())?;
    for i in 0..100 {
        store.put(CF_GROUPS, key(i), &i);
    }
    store.commit(&[], Durability::Held)?;
    store.flush()?; // 0..100 in an SST file
    store.put(CF_GROUPS, key(5), &500u32);
    store.delete(CF_GROUPS, key(6));
    store.commit(&[], Durability::Unlogged)?; // in the memtable
    store.put(CF_GROUPS, key(7), &700u32);
    store.put(CF_GROUPS, key(100), &1000u32);
    store.commit(&[], Durability::Held)?; // held
    store.delete(CF_GROUPS, key(8));
    store.put(CF_GROUPS, key(9), &900u32); // pending
    let decode = |b: &[u8]| {
        keys::decode::<u32>(b).map_err(|e| StoreError::Corrupt {
            cf: CF_GROUPS,
            detail: e.to_string(),
        })
    };
    for ids in [
        (0..120).collect::<Vec<u32>>(),
        vec![101, 9, 3, 100, 6, 8, 5, 7, 99],
    ] {
        let keys: Vec<Vec<u8>> = ids.iter().map(|&i| key(i)).collect();
        let many = store.read_many(CF_GROUPS, &keys, decode)?;
        let one_by_one = keys
            .iter()
            .map(|k| store.get::<u32>(CF_GROUPS, k))
            .collect::<Result<Vec<_>, _>>()?;
        assert_eq!(many, one_by_one);
    }
    let some = store.read_many(CF_GROUPS, &[key(5), key(6), key(7), key(8), key(9)], decode)?;
    assert_eq!(some, vec![Some(500), None, Some(700), None, Some(900)]);
    Ok(())
}

/// A batch committed into the held layer wins over what the layer holds, whether it is the
/// larger of the two (it becomes the layer, the older writes go into it) or the smaller, and
/// the held bytes count each live key once; after a checkpoint RocksDB has the same.
#[test]
fn a_batch_wins_over_the_held_layer_whichever_is_larger() -> Result<(), StoreError> {
    let dir = temp_dir()?;
    let key = |i: u32| [b"g".as_slice(), &i.to_be_bytes()].concat();
    let expect = |store: &Store| -> Result<(), StoreError> {
        assert_eq!(store.get::<u32>(CF_GROUPS, &key(1))?, None);
        assert_eq!(store.get::<u32>(CF_GROUPS, &key(2))?, Some(21));
        assert_eq!(store.get::<u32>(CF_GROUPS, &key(3))?, Some(30));
        assert_eq!(store.get::<u32>(CF_GROUPS, &key(4))?, Some(4));
        Ok(())
    };
    {
        let mut store = Store::open(dir.path())?;
        store.put(CF_GROUPS, key(1), &10u32);
        store.put(CF_GROUPS, key(2), &20u32);
        store.commit(&[], Durability::Held)?;
        store.put(CF_GROUPS, key(2), &21u32); // a larger batch than what is held
        for i in 3..20 {
            store.put(CF_GROUPS, key(i), &i);
        }
        store.commit(&[], Durability::Held)?;
        store.delete(CF_GROUPS, key(1)); // a smaller one
        store.put(CF_GROUPS, key(3), &30u32);
        store.commit(&[], Durability::Held)?;
        expect(&store)?;
        let counted: usize = store
            .held
            .values()
            .flat_map(|p| p.iter())
            .map(entry_bytes)
            .sum();
        assert_eq!(store.held_bytes, counted);
        store.flush()?;
    }
    expect(&Store::open(dir.path())?)
}

/// A wipe leaves every column family empty, also after a reopen, and the store takes new
/// writes at keys it held before.
#[test]
fn a_wipe_empties_every_column_family() -> Result<(), StoreError> {
    let dir = temp_dir()?;
    let key = |i: u32| i.to_be_bytes().to_vec();
    {
        let mut store = Store::open(dir.path())?;
        for cf in ALL_CFS {
            for i in 0..1000 {
                store.put(cf, key(i), &i);
            }
        }
        store.commit(&[], Durability::Synced)?;
        store.flush()?;
        // In the bottom level, as a loaded state is (its table files are ingested there).
        for cf in ALL_CFS {
            let handle = store.cf(cf)?;
            store
                .db
                .compact_range_cf(handle, None::<&[u8]>, None::<&[u8]>);
        }
        // Some in table files, some only in memtables and some held.
        store.put(CF_GROUPS, key(5000), &1u32);
        store.commit(&[], Durability::Unlogged)?;
        store.put(CF_GROUPS, key(6000), &1u32);
        store.commit(&[], Durability::Held)?;
        let before = store.size_bytes();
        store.wipe()?;
        // Nothing of the old state is left to search: no table file, no memtable entry.
        assert!(
            store.size_bytes() < before / 100,
            "{} bytes left of {before} after the wipe",
            store.size_bytes()
        );
        for cf in ALL_CFS {
            assert!(
                store.scan_prefix(cf, &[], None)?.is_empty(),
                "{cf} not empty"
            );
        }
        // Nor the range deletions themselves: a table file holding one would be consulted by
        // everything the next load writes and reads.
        let files = store.db.live_files()?;
        assert!(
            files.is_empty(),
            "table files left after the wipe: {:?}",
            (files.iter())
                .map(|f| (
                    &f.column_family_name,
                    f.level,
                    f.num_entries,
                    f.num_deletions
                ))
                .collect::<Vec<_>>()
        );
        store.put(CF_GROUPS, key(7), &70u32);
        store.commit(&[], Durability::Synced)?;
        store.flush()?;
    }
    let store = Store::open(dir.path())?;
    for cf in ALL_CFS {
        let left = store.scan_prefix(cf, &[], None)?;
        let expected = usize::from(cf == CF_GROUPS);
        assert_eq!(left.len(), expected, "{cf} after reopening: {left:?}");
    }
    assert_eq!(store.get::<u32>(CF_GROUPS, &key(7))?, Some(70));
    Ok(())
}
