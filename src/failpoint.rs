//! Crash injection for tests: `DELTAMV_FAILPOINT=name[:n]` aborts the process (like kill -9: no
//! cleanup, no flushing) the n-th time (default 1st) execution passes the named point.
//!
//! Points sit where a crash is most interesting for the durability argument of
//! [`crate::engine`]: `snapshot_chunk` (state partly loaded, targets not),
//! `snapshot_files_written` (a bulk writer's table files written, not ingested: the 3rd hit is
//! the last table's, merged while the targets fill), `after_state_commit`
//! (a batch's state committed in memory, its targets not yet written), `before_target_commit`
//! (in the sink's task: the next batch may be folding), `after_target_commit` (targets ahead of
//! the state on disk), `before_checkpoint_flush` (held state written to RocksDB, not flushed),
//! `after_deferred_checkpoint` (a checkpoint taken at a state commit is on disk, the next
//! batch's writes were pending beside it),
//! `reconcile_exported` (a live reconcile's task holds the targets' snapshot the engine exported
//! at its LSN), `reconcile_comparing` (its comparison runs while the engine applies on),
//! `reconcile_held` (a held reconcile: the engine holds at the snapshot's LSN),
//! `after_date_part` (a date change's first part is in RocksDB, flushed, marked partial).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

static SPEC: OnceLock<Option<(String, u64)>> = OnceLock::new();
static HITS: AtomicU64 = AtomicU64::new(0);

fn spec() -> &'static Option<(String, u64)> {
    SPEC.get_or_init(|| {
        let raw = std::env::var("DELTAMV_FAILPOINT").ok()?;
        let (name, n) = match raw.split_once(':') {
            Some((name, n)) => (name.to_string(), n.parse().unwrap_or(1)),
            None => (raw, 1),
        };
        Some((name, n))
    })
}

/// Whether `name` is the configured failpoint (for a point that must first put the state in
/// the shape the crash it stands for would find).
pub fn armed(name: &str) -> bool {
    matches!(spec(), Some((target, _)) if target == name)
}

/// Aborts the process if `name` is the configured failpoint and its count is reached.
pub fn hit(name: &str) {
    if let Some((target, n)) = spec() {
        if target == name && HITS.fetch_add(1, Ordering::SeqCst) + 1 >= *n {
            eprintln!("failpoint {name} reached: aborting");
            std::process::abort();
        }
    }
}
