//! Wiping the state before a fresh snapshot (`init --resync`, a state of another format).

use std::sync::Arc;

use super::{Store, StoreError};
use crate::state::keys::ALL_CFS;
use crate::state::tuning;

impl Store {
    /// Deletes everything (used before a fresh snapshot): every column family dropped and
    /// created anew, empty, with its options. RocksDB deletes a dropped column family's table
    /// files at once (nothing else reads them), so the load that follows searches nothing of
    /// the old state.
    ///
    /// Before, the wipe wrote a range deletion per column family, deleted the table files
    /// inside it and compacted what was left (memtables, level-0 files) to drop the deletion
    /// too: 0.45 s at 5M + 5M rows, against 0.18 s to drop and create (most of it deleting
    /// 1.1 GB of files). Deleting key by key, earlier still, took time and memory in
    /// proportion to the state.
    ///
    /// A crash between a drop and its creation leaves the column family missing; the next
    /// open creates it empty, and the metadata, dropped first, no longer says the state is
    /// loaded: the next start rebuilds it.
    pub fn wipe(&mut self) -> Result<(), StoreError> {
        let started = std::time::Instant::now();
        self.overlay.clear();
        self.held.clear();
        self.held_bytes = 0;
        // Only a running engine's checkpoint flusher shares the database; setup wipes before
        // any engine starts.
        let Some(db) = Arc::get_mut(&mut self.db) else {
            return Err(StoreError::InUse);
        };
        for cf in ALL_CFS {
            db.drop_cf(cf)?;
            db.create_cf(cf, &tuning::column_family(cf, Some(&self.cache)))?;
        }
        let left = db.live_files()?;
        tracing::debug!(
            files = left.len(),
            entries = left.iter().map(|f| f.num_entries).sum::<u64>(),
            ms = started.elapsed().as_millis(),
            "state wiped"
        );
        Ok(())
    }
}
