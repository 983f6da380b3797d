//! Monitoring: counters the engine updates as it works, and the HTTP endpoints that expose them
//! with each view's freshness (`/metrics` for Prometheus, `/healthz` and `/readyz` for load
//! balancers and orchestrators).

pub mod http;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use hdrhistogram::Histogram;

/// Engine counters, shared with the HTTP server.
pub struct Metrics {
    pub batches: AtomicU64,
    pub changes: AtomicU64,
    /// Engine restarts after a lost connection or server.
    pub errors_connection: AtomicU64,
    /// Views that failed (constraint or SQL error on their data).
    pub errors_view: AtomicU64,
    /// Reconciles run (requested or scheduled).
    pub reconciles: AtomicU64,
    /// Rows a reconcile found differing from the view's SQL (each one a bug to report).
    pub reconcile_differences: AtomicU64,
    /// The longest pause of the apply loop a reconcile caused, in microseconds.
    pub reconcile_pause_max_us: AtomicU64,
    pub state_bytes: AtomicU64,
    pub compaction_pending_bytes: AtomicU64,
    pub compactions_running: AtomicU64,
    /// Source commit to visible in the targets, in microseconds.
    pub apply_latency_us: Mutex<Histogram<u64>>,
    /// Source row changes per batch.
    pub batch_rows: Mutex<Histogram<u64>>,
    /// Per-batch work (see [`crate::maintain::FoldStats`]), summed: distinct groups finalized,
    /// group lookups answered in memory and from the store, row-image lookups, group bytes
    /// written, target rows written, and microseconds spent folding and writing the targets.
    pub groups_touched: AtomicU64,
    pub group_hits: AtomicU64,
    pub group_reads: AtomicU64,
    pub row_reads: AtomicU64,
    pub group_bytes: AtomicU64,
    pub target_rows: AtomicU64,
    pub fold_us: AtomicU64,
    pub write_us: AtomicU64,
    /// Of `fold_us`, the row-level pass (on one thread; the views fold on `--fold-threads`).
    pub row_pass_us: AtomicU64,
}

impl Default for Metrics {
    fn default() -> Self {
        // Constant, valid bounds: 1 µs to 1 hour at 3 significant digits.
        let hist = || {
            Histogram::new_with_bounds(1, 3_600_000_000, 3)
                .expect("valid constant histogram bounds")
        };
        Metrics {
            batches: AtomicU64::new(0),
            changes: AtomicU64::new(0),
            errors_connection: AtomicU64::new(0),
            errors_view: AtomicU64::new(0),
            reconciles: AtomicU64::new(0),
            reconcile_differences: AtomicU64::new(0),
            reconcile_pause_max_us: AtomicU64::new(0),
            state_bytes: AtomicU64::new(0),
            compaction_pending_bytes: AtomicU64::new(0),
            compactions_running: AtomicU64::new(0),
            apply_latency_us: Mutex::new(hist()),
            batch_rows: Mutex::new(hist()),
            groups_touched: AtomicU64::new(0),
            group_hits: AtomicU64::new(0),
            group_reads: AtomicU64::new(0),
            row_reads: AtomicU64::new(0),
            group_bytes: AtomicU64::new(0),
            target_rows: AtomicU64::new(0),
            fold_us: AtomicU64::new(0),
            write_us: AtomicU64::new(0),
            row_pass_us: AtomicU64::new(0),
        }
    }
}

/// How Prometheus should read a sample.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
        }
    }
}

/// One engine-wide sample: the table [`Metrics::scalars`] is the one place a counter or gauge
/// is named and described; `/metrics` prints it.
pub struct Scalar<'a> {
    pub name: &'static str,
    pub help: &'static str,
    pub kind: Kind,
    /// A `(label, value)` pair for metrics split by kind (same name, several samples).
    pub label: Option<(&'static str, &'static str)>,
    pub value: &'a AtomicU64,
}

impl Metrics {
    /// Every counter and gauge, in exposition order (samples of one name adjacent).
    pub fn scalars(&self) -> [Scalar<'_>; 19] {
        let s = |name, help, kind, label, value| Scalar {
            name,
            help,
            kind,
            label,
            value,
        };
        const LOOKUPS: &str =
            "Groups looked up once per batch and stage, by where they were: memory (kept decoded from a recent batch) or store (read in one batched lookup, and decoded).";
        const STAGES: &str = "Microseconds spent per stage of the applied batches.";
        const ERRORS: &str =
            "Errors by kind: connection (the engine reconnected), view (a view failed).";
        [
            s(
                "deltamv_batches_total",
                "Batches applied.",
                Kind::Counter,
                None,
                &self.batches,
            ),
            s(
                "deltamv_changes_applied_total",
                "Source row changes applied.",
                Kind::Counter,
                None,
                &self.changes,
            ),
            s(
                "deltamv_reconciles_total",
                "Reconciles run (requested or scheduled).",
                Kind::Counter,
                None,
                &self.reconciles,
            ),
            s(
                "deltamv_reconcile_differences_total",
                "Rows reconciles found differing from the views' SQL (each is a bug to report).",
                Kind::Counter,
                None,
                &self.reconcile_differences,
            ),
            s(
                "deltamv_reconcile_pause_max_microseconds",
                "The longest pause of applying a reconcile caused since start: the wait for its slot and the export of the targets' snapshot at its LSN (held reconciles of differing views pause for their whole comparison).",
                Kind::Gauge,
                None,
                &self.reconcile_pause_max_us,
            ),
            s(
                "deltamv_errors_total",
                ERRORS,
                Kind::Counter,
                Some(("kind", "connection")),
                &self.errors_connection,
            ),
            s(
                "deltamv_errors_total",
                ERRORS,
                Kind::Counter,
                Some(("kind", "view")),
                &self.errors_view,
            ),
            s(
                "deltamv_state_size_bytes",
                "RocksDB state size.",
                Kind::Gauge,
                None,
                &self.state_bytes,
            ),
            s(
                "deltamv_rocksdb_compaction_pending_bytes",
                "RocksDB bytes waiting for compaction.",
                Kind::Gauge,
                None,
                &self.compaction_pending_bytes,
            ),
            s(
                "deltamv_rocksdb_compactions_running",
                "RocksDB compactions running.",
                Kind::Gauge,
                None,
                &self.compactions_running,
            ),
            s(
                "deltamv_groups_touched_total",
                "Distinct groups finalized by the applied batches (all stages).",
                Kind::Counter,
                None,
                &self.groups_touched,
            ),
            s(
                "deltamv_group_lookups_total",
                LOOKUPS,
                Kind::Counter,
                Some(("source", "memory")),
                &self.group_hits,
            ),
            s(
                "deltamv_group_lookups_total",
                LOOKUPS,
                Kind::Counter,
                Some(("source", "store")),
                &self.group_reads,
            ),
            s(
                "deltamv_row_image_lookups_total",
                "Stored row images looked up (each insert, update and delete).",
                Kind::Counter,
                None,
                &self.row_reads,
            ),
            s(
                "deltamv_group_bytes_written_total",
                "Bytes of group state written: whole group records, and journal entries of large groups.",
                Kind::Counter,
                None,
                &self.group_bytes,
            ),
            s(
                "deltamv_target_rows_written_total",
                "Target rows written (rows of changed groups).",
                Kind::Counter,
                None,
                &self.target_rows,
            ),
            s(
                "deltamv_stage_microseconds_total",
                STAGES,
                Kind::Counter,
                Some(("stage", "fold")),
                &self.fold_us,
            ),
            s(
                "deltamv_stage_microseconds_total",
                STAGES,
                Kind::Counter,
                Some(("stage", "write")),
                &self.write_us,
            ),
            s(
                "deltamv_fold_row_pass_microseconds_total",
                "Of the fold stage, microseconds in the row-level pass (stored images, the rows' time index), which runs on one thread; the views then fold on --fold-threads.",
                Kind::Counter,
                None,
                &self.row_pass_us,
            ),
        ]
    }

    /// Records a folded batch's work (see [`crate::maintain::FoldStats`]).
    pub fn fold(&self, stats: &crate::maintain::FoldStats, took: std::time::Duration) {
        self.groups_touched
            .fetch_add(stats.groups, Ordering::Relaxed);
        self.group_hits
            .fetch_add(stats.group_hits, Ordering::Relaxed);
        self.group_reads
            .fetch_add(stats.group_reads, Ordering::Relaxed);
        self.row_reads.fetch_add(stats.row_reads, Ordering::Relaxed);
        self.group_bytes
            .fetch_add(stats.group_bytes, Ordering::Relaxed);
        self.fold_us
            .fetch_add(took.as_micros() as u64, Ordering::Relaxed);
        self.row_pass_us
            .fetch_add(stats.row_pass_micros, Ordering::Relaxed);
    }

    /// Records a target write: rows written and its time.
    pub fn write(&self, rows: u64, took: std::time::Duration) {
        self.target_rows.fetch_add(rows, Ordering::Relaxed);
        self.write_us
            .fetch_add(took.as_micros() as u64, Ordering::Relaxed);
    }

    /// Records an applied batch: its row changes and each transaction's commit-to-visible time.
    pub fn batch(&self, rows: u64, latencies_us: &[u64]) {
        self.batches.fetch_add(1, Ordering::Relaxed);
        self.changes.fetch_add(rows, Ordering::Relaxed);
        if let Ok(mut h) = self.batch_rows.lock() {
            let _ = h.record(rows.max(1));
        }
        if let Ok(mut h) = self.apply_latency_us.lock() {
            for l in latencies_us {
                let _ = h.record((*l).max(1));
            }
        }
    }
}
