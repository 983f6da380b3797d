//! Finalizing a group at the end of a batch: its next revisit filed, its changed rows handed
//! on, and the group written (encoded into the view's writes) and kept hot.

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
        let (new, aggs) = self.output(s, &g).map_err(|e| self.err(e))?;
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
            if changed {
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
        let touched = std::mem::take(&mut self.groups.touched);
        for (gk, (g, deletable)) in touched {
            self.flush_group(gk, g, deletable);
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
