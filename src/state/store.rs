//! The RocksDB state store, its per-batch overlay and its write-back layer.
//!
//! A batch reads through an in-memory overlay (pending writes shadow the database) and writes only
//! into the overlay. Nothing reaches RocksDB until the batch's target transaction has committed;
//! then [`Store::commit`] takes the whole overlay and the batch's LSN at once. If anything fails
//! before that, [`Store::discard`] drops the overlay and the state is exactly the state as of its
//! recorded LSN, from which the slot replays.
//!
//! A held commit ([`Durability::Held`], the engine's batches) does not write to RocksDB at all: it
//! moves the overlay into the *held* layer, committed writes kept in memory until the next checkpoint
//! ([`Store::persist`], [`Store::flush`]) or until the owner spills them because they exceed
//! [`HELD_BYTES`] ([`Store::spill_if_over`]; the engine does that only when its targets are not
//! behind the held state: see `engine::durability`). A key written by
//! many batches in between (a day's group, a workspace total, a row updated twice) then reaches
//! RocksDB's memtables once, and reads of recent writes are hash lookups instead of skiplist
//! searches. The crash argument is unchanged: the held layer always moves into RocksDB whole, in
//! one WriteBatch that includes the LSN of the commit it ends with, so RocksDB only ever holds the
//! state as of some commit, and an unlogged write was never durable before its checkpoint anyway.

use rustc_hash::FxHashMap;
use std::collections::hash_map::Entry;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rocksdb::{Direction, IteratorMode, WriteBatch, WriteOptions, DB};
use serde::{de::DeserializeOwned, Serialize};
use thiserror::Error;

use super::keys::{self, ALL_CFS, CF_META};
use super::tuning;

#[derive(Debug, Error)]
pub enum StoreError {
    #[error(
        "state directory {dir} is in use by another deltamv process ({holder}): stop that process first; a second engine on the same state is refused"
    )]
    Locked { dir: String, holder: String },
    #[error("cannot open state directory {dir}: {detail}")]
    Open { dir: String, detail: String },
    /// RocksDB found its own files corrupt (`setup` moves such a directory aside).
    #[error("state directory {dir} is corrupt: {detail}")]
    Damaged { dir: String, detail: String },
    #[error("state store error: {0}")]
    Rocks(#[from] rocksdb::Error),
    /// Building or ingesting the initial load's table files ([`super::bulk`]).
    #[error("bulk load of the state: {0}")]
    Bulk(String),
    #[error(
        "corrupt state record in {cf}: {detail}; run `deltamv init --resync` to rebuild state"
    )]
    Corrupt { cf: &'static str, detail: String },
    /// A wipe found the database shared with another part of the process (a bug).
    #[error("the state cannot be wiped while a checkpoint holds it: restart deltamv")]
    InUse,
}

impl StoreError {
    /// RocksDB could not write for lack of space (ENOSPC).
    pub fn is_disk_full(&self) -> bool {
        let text = match self {
            StoreError::Rocks(e) => e.to_string(),
            StoreError::Open { detail, .. } | StoreError::Bulk(detail) => detail.clone(),
            StoreError::Locked { .. }
            | StoreError::Damaged { .. }
            | StoreError::Corrupt { .. }
            | StoreError::InUse => return false,
        };
        no_space(&text)
    }
}

/// Whether a RocksDB message reports ENOSPC.
fn no_space(message: &str) -> bool {
    message.contains("No space left on device")
}

/// How a [`Store::commit`] reaches the disk.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Durability {
    /// Through RocksDB's write-ahead log, synced before the commit returns.
    Synced,
    /// Into the memtables only: durable at the next [`Store::flush`] (or at one RocksDB starts
    /// itself when a memtable fills). A crash before that loses these writes, but never part of
    /// one: with atomic flush, what survives is the state as of some commit, all column
    /// families alike, so its recorded LSN says where to replay from. For the snapshot's
    /// chunks, whose source the slot still holds; skipping the log saves writing every change
    /// twice plus an fsync.
    Unlogged,
    /// Like `Unlogged`, but kept in the store's held layer until [`Store::persist`],
    /// [`Store::flush`] or [`Store::spill_if_over`]: for the engine's batches, which checkpoint
    /// every `checkpoint_ms` (see the module doc).
    Held,
}

/// See [`Store::flusher`].
#[derive(Clone)]
pub struct Flusher(Arc<DB>);

impl Flusher {
    pub fn flush(&self) -> Result<(), StoreError> {
        flush_all(&self.0)
    }
}

fn cf_handle<'a>(db: &'a DB, name: &str) -> Result<&'a rocksdb::ColumnFamily, StoreError> {
    db.cf_handle(name).ok_or_else(|| StoreError::Open {
        dir: db.path().display().to_string(),
        detail: format!("missing column family {name}"),
    })
}

fn flush_all(db: &DB) -> Result<(), StoreError> {
    let handles = ALL_CFS
        .iter()
        .map(|name| cf_handle(db, name))
        .collect::<Result<Vec<_>, _>>()?;
    db.flush_cfs_opt(&handles, &rocksdb::FlushOptions::default())?;
    Ok(())
}

/// A raw key and value.
pub type KeyValue = (Vec<u8>, Vec<u8>);

/// One pending write: a value, or a deletion.
type Pending = FxHashMap<Vec<u8>, Option<Vec<u8>>>;

/// The bytes a pending write counts for in [`HELD_BYTES`]: its key and value.
fn entry_bytes((key, value): (&Vec<u8>, &Option<Vec<u8>>)) -> usize {
    key.len() + value.as_ref().map_or(0, Vec::len)
}

/// Who holds the state directory: written by the process that opened it.
const OWNER_FILE: &str = "deltamv.owner";

/// Key and value bytes of unlogged commits held in memory before they are written to RocksDB
/// without waiting for a checkpoint (see the module doc).
pub const HELD_BYTES: usize = 32 << 20;

pub struct Store {
    db: Arc<DB>,
    /// The block cache the column families share (a wiped one is created anew with it).
    cache: rocksdb::Cache,
    /// The state directory (the bulk load's scratch files go under it).
    dir: PathBuf,
    /// This batch's writes (discarded on error).
    overlay: HashMap<&'static str, Pending>,
    /// Committed writes not yet in RocksDB, and their size in bytes.
    held: HashMap<&'static str, Pending>,
    held_bytes: usize,
}

impl Store {
    pub fn open(dir: &Path) -> Result<Store, StoreError> {
        std::fs::create_dir_all(dir).map_err(|e| StoreError::Open {
            dir: dir.display().to_string(),
            detail: e.to_string(),
        })?;
        let (opts, cfs, cache) = tuning::options();
        let db = DB::open_cf_descriptors(&opts, dir, cfs).map_err(|e| {
            let detail = e.to_string();
            if detail.contains("lock") || detail.contains("LOCK") {
                let holder = std::fs::read_to_string(dir.join(OWNER_FILE))
                    .map(|s| s.trim().to_string())
                    .unwrap_or_else(|_| format!("holder unknown: {detail}"));
                StoreError::Locked {
                    dir: dir.display().to_string(),
                    holder,
                }
            } else if e.kind() == rocksdb::ErrorKind::Corruption && !no_space(&detail) {
                // (A write cut short by a full disk is not corruption: the directory is kept.)
                StoreError::Damaged {
                    dir: dir.display().to_string(),
                    detail,
                }
            } else {
                StoreError::Open {
                    dir: dir.display().to_string(),
                    detail,
                }
            }
        })?;
        // Names this process to a second one that finds the lock taken (RocksDB's LOCK file
        // holds no owner). Best effort: the lock itself is what keeps the second one out.
        let owner = format!(
            "pid {} on {}, since {}",
            std::process::id(),
            std::fs::read_to_string("/proc/sys/kernel/hostname")
                .map(|h| h.trim().to_string())
                .unwrap_or_else(|_| "this host".into()),
            chrono::Utc::now().format("%Y-%m-%d %H:%M:%S UTC")
        );
        if let Err(e) = std::fs::write(dir.join(OWNER_FILE), owner) {
            tracing::warn!(error = %e, "cannot record this process as the state directory's owner");
        }
        Ok(Store {
            db: Arc::new(db),
            cache,
            dir: dir.to_path_buf(),
            overlay: HashMap::new(),
            held: HashMap::new(),
            held_bytes: 0,
        })
    }

    fn cf(&self, name: &str) -> Result<&rocksdb::ColumnFamily, StoreError> {
        cf_handle(&self.db, name)
    }

    /// Reads a raw value: pending writes first, then held ones, then RocksDB.
    #[cfg(test)]
    pub fn get_raw(&self, cf: &'static str, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        self.read(cf, key, |bytes| Ok(bytes.to_vec()))
    }

    /// A key's value in the pending writes, else in the held ones (`Some(None)`: deleted there);
    /// `None` when neither has it and RocksDB must answer.
    fn layered(&self, cf: &str, key: &[u8]) -> Option<&Option<Vec<u8>>> {
        [&self.overlay, &self.held]
            .into_iter()
            .find_map(|layer| layer.get(cf).and_then(|m| m.get(key)))
    }

    /// Whether this batch's pending writes hold `key` (written or deleted since the last
    /// commit).
    pub fn is_pending(&self, cf: &str, key: &[u8]) -> bool {
        self.overlay.get(cf).is_some_and(|m| m.contains_key(key))
    }

    /// Reads a value where it lies (pending writes, held ones, then RocksDB's pinned block)
    /// and hands it to `decode`: a lookup per change, so no copy of the bytes first.
    pub fn read<T>(
        &self,
        cf: &'static str,
        key: &[u8],
        decode: impl FnOnce(&[u8]) -> Result<T, StoreError>,
    ) -> Result<Option<T>, StoreError> {
        if let Some(p) = self.layered(cf, key) {
            return p.as_deref().map(decode).transpose();
        }
        match self.db.get_pinned_cf(self.cf(cf)?, key)? {
            Some(bytes) => decode(&bytes).map(Some),
            None => Ok(None),
        }
    }

    /// [`Self::read`] for many keys at once: those not pending or held are looked up in RocksDB
    /// with one batched MultiGet, which shares index, filter and block lookups among keys that
    /// lie together (sorted keys make that cheapest). Results are in the order of `keys`.
    pub fn read_many<K: AsRef<[u8]>, T>(
        &self,
        cf: &'static str,
        keys: &[K],
        decode: impl Fn(&[u8]) -> Result<T, StoreError>,
    ) -> Result<Vec<Option<T>>, StoreError> {
        self.read_many_with(cf, keys, decode, &rocksdb::ReadOptions::default())
    }

    /// [`Self::read_many`] for keys read once, in blocks nothing else is about to read (the row
    /// images a batch or a date change reads): the blocks read are not kept in the block cache,
    /// whose blocks stay for the reads that do come back.
    pub fn read_many_once<K: AsRef<[u8]>, T>(
        &self,
        cf: &'static str,
        keys: &[K],
        decode: impl Fn(&[u8]) -> Result<T, StoreError>,
    ) -> Result<Vec<Option<T>>, StoreError> {
        let mut once = rocksdb::ReadOptions::default();
        once.fill_cache(false);
        self.read_many_with(cf, keys, decode, &once)
    }

    fn read_many_with<K: AsRef<[u8]>, T>(
        &self,
        cf: &'static str,
        keys: &[K],
        decode: impl Fn(&[u8]) -> Result<T, StoreError>,
        options: &rocksdb::ReadOptions,
    ) -> Result<Vec<Option<T>>, StoreError> {
        let mut out: Vec<Option<T>> = Vec::with_capacity(keys.len());
        let mut from_db: Vec<usize> = Vec::new();
        for (i, key) in keys.iter().enumerate() {
            match self.layered(cf, key.as_ref()) {
                Some(p) => out.push(p.as_deref().map(&decode).transpose()?),
                None => {
                    out.push(None);
                    from_db.push(i);
                }
            }
        }
        if from_db.is_empty() {
            return Ok(out);
        }
        let sorted = from_db
            .windows(2)
            .all(|w| keys[w[0]].as_ref() <= keys[w[1]].as_ref());
        let found = self.db.batched_multi_get_cf_opt(
            self.cf(cf)?,
            from_db.iter().map(|&i| keys[i].as_ref()),
            sorted,
            options,
        );
        for (i, value) in from_db.into_iter().zip(found) {
            if let Some(bytes) = value? {
                out[i] = Some(decode(&bytes)?);
            }
        }
        Ok(out)
    }

    pub fn get<T: DeserializeOwned>(
        &self,
        cf: &'static str,
        key: &[u8],
    ) -> Result<Option<T>, StoreError> {
        self.read(cf, key, |bytes| {
            keys::decode(bytes).map_err(|e| StoreError::Corrupt {
                cf,
                detail: e.to_string(),
            })
        })
    }

    pub fn put<T: Serialize>(&mut self, cf: &'static str, key: Vec<u8>, value: &T) {
        self.overlay
            .entry(cf)
            .or_default()
            .insert(key, Some(keys::encode(value)));
    }

    /// Like [`Self::put`] with a value already encoded ([`keys::encode`]).
    pub fn put_encoded(&mut self, cf: &'static str, key: Vec<u8>, value: Vec<u8>) {
        self.overlay.entry(cf).or_default().insert(key, Some(value));
    }

    /// Room for `additional` more writes to `cf` in this batch, made at once (a caller about
    /// to write many keys saves the map's doublings).
    pub fn reserve(&mut self, cf: &'static str, additional: usize) {
        self.overlay.entry(cf).or_default().reserve(additional);
    }

    pub fn delete(&mut self, cf: &'static str, key: Vec<u8>) {
        self.overlay.entry(cf).or_default().insert(key, None);
    }

    /// All live keys with `prefix` (database merged with pending writes), in key order, with
    /// keys strictly below `upto` only, when given.
    pub fn scan_prefix(
        &self,
        cf: &'static str,
        prefix: &[u8],
        upto: Option<&[u8]>,
    ) -> Result<Vec<KeyValue>, StoreError> {
        Ok(self.scan(cf, prefix, prefix, upto, usize::MAX)?.0)
    }

    /// Up to about `limit` entries under `prefix` from `from` on (inclusive), pending writes
    /// merged, in key order; and the key the next page starts from (`None`: this was the last).
    pub fn scan_page(
        &self,
        cf: &'static str,
        prefix: &[u8],
        from: &[u8],
        limit: usize,
    ) -> Result<(Vec<KeyValue>, Option<Vec<u8>>), StoreError> {
        self.scan(cf, prefix, from, None, limit)
    }

    /// Live keys under `prefix` in [`from`, `upto`), database merged with pending writes, at
    /// most `limit` from the database; the first database key left out, if the limit cut.
    fn scan(
        &self,
        cf: &'static str,
        prefix: &[u8],
        from: &[u8],
        upto: Option<&[u8]>,
        limit: usize,
    ) -> Result<(Vec<KeyValue>, Option<Vec<u8>>), StoreError> {
        let mut out: std::collections::BTreeMap<Vec<u8>, Vec<u8>> =
            std::collections::BTreeMap::new();
        let start = if from < prefix { prefix } else { from };
        let iter = self
            .db
            .iterator_cf(self.cf(cf)?, IteratorMode::From(start, Direction::Forward));
        let mut end: Option<Vec<u8>> = None;
        for item in iter {
            let (k, v) = item?;
            if !k.starts_with(prefix) || upto.is_some_and(|u| k.as_ref() >= u) {
                break;
            }
            if out.len() >= limit {
                end = Some(k.to_vec());
                break;
            }
            out.insert(k.to_vec(), v.to_vec());
        }
        // Held, then pending writes in [start, upto) and before the cut belong to this scan.
        for pending in [&self.held, &self.overlay]
            .into_iter()
            .filter_map(|l| l.get(cf))
        {
            for (k, v) in pending {
                let in_range = k.starts_with(prefix)
                    && k.as_slice() >= start
                    && upto.is_none_or(|u| k.as_slice() < u)
                    && end.as_ref().is_none_or(|e| k < e);
                if in_range {
                    match v {
                        Some(v) => out.insert(k.clone(), v.clone()),
                        None => out.remove(k),
                    };
                }
            }
        }
        Ok((out.into_iter().collect(), end))
    }

    /// Commits all pending changes plus the meta entries as one unit, together with everything
    /// held: synced through RocksDB's log, into its memtables only, or into the held layer (see
    /// [`Durability`] and the module doc).
    pub fn commit(
        &mut self,
        meta: &[(&str, Vec<u8>)],
        durability: Durability,
    ) -> Result<(), StoreError> {
        let pending = self.overlay.entry(CF_META).or_default();
        for (k, v) in meta {
            pending.insert(k.as_bytes().to_vec(), Some(v.clone()));
        }
        for (cf, pending) in std::mem::take(&mut self.overlay) {
            let held = self.held.entry(cf).or_default();
            if held.is_empty() {
                // The usual case between checkpoints of a drained backlog: the batch's map
                // becomes the held one as it is, without hashing every key again.
                self.held_bytes += pending.iter().map(entry_bytes).sum::<usize>();
                *held = pending;
                continue;
            }
            // The smaller map goes into the larger one (a midnight's batch can hold far more
            // than the held layer), with room made once; the batch's writes win.
            self.held_bytes += pending.iter().map(entry_bytes).sum::<usize>();
            if pending.len() > held.len() {
                let older = std::mem::replace(held, pending);
                held.reserve(older.len());
                for (k, v) in older {
                    match held.entry(k) {
                        Entry::Occupied(e) => self.held_bytes -= entry_bytes((e.key(), &v)),
                        Entry::Vacant(e) => {
                            e.insert(v);
                        }
                    }
                }
            } else {
                held.reserve(pending.len());
                for (k, v) in pending {
                    let key_len = k.len();
                    if let Some(before) = held.insert(k, v) {
                        self.held_bytes -= key_len + before.map_or(0, |b| b.len());
                    }
                }
            }
        }
        match durability {
            Durability::Synced => self.write_held(true),
            Durability::Unlogged => self.write_held(false),
            Durability::Held => Ok(()),
        }
    }

    /// Writes the held layer into RocksDB (as [`Self::persist`]) if it holds more than
    /// [`HELD_BYTES`], so that memory stays bounded between checkpoints.
    pub fn spill_if_over(&mut self) -> Result<(), StoreError> {
        if self.held_bytes > HELD_BYTES {
            self.write_held(false)?;
        }
        Ok(())
    }

    /// Writes the held layer into RocksDB (its memtables, without the log): before a
    /// checkpoint's flush, which then makes it durable.
    pub fn persist(&mut self) -> Result<(), StoreError> {
        self.write_held(false)
    }

    /// Writes everything committed and flushes every memtable to table files, all column
    /// families as one atomic unit: after it returns, every commit before it is durable.
    pub fn flush(&mut self) -> Result<(), StoreError> {
        self.persist()?;
        flush_all(&self.db)
    }

    /// A handle that flushes from another thread while this one goes on writing (writes after
    /// the flush began go to fresh memtables and are not covered by it).
    pub fn flusher(&self) -> Flusher {
        Flusher(self.db.clone())
    }

    /// Writes the held layer (which a synced commit has just topped up) into RocksDB as one
    /// atomic WriteBatch, through the log and synced or into the memtables only.
    fn write_held(&mut self, synced: bool) -> Result<(), StoreError> {
        if self.held.is_empty() {
            return Ok(());
        }
        // Sized up front: grown by doubling, its buffer was copied into fresh pages again and
        // again (page faults and copies: about 6% of a catch-up's samples, 2026-12-05). Each
        // record adds a tag, a column family id and two lengths to its key and value.
        let entries: usize = self.held.values().map(|p| p.len()).sum();
        let mut batch = WriteBatch::with_capacity_bytes(self.held_bytes + 16 * entries + 64);
        // Each entry is dropped once copied into the batch, so the layer and its copy do not
        // both peak in memory. Should the write fail, the layer is gone with it: an error here
        // ends the engine's round, which reopens the state from disk anyway.
        let held = std::mem::take(&mut self.held);
        self.held_bytes = 0;
        for (cf, pending) in held {
            let handle = self.cf(cf)?;
            // In key order: RocksDB's memtable skiplist then resumes each insert from where
            // the previous one ended instead of searching from its top (in hash order the
            // inserts were a quarter of a batch's CPU).
            let mut sorted: Vec<_> = pending.into_iter().collect();
            sorted.sort_unstable_by(|a, b| a.0.cmp(&b.0));
            for (k, v) in sorted {
                match v {
                    Some(v) => batch.put_cf(handle, k, v),
                    None => batch.delete_cf(handle, k),
                }
            }
        }
        let mut wo = WriteOptions::default();
        if synced {
            wo.set_sync(true);
        } else {
            wo.disable_wal(true);
        }
        self.db.write_opt(batch, &wo)?;
        Ok(())
    }

    /// Forgets all pending changes.
    pub fn discard(&mut self) {
        self.overlay.clear();
    }

    pub fn meta<T: DeserializeOwned>(&self, key: &str) -> Result<Option<T>, StoreError> {
        self.get(CF_META, key.as_bytes())
    }

    /// A RocksDB integer property summed over every column family (DB-wide properties read only
    /// the default column family, which holds nothing here).
    fn cf_property_sum(&self, name: &str) -> u64 {
        ALL_CFS
            .iter()
            .filter_map(|cf| self.db.cf_handle(cf))
            .filter_map(|h| self.db.property_int_value_cf(h, name).ok().flatten())
            .sum()
    }

    /// Bytes waiting for compaction and compactions running (RocksDB properties).
    pub fn compaction_stats(&self) -> (u64, u64) {
        (
            self.cf_property_sum("rocksdb.estimate-pending-compaction-bytes"),
            self.db
                .property_int_value("rocksdb.num-running-compactions")
                .ok()
                .flatten()
                .unwrap_or(0),
        )
    }

    /// Memory RocksDB keeps beside its open table files, outside the block cache (their index
    /// and filter blocks): it grows with the state.
    pub fn table_reader_bytes(&self) -> u64 {
        self.cf_property_sum("rocksdb.estimate-table-readers-mem")
    }

    /// The state's size in bytes: the table files of every column family plus what their
    /// memtables and the held layer hold (not yet flushed).
    pub fn size_bytes(&self) -> u64 {
        self.cf_property_sum("rocksdb.total-sst-files-size")
            + self.cf_property_sum("rocksdb.cur-size-all-mem-tables")
            + self.held_bytes as u64
    }
}

mod ingest;
#[cfg(test)]
mod tests;
mod wipe;
