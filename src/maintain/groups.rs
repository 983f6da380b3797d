//! A view's group state as stored, and the decoded groups kept in memory across batches.
//!
//! A group is read from the store, decoded and updated once per batch however many rows touch
//! it, and encoded once when the batch's groups are flushed. Groups changed again soon (today's,
//! the workspace totals) are kept decoded between batches ([`HotGroups`]), so they are neither
//! looked up in RocksDB nor decoded again.

use rustc_hash::FxHashMap as HashMap;
use serde::{Deserialize, Serialize};

use crate::ops::rank::Members;
use crate::ops::Acc;
use crate::state::keys::{self, CF_GROUPS};
use crate::state::store::{Store, StoreError};
use crate::value::Value;

use super::journal::{self, Journal};
use super::FoldStats;

#[derive(Serialize, Deserialize)]
pub(super) struct GroupState {
    pub key: Vec<Value>,
    pub rows: i64,
    /// One per accumulator of the stage ([`crate::ops::Accumulators`]).
    pub accs: Vec<Acc>,
    /// The input rows of a top-k partition (empty for aggregate stages).
    pub members: Members,
    /// The rows last written for this group. Not stored: computed again from the state when
    /// the group is read ([`super::view`]'s `load`), at the date it was last finalized, since
    /// nothing else can have changed it.
    #[serde(skip)]
    pub output: Vec<Vec<Value>>,
    /// The date this group is filed under in the time index (stages whose HAVING or select list,
    /// or whose next stage's input conditions, read CURRENT_DATE).
    pub revisit: Option<i32>,
    /// How the group is stored: whole, or a base and the batches' deltas ([`journal`]).
    #[serde(skip)]
    pub journal: Journal,
}

impl GroupState {
    /// A group no row has reached yet: its key values, and its stage's fresh accumulators
    /// ([`crate::ops::Accumulators::fresh`]).
    pub fn empty(key: Vec<Value>, accs: Vec<Acc>) -> Self {
        GroupState {
            key,
            rows: 0,
            accs,
            members: Members::default(),
            output: vec![],
            revisit: None,
            journal: Journal::default(),
        }
    }

    /// Adds `sign` to the group's row count.
    pub fn add_rows(&mut self, sign: i64) {
        self.rows += sign;
        if let Some(d) = self.journal.pending() {
            d.add_rows(sign);
        }
    }

    /// Applies one input to accumulator `i` ([`Acc::apply`]).
    pub fn apply_acc(&mut self, i: usize, v: &Value, sign: i64) {
        if v.is_null() {
            return; // ignored by every accumulator
        }
        if let Some(acc) = self.accs.get_mut(i) {
            acc.apply(v, sign);
            if let Some(d) = self.journal.pending() {
                d.acc(i, v, sign);
            }
        }
    }

    /// Applies one member row of a top-k partition ([`Members::apply`]).
    pub fn apply_member(&mut self, row: &[Value], sign: i64) {
        self.members.apply(row, sign);
        if let Some(d) = self.journal.pending() {
            d.member(row, sign);
        }
    }

    /// The group is about to change other than through the methods above: it is written whole
    /// next ([`journal`]).
    pub fn unjournaled(&mut self) -> &mut Self {
        self.journal.stop();
        self
    }
}

pub(super) fn decode_group(bytes: &[u8]) -> Result<GroupState, StoreError> {
    keys::decode_record(bytes).map_err(|e| StoreError::Corrupt {
        cf: CF_GROUPS,
        detail: e.to_string(),
    })
}

/// Encoded bytes per generation of [`HotGroups`] for first stages, shared by the views that
/// fold (each view keeps its own, with its share). A byte budget, not a count: groups grow with
/// the data (a percentile's or a distinct count's multiset holds every value of its group); a
/// heap profile of `init` at 2M + 2M rows showed 64k cached groups' multisets as the largest
/// consumer. 16 MB -> 2 MB took peak RSS from 571 to 435 MB (init) and 668 to 594 MB (run) at
/// 200k + 200k rows with the same catch-up rate (10.5k vs 10.7k changes/s): the groups worth
/// keeping are few (today's, the workspace totals); a group larger than the budget is still
/// kept alone.
pub(super) const HOT_GROUP_BYTES: usize = 2 << 20;

/// The same for the groups of outer stages (a view's groups over its inner groups' rows, and
/// top-k partitions). They are few (one per workspace in the seed views) but large (a multiset
/// entry per inner group) and touched by almost every batch, so each batch used to read, decode
/// and re-encode them whole. Kept decoded (up to 16 MB encoded per generation), a backlog
/// drained 11% faster at 500k + 500k rows beside its control, and at 100k + 100k freshness at
/// 2k changes/s went from p50/p99 150/576 to 55/106 ms (2026-12-05, steps file in
/// `bench/results/`). Giving every group that budget instead gained less and cost more memory.
pub(super) const HOT_OUTER_GROUP_BYTES: usize = 16 << 20;

/// Decoded groups kept across batches. Write-through: a group enters when the batch writing it
/// is flushed, so it always equals what the store holds once that batch commits; a discarded
/// batch clears the cache. Two generations approximate LRU without bookkeeping: when the young
/// one is full it becomes the old one and the previous old one is dropped.
struct Generations {
    young: HashMap<Vec<u8>, GroupState>,
    young_bytes: usize,
    old: HashMap<Vec<u8>, GroupState>,
    budget: usize,
}

impl Generations {
    fn new(budget: usize) -> Self {
        Generations {
            young: HashMap::default(),
            young_bytes: 0,
            old: HashMap::default(),
            budget,
        }
    }

    fn take(&mut self, key: &[u8]) -> Option<GroupState> {
        self.young.remove(key).or_else(|| self.old.remove(key))
    }

    /// `encoded` is the group's encoded size, its weight in the budget.
    fn put(&mut self, key: Vec<u8>, group: GroupState, encoded: usize) {
        if self.young_bytes + encoded > self.budget {
            self.old = std::mem::take(&mut self.young);
            self.young_bytes = 0;
        }
        self.young_bytes += encoded;
        self.young.insert(key, group);
    }

    fn clear(&mut self) {
        *self = Generations::new(self.budget);
    }
}

/// One view's hot groups of its first stage and of its outer stages, each with its budget.
pub(super) struct HotGroups {
    first: Generations,
    outer: Generations,
    /// Whether first-stage groups are kept. A bulk load reads its rows sorted by group, so a
    /// first-stage group it finalizes is (but for one straddling two chunks) never touched
    /// again: keeping it only costs a hash-map insert and a later drop per group.
    keep_first: bool,
}

impl HotGroups {
    pub fn new(first_bytes: usize, outer_bytes: usize) -> Self {
        HotGroups {
            first: Generations::new(first_bytes),
            outer: Generations::new(outer_bytes),
            keep_first: true,
        }
    }

    /// Keeps first-stage groups or not (see `keep_first`); the outer stages' are always kept.
    pub fn keep_first_stage(&mut self, keep: bool) {
        self.keep_first = keep;
        if !keep {
            self.first.clear();
        }
    }

    /// The generations a group key (view, stage, key: see [`keys::group_key`]) belongs to.
    fn of(&mut self, key: &[u8]) -> &mut Generations {
        if outer_stage(key) {
            &mut self.outer
        } else {
            &mut self.first
        }
    }

    pub fn put(&mut self, key: Vec<u8>, group: GroupState, encoded: usize) {
        if self.keep_first || outer_stage(&key) {
            self.of(&key).put(key, group, encoded)
        }
    }

    pub fn clear(&mut self) {
        self.first.clear();
        self.outer.clear();
    }
}

/// Whether a group key is of an outer stage (not a view's first).
fn outer_stage(key: &[u8]) -> bool {
    matches!(keys::group_key_stage(key), Some(stage) if stage > 0)
}

/// The groups of one view touched by the current batch, decoded (flag: may be deleted when
/// empty), and its hot groups.
pub(super) struct BatchGroups {
    pub touched: HashMap<Vec<u8>, (GroupState, bool)>,
    pub hot: HotGroups,
    /// When groups are journaled ([`journal::POLICY`]; tests set others).
    pub journal: journal::Policy,
}

impl BatchGroups {
    /// Brings the groups `gks` (full group keys, sorted, distinct) into this batch's groups:
    /// those not there yet come from the hot groups, the rest from the store in one batched
    /// lookup. A group found nowhere stays absent. `deletable`: the flag of the groups loaded.
    /// Returns the positions in `gks` of the groups decoded from the store (their `output` is
    /// still to be computed).
    pub fn load(
        &mut self,
        store: &Store,
        gks: &[Vec<u8>],
        deletable: bool,
        stats: &mut FoldStats,
    ) -> Result<Vec<usize>, StoreError> {
        let mut missing: Vec<&Vec<u8>> = Vec::new();
        let mut positions = Vec::new();
        for (i, gk) in gks.iter().enumerate() {
            if self.touched.contains_key(gk) {
                continue;
            }
            match self.hot.of(gk).take(gk) {
                Some(g) => {
                    stats.group_hits += 1;
                    self.touched.insert(gk.clone(), (g, deletable));
                }
                None => {
                    missing.push(gk);
                    positions.push(i);
                }
            }
        }
        stats.group_reads += missing.len() as u64;
        let found = store.read_many(CF_GROUPS, &missing, |bytes| {
            decode_group(bytes).map(|g| (g, bytes.len()))
        })?;
        let mut read = Vec::with_capacity(found.len());
        for ((gk, g), i) in missing.into_iter().zip(found).zip(positions) {
            if let Some((mut g, base)) = g {
                journal::read(store, gk, &mut g, base, self.journal)?;
                self.touched.insert(gk.clone(), (g, deletable));
                read.push(i);
            }
        }
        Ok(read)
    }

    /// Forgets this batch's groups and the hot ones (which may hold this batch's values).
    pub fn clear(&mut self) {
        self.touched.clear();
        self.hot.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::numeric::Numeric;
    use crate::plan::fixtures::{classified, seed_views};

    /// An mv_agent_performance group after `runs` runs, finalized once.
    fn agent_day(runs: u32) -> GroupState {
        let plans = classified(&seed_views()).plans;
        let plan = plans
            .iter()
            .find(|p| p.name.name == "mv_agent_performance")
            .expect("the seed view");
        let stage = &plan.stages[0];
        let key = vec![
            Value::Uuid([1; 16]),
            Value::Uuid([2; 16]),
            Value::Date(20_400),
        ];
        let accumulators = crate::ops::Accumulators::of_stage(&stage.aggs);
        let mut g = GroupState::empty(key.clone(), accumulators.fresh(&stage.aggs));
        for run in 0..runs {
            g.rows += 1;
            let runtime = Value::Float(f64::from(run) * 1.37 + 0.25);
            let credits = Numeric::parse(&format!("{}.{:04}", run, run * 37 % 10_000))
                .expect("a numeric literal");
            // COUNT(*), COUNT(*) FILTER, AVG, the percentiles' shared multiset, SUM.
            let args = [
                Value::Bool(true),
                if run % 3 > 0 {
                    Value::Bool(true)
                } else {
                    Value::Null
                },
                runtime.clone(),
                runtime,
                Value::Numeric(credits),
            ];
            assert_eq!(g.accs.len(), args.len(), "the seed view's accumulators");
            for (acc, arg) in g.accs.iter_mut().zip(&args) {
                acc.apply(arg, 1);
            }
        }
        let aggs = accumulators
            .finish(&stage.aggs, &g.accs)
            .expect("finalized");
        g.output = vec![key.into_iter().chain(aggs).collect()];
        g.revisit = Some(20_431);
        g
    }

    /// Records read back exactly what was written, in about half the bytes of the fixed-width
    /// encoding they replaced; garbage is corrupt state, not a group.
    #[test]
    fn group_records_are_compact_and_read_back_exactly() {
        for runs in [1, 6, 40] {
            let g = agent_day(runs);
            let record = keys::encode_record(&g);
            let back = decode_group(&record).expect("a record decodes");
            assert_eq!(keys::encode_record(&back), record, "{runs} runs");
            assert!(
                back.output.is_empty(),
                "output rows are computed, not stored"
            );
            let fixed = keys::encode(&g).len();
            assert!(
                record.len() * 10 <= fixed * 7,
                "{runs} runs: {} bytes against {fixed} fixed-width",
                record.len()
            );
        }
        assert!(
            decode_group(&[1, 2, 3]).is_err(),
            "garbage is corrupt state"
        );
        let fixed = keys::encode(&agent_day(6));
        assert!(
            decode_group(&fixed).is_err(),
            "the old encoding is not misread"
        );
    }
}
