//! The store's side of the initial load's bulk writes ([`crate::state::bulk`]): their scratch
//! directories under the state directory, and the ingestion of their table files.

use super::{Store, StoreError};
use crate::state::bulk::{self, BulkWriter, TableFiles};

/// The start of a bulk writer's scratch directory's name, in the state directory.
const BULK_PREFIX: &str = "bulk-";

impl Store {
    /// A writer of bulk entries for `cf`, to be ingested by [`Self::ingest`]; `part` names its
    /// scratch directory (one per table of a load).
    pub fn bulk_writer(&self, cf: &'static str, part: usize) -> Result<BulkWriter, StoreError> {
        let dir = self.dir.join(format!("{BULK_PREFIX}{cf}-{part}"));
        BulkWriter::new(cf, dir, bulk::RUN_BYTES)
    }

    /// Removes every bulk writer's scratch directory (what a crashed load left).
    pub fn clear_bulk(&self) -> Result<(), StoreError> {
        let fail =
            |e: std::io::Error| StoreError::Bulk(format!("clearing {}: {e}", self.dir.display()));
        for entry in std::fs::read_dir(&self.dir).map_err(fail)? {
            let entry = entry.map_err(fail)?;
            if entry.file_name().to_string_lossy().starts_with(BULK_PREFIX) {
                std::fs::remove_dir_all(entry.path()).map_err(fail)?;
            }
        }
        Ok(())
    }

    /// Ingests a bulk writer's table files into their column family, newer than everything
    /// committed before (the held layer is written first), and removes its scratch directory.
    /// Not durable until the next [`Self::flush`]; returns the number of entries put.
    pub fn ingest(&mut self, table_files: TableFiles) -> Result<u64, StoreError> {
        self.persist()?;
        let TableFiles {
            cf,
            dir,
            files,
            entries,
        } = table_files;
        if !files.is_empty() {
            let mut opts = rocksdb::IngestExternalFileOptions::default();
            opts.set_move_files(true);
            self.db
                .ingest_external_file_cf_opts(self.cf(cf)?, &opts, files)?;
        }
        std::fs::remove_dir_all(&dir)
            .map_err(|e| StoreError::Bulk(format!("removing {}: {e}", dir.display())))?;
        Ok(entries)
    }
}
