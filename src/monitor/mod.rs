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
    pub state_bytes: AtomicU64,
    pub compaction_pending_bytes: AtomicU64,
    pub compactions_running: AtomicU64,
    /// Source commit to visible in the targets, in microseconds.
    pub apply_latency_us: Mutex<Histogram<u64>>,
    /// Source row changes per batch.
    pub batch_rows: Mutex<Histogram<u64>>,
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
            state_bytes: AtomicU64::new(0),
            compaction_pending_bytes: AtomicU64::new(0),
            compactions_running: AtomicU64::new(0),
            apply_latency_us: Mutex::new(hist()),
            batch_rows: Mutex::new(hist()),
        }
    }
}

impl Metrics {
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
