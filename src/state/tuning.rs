//! RocksDB's settings for the state store, and why each: what they cost or saved was measured
//! on the engine's own workload (point lookups of row images and groups per change, a
//! checkpoint's atomic flush every second), so the reasons stay next to the numbers.

use rocksdb::{ColumnFamilyDescriptor, Options};

use super::keys::{ALL_CFS, CF_TIME};

/// RocksDB's block cache, shared by the column families (part of the engine's memory budget).
const BLOCK_CACHE_BYTES: usize = 64 << 20;
/// RocksDB's memtables, all column families together (the rest of its memory budget).
const MEMTABLE_BYTES: usize = 128 << 20;

/// The database's options, every column family's, and the block cache they share.
pub fn options() -> (Options, Vec<ColumnFamilyDescriptor>, rocksdb::Cache) {
    let mut opts = Options::default();
    opts.create_if_missing(true);
    opts.create_missing_column_families(true);
    opts.set_compression_type(rocksdb::DBCompressionType::Lz4);
    opts.increase_parallelism(2);
    // Unlogged commits rely on this: a flush (ours or RocksDB's own when a memtable fills)
    // persists all column families together, so a crash never leaves, say, a group updated
    // without the row image it came from.
    opts.set_atomic_flush(true);
    // All column families' memtables together (RocksDB's default allows 2 x 64 MB each).
    opts.set_db_write_buffer_size(MEMTABLE_BYTES);
    let cache = rocksdb::Cache::new_lru_cache(BLOCK_CACHE_BYTES);
    let cfs = (ALL_CFS.iter())
        .map(|name| ColumnFamilyDescriptor::new(*name, column_family(name, Some(&cache))))
        .collect();
    (opts, cfs, cache)
}

/// Column family `cf`'s options, its blocks cached in the database's `cache` (`None`: for table
/// files written outside the database).
pub fn column_family(cf: &str, cache: Option<&rocksdb::Cache>) -> Options {
    cf_options(&table_options(cache, point_reads(cf)), point_reads(cf))
}

/// Whether keys of column family `cf` are ever looked up one by one. The time index is only
/// scanned by date, so its bloom filters cost memory and CPU for nothing: a table file's
/// filter stays in memory beside the open file, and every new memtable allocates and zeroes
/// its own (5% of its size). Without them `init`'s peak RSS went from 490 to 440 MB at 5M + 5M
/// rows and from 519 to 439 MB at 10M + 10M (it had grown with the data; 2026-12-06, init
/// steps file in bench/results).
fn point_reads(cf: &str) -> bool {
    cf != CF_TIME
}

/// The options table files of column family `cf` are written with outside the database
/// (`super::bulk`): the column family's own, so that an ingested file is read as one RocksDB
/// wrote itself.
pub fn bulk_file_options(cf: &str) -> Options {
    let mut opts = column_family(cf, None);
    // Ingested files settle where compression is on (below level 1).
    opts.set_compression_type(rocksdb::DBCompressionType::Lz4);
    opts
}

/// Point lookups dominate (a row image or a group per change): a shared block cache so hot
/// blocks are not re-read and re-decompressed for every lookup, and bloom filters so a lookup
/// skips the table files that cannot hold its key.
fn table_options(cache: Option<&rocksdb::Cache>, point_reads: bool) -> rocksdb::BlockBasedOptions {
    let mut table = rocksdb::BlockBasedOptions::default();
    if let Some(cache) = cache {
        table.set_block_cache(cache);
    }
    if point_reads {
        table.set_bloom_filter(10.0, false);
    }
    // Point lookups inside a block by hash instead of binary search (RocksDB measured
    // about a fifth less CPU per lookup).
    table.set_data_block_index_type(rocksdb::DataBlockIndexType::BinaryAndHash);
    // Index and filter blocks stay with their table readers, outside the cache: charged to
    // the 64 MB cache (`cache_index_and_filter_blocks`), a large file's index block was
    // evicted and read and decompressed again on almost every lookup (10x slower catch-up,
    // measured 2026-12-05).
    table
}

fn cf_options(table: &rocksdb::BlockBasedOptions, point_reads: bool) -> Options {
    let mut cf = Options::default();
    // Compaction was a third of the engine's CPU while draining a backlog (profile of
    // 2026-12-05): every checkpoint leaves an L0 file whose keys (row ids, group keys)
    // spread over all of L1, so each L0 -> L1 compaction rewrites L1. Fewer, larger
    // compactions and no compression on the two levels that are rewritten most (LZ4 only
    // below them, where data settles) halve that work. 16 L0 files per compaction instead
    // of 8 drained a backlog 16% faster in one run beside its control (4,882 against 4,202
    // changes/s); universal compaction was no faster (4,231). The write stalls move up
    // with it (RocksDB's defaults are 20 and 36 files).
    use rocksdb::DBCompressionType::{Lz4, None as Plain};
    cf.set_compression_per_level(&[Plain, Plain, Lz4, Lz4, Lz4, Lz4, Lz4]);
    cf.set_level_zero_file_num_compaction_trigger(16);
    cf.set_level_zero_slowdown_writes_trigger(40);
    cf.set_level_zero_stop_writes_trigger(56);
    cf.set_write_buffer_size(MEMTABLE_BYTES / 2);
    // A bloom filter over each memtable's keys: the lookup of a key that is not there
    // (every insert's duplicate check, every new group) skips the skiplist search.
    if point_reads {
        cf.set_memtable_prefix_bloom_ratio(0.05);
        cf.set_memtable_whole_key_filtering(true);
    }
    cf.set_block_based_table_factory(table);
    cf
}
