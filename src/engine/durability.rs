//! Durability: what is on disk where, in which order, and why a crash at any point loses
//! nothing and counts nothing twice. [`Progress`] holds the positions and asserts the ordering;
//! the checkpoint below is the only place the slot is acknowledged.
//!
//! Positions: T = the LSN recorded in `deltamv.progress` in the same transaction as the target
//! rows, S = the LSN recorded in RocksDB with the state, D = the S of the last checkpoint (the
//! state RocksDB has on disk), A = what the slot was told (confirmed_flush_lsn). Each batch of
//! committed source transactions is folded into state in memory, then (1) the state and S are
//! committed in memory, unlogged ([`Durability::Held`]: held by the store, see
//! [`crate::state::store`]), and (2) the targets and T are committed in one transaction, by the
//! sink's task while the next batch folds ([`super::pipeline`]). At most one target write is in
//! flight, and it settles before the next batch's state commit, so the state in memory is at
//! most one batch ahead of T, and the held layer reaches RocksDB only when nothing is in flight:
//! every `checkpoint_ms`, at the first state commit after it (right after the write before it
//! settled, the committing batch's writes still in the store's overlay; at once, waiting for
//! the write, at a clean stop or when a backlog is drained), (3) everything held goes into
//! RocksDB's memtables in one atomic batch ending with S, then the memtables are
//! flushed, all column families atomically, on a blocking thread while later batches go on in
//! memory; its end makes D that S, and (4) only then is the slot acknowledged up to D (never past
//! T). A held layer over its budget is written the same way, at a state commit, once the write
//! before it has settled ([`Progress::may_persist`] asserts S <= T at both places), and so is a
//! date change's, part by part, marked partial until its commit ([`super::midnight`]). A kill
//! between the batch of (3) and the end of its flush loses all of it, as a kill before (3) does:
//! RocksDB keeps no log.
//! So A <= D <= S <= T on disk always, and kill -9 at any point leaves a state on disk as of some batch's S' with
//! A <= S' <= T (RocksDB may also flush on its own when a memtable fills; what it persists is
//! still some whole batch, all column families alike):
//! - the slot replays everything after A; transactions with end LSN <= S' are skipped (already
//!   in state), those in (S', T] only rebuild state (the targets already hold their effect;
//!   writing older values again would move readers back in time), and writing resumes after T.
//! - a crash before (2) commits loses only the batches in memory, which the slot still holds.
//!
//! Dates: a midnight moves the views' CURRENT_DATE without a new LSN, so the date is part of
//! both positions: the state records its views' dates with S, the targets theirs with T
//! (`targets_date` in `deltamv.progress`, written with every target transaction, the
//! midnight's included). The targets take a new date first, and the state's move stays in
//! memory until the next checkpoint, so after a crash or reconnect the state can be on an
//! earlier date than the targets at the same LSN. Replaying (S', T] at the state's date and
//! then moving the state to the targets' date without writing them (`align_to_targets`, before
//! anything past T is folded) gives the state the targets show, whatever order the crashed
//! engine did the two in (a view's state is a function of its inputs and its date); only then
//! does the date move on to today, writing what that changes. Moving straight from the state's
//! date to today would miss the groups whose rows are the same at those two dates and different
//! at the targets'.
//!
//! Why unlogged: a synced write of every touched group per batch cost as much as writing the
//! targets (`bench/results/profile-2026-11-24.md`), and the slot already keeps every change
//! after A, so RocksDB's own log only duplicated it. The price is a replay of at most a
//! checkpoint interval of changes after a crash, and WAL retained on the server for as long.
//!
//! Requests: a request message is served after the batch before it. From its arrival until no
//! request is pending (one may wait while a reconcile runs beside the stream,
//! [`super::live_reconcile`]), A stays at or before the T it arrived at ([`Progress::cap_ack`]),
//! so a crash before its result is recorded delivers it again.
//!
//! Targets carry absolute values per group, so even a repeated write would be harmless.
//! When the stream is idle and nothing is pending, the slot is acknowledged up to the server's
//! WAL position from its keepalive (after the next checkpoint if state has unflushed writes), so
//! WAL does not pile up while nothing relevant is written. That is the one acknowledgement past
//! S: it is recorded in the state first (`acked` in [`crate::state::meta`]), so that at start a
//! slot confirmed beyond the state's LSN is known to be this engine's own doing
//! (`setup::trust`). [`Progress::acknowledged`] asserts exactly this exception.

use std::time::{Duration, Instant};

use super::{EngineError, Loop};
use crate::maintain::{MaintainError, Maintainer};
use crate::pg::Lsn;
use crate::state::meta;
use crate::state::store::{Durability, StoreError};
use crate::state::StateThreadGone;

/// The positions of the crash argument above, each moving only forward, with the ordering the
/// argument relies on asserted (in debug builds, which the tests run) at every step.
#[derive(Debug)]
pub(super) struct Progress {
    /// S: the state's position (in RocksDB, durable at the next checkpoint).
    state: Lsn,
    /// T: the targets' position (`deltamv.progress`).
    targets: Lsn,
    /// How far the slot may go once the state written so far is on disk: at most min(S, T)
    /// while there is work, up to the server's WAL end when idle.
    ack_ready: Lsn,
    /// A: what the slot was told.
    acked: Lsn,
    /// The acknowledgement recorded in the state before an idle slot went past S.
    recorded: Lsn,
    /// While a request is served beside the stream: the slot stays before its message, so
    /// that a crash delivers it again.
    cap: Option<Lsn>,
}

impl Progress {
    /// At start: `setup::init` refuses a state ahead of its targets.
    pub fn new(state: Lsn, targets: Lsn, recorded: Lsn) -> Progress {
        debug_assert!(
            state <= targets,
            "state {state} is ahead of the targets {targets}"
        );
        Progress {
            state,
            targets,
            ack_ready: state.min(targets),
            acked: Lsn::ZERO,
            recorded,
            cap: None,
        }
    }

    pub fn state(&self) -> Lsn {
        self.state
    }

    pub fn targets(&self) -> Lsn {
        self.targets
    }

    pub fn acked(&self) -> Lsn {
        self.acked
    }

    pub fn ack_ready(&self) -> Lsn {
        self.cap.map_or(self.ack_ready, |c| self.ack_ready.min(c))
    }

    /// Keeps the slot at or before `lsn` (and any earlier cap) until [`Self::cap_ack_off`].
    pub fn cap_ack(&mut self, lsn: Lsn) {
        self.cap = Some(self.cap.map_or(lsn, |c| c.min(lsn)));
    }

    pub fn cap_ack_off(&mut self) {
        self.cap = None;
    }

    /// The state is still being rebuilt up to what the targets show (after a crash): nothing
    /// may be written to the targets until it has caught up.
    pub fn replaying(&self) -> bool {
        self.state < self.targets
    }

    /// The targets committed a batch ending at `lsn`.
    pub fn targets_committed(&mut self, lsn: Lsn) {
        self.targets = self.targets.max(lsn);
        self.ack_ready = self.ack_ready.max(self.state.min(self.targets));
    }

    /// The state took a batch ending at `lsn`, in memory: at most one batch ahead of the
    /// targets, whose write is then in flight.
    pub fn state_committed(&mut self, lsn: Lsn) {
        self.state = self.state.max(lsn);
        self.ack_ready = self.ack_ready.max(self.state.min(self.targets));
    }

    /// The state held in memory is about to go to RocksDB: never ahead of the targets.
    pub fn may_persist(&self) {
        debug_assert!(
            self.state <= self.targets,
            "state at {} would reach disk past the targets at {}",
            self.state,
            self.targets
        );
    }

    /// The server has sent everything up to `wal_end` and all of it is applied: the slot may
    /// go there (once recorded). False while replaying.
    pub fn caught_up(&mut self, wal_end: Lsn) -> bool {
        if self.replaying() {
            return false;
        }
        self.ack_ready = self.ack_ready.max(wal_end);
        true
    }

    /// An acknowledgement past S was recorded in the state (with what precedes it).
    pub fn ack_recorded(&mut self, ack: Lsn) {
        self.recorded = self.recorded.max(ack);
    }

    /// The slot is told `ack`; returns the position it now holds.
    pub fn acknowledged(&mut self, ack: Lsn) -> Lsn {
        debug_assert!(
            ack <= self.ack_ready(),
            "acknowledging {ack} before it was ready"
        );
        debug_assert!(
            ack <= self.state || ack <= self.recorded,
            "acknowledging {ack} past the state at {} without recording it",
            self.state
        );
        self.acked = self.acked.max(ack);
        self.acked
    }
}

impl Loop<'_> {
    /// Commits the folded state with its LSN into the held layer (memory); durable at the
    /// next checkpoint. The write in flight settles first, so the held layer, which goes to
    /// RocksDB here when it outgrew its budget, is never ahead of the targets; this batch's
    /// own target write starts after it.
    pub(super) async fn commit_state(&mut self, lsn: Lsn) -> Result<(), EngineError> {
        self.commit_held(move |m| m.commit(lsn, &[meta::partial(false)], Durability::Held))
            .await?;
        self.progress.state_committed(lsn);
        crate::failpoint::hit("after_state_commit");
        Ok(())
    }

    /// Runs `commit` (a [`Durability::Held`] commit) on the state thread once the write in
    /// flight has settled, first writing the held layer to RocksDB if it outgrew its budget:
    /// then it is not ahead of the targets.
    pub(super) async fn commit_held(
        &mut self,
        commit: impl FnOnce(&mut Maintainer) -> Result<(), StoreError> + Send + 'static,
    ) -> Result<(), EngineError> {
        self.settle().await?;
        self.progress.may_persist();
        // Nothing in flight, and the held layer is the state as of the targets: a checkpoint
        // that came due meanwhile is taken now, before this commit (its writes wait in the
        // store's overlay, which a checkpoint leaves alone).
        if self.checkpoint_due && self.parts.is_none() && !self.flush_running() {
            self.finish_checkpoint().await?;
            self.write_checkpoint(false, false).await?;
            self.flushing_deferred = true;
        }
        self.state
            .call(move |m| {
                m.store().spill_if_over()?;
                commit(m)
            })
            .await?
            .map_err(MaintainError::from)?;
        self.dirty = true;
        Ok(())
    }

    /// Writes the held layer into RocksDB's memtables, only when the targets are not behind
    /// the state: at a checkpoint, before its flush, and right after a date change, whose parts
    /// are there under the partial mark that its commit clears (see [`super::midnight`]).
    pub(super) async fn persist_held(&mut self) -> Result<(), EngineError> {
        self.progress.may_persist();
        let persisted = self.state.call(|m| m.store().persist());
        super::batch::reading_ahead(&mut self.stream, self.cfg.batch_max_rows, persisted)
            .await?
            .map_err(MaintainError::from)?;
        Ok(())
    }

    /// A checkpoint's flush is running and not finished.
    fn flush_running(&self) -> bool {
        self.flushing
            .as_ref()
            .is_some_and(|(_, f)| !f.is_finished())
    }

    /// Makes the state durable every `checkpoint_ms` (or now, waiting for it, when `now` or when
    /// a backlog was just drained), then lets the slot go as far as that state covers. The
    /// flush runs on a blocking thread while batches go on (writes after it began stay held in
    /// memory), so a checkpoint does not stall the stream; its acknowledgement waits for it to
    /// finish.
    pub(super) async fn checkpoint(&mut self, now: bool) -> Result<(), EngineError> {
        if self.parts.is_some() {
            return Ok(()); // no partial transaction on disk (see `apply_part`)
        }
        // A drained backlog is made durable and acknowledged at once, without waiting for
        // `checkpoint_ms`: the server keeps its WAL until then.
        let now = now || (self.drained && self.caught_up_at.is_some());
        if let Some((_, flush)) = &self.flushing {
            if !now && !flush.is_finished() {
                return Ok(());
            }
            self.finish_checkpoint().await?;
        }
        if !self.dirty && self.progress.ack_ready() > self.progress.acked() {
            // Idle with everything on disk: no flush needed. Past the state's LSN the position
            // is recorded first, so that at start a slot confirmed beyond the state's LSN is
            // known to be ours (see `setup::init`); with no unflushed writes, a logged write
            // cannot come back from RocksDB's log without what preceded it.
            let ack = self.progress.ack_ready();
            if ack > self.progress.state() {
                self.record_acked(ack, Durability::Synced).await?;
            }
            self.stream.ack(self.progress.acknowledged(ack));
            return Ok(());
        }
        let due =
            now || self.last_checkpoint.elapsed() >= Duration::from_millis(self.cfg.checkpoint_ms);
        if !due || !self.dirty {
            return Ok(());
        }
        if !now && self.sink.writing() {
            // Taken at the next state commit, when this write has settled ([`Self::commit_held`]).
            // Waited for here, the write stalled the fold at every checkpoint: a third of a
            // catch-up's wall time went by with nothing folded (2026-12-07, bench/results).
            self.checkpoint_due = true;
            return Ok(());
        }
        // The last batch's targets first: what goes to disk is never ahead of them.
        self.settle().await?;
        self.progress.may_persist();
        self.write_checkpoint(now, true).await
    }

    /// Writes everything held into RocksDB and starts its flush (waited for when `now`), once
    /// the targets are at the state's position. The slot may go past the state's LSN (when
    /// idle) only if the position can be recorded first (`overlay_free`: this batch's pending
    /// writes are not in the store's overlay, where the record would commit them too);
    /// otherwise it goes as far as the state.
    async fn write_checkpoint(&mut self, now: bool, overlay_free: bool) -> Result<(), EngineError> {
        self.checkpoint_due = false;
        let mut ack = self.progress.ack_ready();
        if ack > self.progress.state() {
            if overlay_free {
                self.record_acked(ack, Durability::Held).await?;
            } else {
                ack = self.progress.state();
            }
        }
        self.dirty = false;
        self.behind = false;
        self.drained = false;
        self.last_checkpoint = Instant::now();
        // The held layer goes into RocksDB's memtables as one batch, which the flush makes durable.
        self.persist_held().await?;
        crate::failpoint::hit("before_checkpoint_flush");
        let flusher = self.flusher.clone();
        let started = Instant::now();
        let flush = tokio::task::spawn_blocking(move || {
            flusher.flush()?;
            Ok(started.elapsed())
        });
        self.flushing = Some((ack, flush));
        if now {
            self.finish_checkpoint().await?;
        }
        Ok(())
    }

    /// Records in the state how far the slot is about to be acknowledged.
    async fn record_acked(&mut self, ack: Lsn, durability: Durability) -> Result<(), EngineError> {
        self.state
            .call(move |m| m.store().commit(&[meta::acked(ack)], durability))
            .await?
            .map_err(MaintainError::from)?;
        self.progress.ack_recorded(ack);
        Ok(())
    }

    /// Waits for the flush in flight and acknowledges what it made durable.
    pub(super) async fn finish_checkpoint(&mut self) -> Result<(), EngineError> {
        let Some((ack, flush)) = self.flushing.take() else {
            return Ok(());
        };
        let took = flush
            .await
            .map_err(|_| StateThreadGone)?
            .map_err(MaintainError::from)?;
        tracing::debug!(ack = %ack, flush_ms = took.as_millis() as u64, "state checkpoint");
        crate::failpoint::hit("after_checkpoint");
        if std::mem::take(&mut self.flushing_deferred) {
            crate::failpoint::hit("after_deferred_checkpoint");
        }
        // A request that arrived meanwhile may have capped the slot below what the flush covers.
        let ack = ack.min(self.progress.ack_ready());
        self.stream.ack(self.progress.acknowledged(ack));
        self.record_state_size().await
    }

    /// Everything received is applied and the server has sent everything up to `wal_end`: let
    /// the slot go there, and note that the targets are fresh as of the keepalive's send time.
    pub(super) fn idle(&mut self, wal_end: Lsn, server_time_micros: i64) {
        if self.progress.caught_up(wal_end) {
            self.caught_up_at = Some(server_time_micros);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_only_move_forward_in_the_argued_order() {
        let mut p = Progress::new(Lsn(10), Lsn(20), Lsn::ZERO);
        assert!(p.replaying());
        assert!(
            !p.caught_up(Lsn(99)),
            "no idle acknowledgement while replaying"
        );
        assert_eq!(p.ack_ready(), Lsn(10));
        p.state_committed(Lsn(20));
        assert!(!p.replaying());
        p.targets_committed(Lsn(30));
        p.targets_committed(Lsn(25)); // an older position never moves T back
        assert_eq!(p.targets(), Lsn(30));
        p.state_committed(Lsn(30));
        assert_eq!(p.ack_ready(), Lsn(30));
        assert_eq!(p.acknowledged(Lsn(30)), Lsn(30));
        assert_eq!(p.acknowledged(Lsn(20)), Lsn(30), "A never moves back");
        assert!(p.caught_up(Lsn(40)));
        p.ack_recorded(Lsn(40));
        assert_eq!(p.acknowledged(Lsn(40)), Lsn(40));
    }

    #[test]
    fn a_pending_request_keeps_the_slot_before_its_message() {
        let mut p = Progress::new(Lsn(10), Lsn(10), Lsn::ZERO);
        p.state_committed(Lsn(20));
        p.targets_committed(Lsn(20));
        p.cap_ack(Lsn(15)); // a request arrived at T = 15
        p.cap_ack(Lsn(18)); // a later one queued behind it
        assert_eq!(p.ack_ready(), Lsn(15));
        assert!(p.caught_up(Lsn(30)));
        assert_eq!(p.ack_ready(), Lsn(15), "not even when idle");
        p.cap_ack_off(); // both served
        assert_eq!(p.ack_ready(), Lsn(30));
    }

    #[test]
    #[should_panic(expected = "past the targets")]
    fn state_ahead_of_the_targets_is_caught_before_it_reaches_disk() {
        let mut p = Progress::new(Lsn(10), Lsn(10), Lsn::ZERO);
        p.state_committed(Lsn(11)); // in memory, its write in flight: allowed
        assert_eq!(p.ack_ready(), Lsn(10), "not acknowledged past the targets");
        p.may_persist();
    }

    #[test]
    #[should_panic(expected = "without recording it")]
    fn an_idle_acknowledgement_must_be_recorded_first() {
        let mut p = Progress::new(Lsn(10), Lsn(10), Lsn::ZERO);
        assert!(p.caught_up(Lsn(50)));
        p.acknowledged(Lsn(50));
    }
}
