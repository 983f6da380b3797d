//! Finalizing a stage's groups at the end of a batch, or early between parts of a date change's
//! row pass: each group's next revisit filed, its changed rows handed on, and the group written
//! (encoded into the view's writes) and kept hot.

use std::ops::Range;

use crate::change::TargetChange;
use crate::plan::expr::Inputs;
use crate::state::keys::{self, CF_GROUPS, CF_TIME};
use crate::state::store::Store;
use crate::value::identical;

use super::super::groups::GroupState;
use super::super::journal;
use super::super::MaintainError;
use super::ViewFold;

/// Groups read, finalized and written at a time when a stage is finalized. A date change
/// finalizes every group filed for the day passed (172k at 5M + 5M rows, 112k of them
/// `mv_workspace_metrics`' inner groups): read all at once and written at the end, their
/// decoded states took `run` from 230 to 728 MB RSS. A part at a time, each part is written
/// (encoded) before the next is read, and the peak was 575-585 MB (2026-12-07, steps file in
/// `bench/results/`). The groups the date change's rows touch are bounded by [`EARLY_GROUPS`].
const FINALIZE_CHUNK: usize = if cfg!(test) { 3 } else { 4096 };

/// Touched first-stage groups of a view that a date change's row pass finalizes early
/// ([`ViewFold::finalize_early`]).
const EARLY_GROUPS: usize = if cfg!(test) { 2 } else { 16_384 };

/// The most slots of a view's map of touched groups kept from one batch to the next: a catch-up
/// batch touches up to about 20k groups of a view; a clock set back touches them all.
const KEPT_GROUP_SLOTS: usize = 1 << 16;

/// What finalizing a group of stage `s` needs to know about the stage and the batch.
pub(super) struct Finalizing {
    pub s: usize,
    pub last: bool,
    pub timed: bool,
    pub keyed: bool,
    pub moved: bool,
    pub deletable: bool,
    /// The stage's own and the next stage's input components ([`ViewFold::next_revisit`]).
    pub own: Range<usize>,
    pub next: Range<usize>,
    /// The date the groups were last finalized at (but see [`ViewFold::finalize_early`]).
    pub was: i32,
    /// The length of the stage's group-key prefix.
    pub prefix: usize,
}

impl ViewFold {
    /// Finalizes stage `s`'s touched groups (its pending inputs folded first),
    /// [`FINALIZE_CHUNK`] at a time, each written as soon as it is finalized; returns their
    /// keys.
    pub(super) fn finalize_stage(
        &mut self,
        store: &Store,
        s: usize,
        was: i32,
        out: &mut Vec<TargetChange>,
    ) -> Result<Vec<Vec<u8>>, MaintainError> {
        self.fold_inputs(store, s)?;
        let gks: Vec<Vec<u8>> = std::mem::take(&mut self.touched[s]).into_iter().collect();
        if gks.is_empty() {
            return Ok(gks);
        }
        let stages = self.plan.stages.len();
        let (own, next) = self.group_components[s].clone();
        let stage = Finalizing {
            s,
            last: s + 1 == stages,
            timed: self.timed(s),
            keyed: s == 0 && self.has_keyed_windows(),
            // After a date change, an unchanged row may still contribute differently.
            moved: was != self.date && !next.is_empty(),
            deletable: !self.plan.stages[s].keys.is_empty(),
            own,
            next,
            was,
            prefix: keys::group_prefix(self.id, s as u8).len(),
        };
        self.stats.groups += gks.len() as u64;
        for part in gks.chunks(FINALIZE_CHUNK) {
            // Inputs loaded their groups; what is not in memory yet is due at a date change.
            self.load(store, s, part, stage.deletable)?;
            for gk in part {
                self.finalize_group(store, &stage, gk, out)?;
            }
        }
        Ok(gks)
    }

    /// Between two parts of a date change's row pass: when the first stage holds
    /// [`EARLY_GROUPS`] touched groups or more and is not the last, finalizes them now, at the
    /// new date, and hands their rows on to the next stage; a group touched again later in the
    /// date change is finalized again (from the date it was finalized at now: [`Self::early`]).
    /// A day leaving a 30-day window touches one inner group per row of that day (112k of
    /// `mv_workspace_metrics`' at 5M + 5M), and held decoded until the end of the date change
    /// they were most of `run`'s peak memory. The last stage's groups are not finalized early:
    /// the target would get two changes of one row in one batch. Nor are keyed windows'
    /// groups, whose rows are revisited only when the clock goes back.
    pub fn finalize_early(&mut self, store: &Store) -> Result<(), MaintainError> {
        if self.plan.stages.len() < 2
            || self.has_keyed_windows()
            || self.touched[0].len() + self.inputs[0].len() < EARLY_GROUPS
        {
            return Ok(());
        }
        let mut out = Vec::new();
        let finalized = self.finalize_stage(store, 0, self.finalized, &mut out)?;
        debug_assert!(out.is_empty(), "an inner stage hands its rows on");
        // An untimed stage's rows, and what they contribute to the next stage, are the same at
        // either date (the seed views' inner stages): nothing to remember, and at 5M + 5M the
        // keys of 150k groups less held through the date change.
        if self.timed(0) {
            self.early.extend(finalized);
        }
        Ok(())
    }

    /// Finalizes group `gk` of a stage: re-files it in the time index if its next revisit
    /// moved, hands its changed rows on (to `out` from the last stage, else to the next
    /// stage), and writes it: nothing later in the batch touches a group of this stage.
    pub(super) fn finalize_group(
        &mut self,
        store: &Store,
        stage: &Finalizing,
        gk: &[u8],
        out: &mut Vec<TargetChange>,
    ) -> Result<(), MaintainError> {
        let (s, date) = (stage.s, self.date);
        // Finalized early in this date change, the group is at the new date already.
        let early = self.early.contains(gk);
        let was = if early { date } else { stage.was };
        let mut g = match self.groups.touched.remove(gk).map(|(g, _)| g) {
            Some(g) => g,
            None if !stage.deletable => GroupState::empty(
                vec![],
                self.accumulators[s].fresh(&self.plan.stages[s].aggs),
            ),
            None => return Ok(()),
        };
        if stage.keyed {
            self.expire(&mut g, was)?;
        }
        // A bulk load's last stage hands nothing on: its rows are computed only when its
        // HAVING or select list decides the group's next revisit.
        let unwanted = stage.last && self.bulk && (!stage.timed || stage.own.is_empty());
        let (new, aggs) = if unwanted {
            (vec![], vec![])
        } else {
            self.output(s, &g).map_err(|e| self.err(e))?
        };
        if stage.timed {
            let revisit = if stage.deletable && g.rows <= 0 {
                None // gone: dropped from the store with this batch
            } else {
                let keys_and_aggs = Inputs {
                    row: &[],
                    keys: &g.key,
                    aggs: &aggs,
                };
                let mut at = self.next_revisit(stage.own.clone(), keys_and_aggs, date)?;
                for row in &new {
                    at = at.min(self.next_revisit(stage.next.clone(), Inputs::row(row), date)?);
                }
                if stage.keyed {
                    at = at.min(self.keyed_revisit(&g.key, date)?);
                }
                Some(at)
            };
            if revisit != g.revisit {
                let kb = &gk[stage.prefix..];
                let time_key = |d| keys::group_time_key(self.id, d, s as u8, kb);
                if let Some(d) = g.revisit {
                    self.writes.push((CF_TIME, time_key(d), None));
                }
                if let Some(d) = revisit {
                    self.writes
                        .push((CF_TIME, time_key(d), Some(keys::encode(&()))));
                }
                g.revisit = revisit;
            }
        }
        let changed =
            g.output.len() != new.len() || g.output.iter().zip(&new).any(|(a, b)| !identical(a, b));
        // Unchanged rows stay as they are (bit for bit the same); changed ones are handed on,
        // and kept as the rows last written.
        if stage.last {
            if changed && !unwanted {
                let old = std::mem::replace(&mut g.output, new.clone());
                let rank = self.plan.rank_column();
                out.push(TargetChange::of_group(g.key.clone(), &old, new, rank));
            }
        } else if changed || (stage.moved && !early) {
            for row in &g.output {
                self.contribute(store, s + 1, row, -1, was)?;
            }
            for row in &new {
                self.contribute(store, s + 1, row, 1, date)?;
            }
            g.output = new;
        }
        self.flush_group(gk.to_vec(), g, stage.deletable);
        Ok(())
    }

    /// Moves every group still in the batch into the writes ([`Self::flush_group`]).
    pub(super) fn flush_groups(&mut self) {
        // The map keeps its capacity for the next batch (up to a batch's worth): dropped, it
        // grew again from empty, rehashing into freshly faulted pages, every batch.
        let mut touched = std::mem::take(&mut self.groups.touched);
        for (gk, (g, deletable)) in touched.drain() {
            self.flush_group(gk, g, deletable);
        }
        if touched.capacity() <= KEPT_GROUP_SLOTS {
            self.groups.touched = touched;
        }
    }

    /// Moves a finalized group into the writes, dropping it if empty (except the single group
    /// of a stage without GROUP BY), and keeps it decoded as a hot group.
    fn flush_group(&mut self, gk: Vec<u8>, mut g: GroupState, deletable: bool) {
        if deletable && g.rows <= 0 {
            journal::drop_entries(&gk, &g.journal, &mut self.writes);
            self.writes.push((CF_GROUPS, gk, None));
        } else {
            let written = journal::store(&gk, &mut g, self.groups.journal, &mut self.writes);
            self.stats.group_bytes += written as u64;
            let weight = g.journal.base().max(written);
            self.groups.hot.put(gk, g, weight);
        }
    }
}
