//! Midnights: when the server-zone date changes, the time index is processed as a batch of its
//! own (see [`crate::maintain`]) and written like any other, at the targets' position. The date
//! is part of both positions (see [`super::durability`]): each target transaction records the
//! date its rows were evaluated at, and after a restart the state first takes the targets'
//! date ([`Loop::align_to_targets`]) before the date moves on.
//!
//! A date change's row pass writes its parts into RocksDB's memtables as it goes, marked
//! partial ([`crate::maintain`]'s `midnight`); its commit clears the mark and goes there too,
//! at once, so that RocksDB flushing on its own or at a close after an error persists a whole
//! state. An interruption between the first part and that write can leave the mark on disk:
//! the next start then rebuilds the state from a fresh snapshot.

use std::time::Duration;

use super::pipeline::Visible;
use super::{EngineError, Loop};
use crate::change::TargetChange;

impl Loop<'_> {
    /// One target transaction for all views at the targets' position (a midnight's batch),
    /// waited for; a view whose target can no longer be written fails alone (see
    /// [`crate::sink::write`]).
    async fn write_targets(&mut self, deltas: Vec<Vec<TargetChange>>) -> Result<(), EngineError> {
        self.settle().await?;
        let batch = Visible {
            lsn: self.progress.targets(),
            commit_times: vec![],
            source_rows: 0,
            target_rows: super::batch::target_rows(&deltas),
            touched: self.changed_views(&deltas),
            fold: Duration::ZERO,
            date: self.date,
        };
        self.start_write(deltas, None, batch).await?;
        self.settle().await
    }

    /// Revisits time-dependent rows when the server-zone date changed.
    pub(super) async fn advance_clock(&mut self) -> Result<(), EngineError> {
        if self.progress.replaying() {
            // Still rebuilding state up to what the targets show: stay on the state's date until
            // the replay is done, or targets would briefly move back in time.
            return Ok(());
        }
        if self.parts.is_some() {
            // A large transaction is half folded: its first parts are in the state, marked
            // partial. The date moves once it has committed, or the date change would write
            // targets showing part of it, and its commit would clear the mark under the
            // transaction's parts.
            return Ok(());
        }
        self.align_to_targets().await?;
        let today = self.clock.today(&self.prepared.tz);
        if !self.state_elsewhere(today).await? {
            return Ok(());
        }
        self.settle().await?;
        let started = std::time::Instant::now();
        let deltas = self.move_state(today).await?;
        let (stats, views_ms) = self.state.call(|m| (m.stats(), m.view_costs())).await?;
        tracing::info!(
            date = %crate::pgtime::format_date(today),
            fold_ms = started.elapsed().as_millis() as u64,
            row_reads = stats.row_reads,
            group_kb = stats.group_bytes >> 10,
            row_pass_ms = stats.row_pass_micros / 1000,
            groups = stats.groups,
            group_reads = stats.group_reads,
            views_ms,
            "date changed: revisited time-dependent rows"
        );
        self.date = today;
        self.write_targets(deltas).await?;
        self.commit_state(self.progress.state()).await?;
        self.persist_held().await
    }

    /// Moves the state to the date the targets show, if it is elsewhere, without writing them;
    /// called once the state holds everything up to the targets' position (before anything
    /// past it is folded, and before a date change). A crash or reconnect can lose the state's
    /// move to a new date (held in memory until a checkpoint) after the targets committed
    /// theirs, and the next move must start from what the targets show, or groups whose rows
    /// are the same at the state's date and the next one but not at the targets' would keep
    /// the targets' rows.
    pub(super) async fn align_to_targets(&mut self) -> Result<(), EngineError> {
        let Some(date) = self.targets_date.take() else {
            return Ok(());
        };
        self.date = date;
        if self.state_elsewhere(date).await? {
            // The targets show these rows already.
            drop(self.move_state(date).await?);
            tracing::info!(date = %crate::pgtime::format_date(date), "the state moved to the date its targets show (its own move was lost)");
            self.commit_state(self.progress.state()).await?;
            self.persist_held().await?;
        }
        Ok(())
    }

    /// Whether any view's state is on a date other than `date`.
    async fn state_elsewhere(&self, date: i32) -> Result<bool, EngineError> {
        Ok(self
            .state
            .call(move |m| (0..m.view_count()).any(|v| m.date(v) != date))
            .await?)
    }

    /// Moves every view's state to `date`; returns the target rows that changes. On an error
    /// the attempt's pending writes are forgotten, but its parts are in RocksDB: the error ends
    /// the engine's round, which reopens the state from disk.
    async fn move_state(&self, date: i32) -> Result<Vec<Vec<TargetChange>>, EngineError> {
        // Its parts take the held layer to RocksDB with them.
        self.progress.may_persist();
        Ok(self
            .state
            .call(move |m| {
                let r = m.advance_dates(date);
                if r.is_err() {
                    m.discard();
                }
                r
            })
            .await??)
    }
}
