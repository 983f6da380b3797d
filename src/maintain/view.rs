//! One view's part of a batch: its groups, stage by stage, and the state writes they cause.
//!
//! A view's groups, time-index entries of groups and output rows are its own: no other view
//! reads or writes them. So each view folds on its own ([`ViewFold`]), reading the store
//! through a shared reference and collecting its writes, and the views of a batch can fold on
//! several threads at once; the owner applies every view's writes to the store afterwards, in
//! view order, so the state written is the same however many threads folded.

use std::collections::BTreeSet;
use std::ops::Range;

use rustc_hash::{FxHashMap as HashMap, FxHashSet as HashSet};

use crate::change::TargetChange;
use crate::ops::Accumulators;
use crate::pgtime::PgTimeZone;
use crate::plan::expr::{EvalCtx, EvalError, Expr, Inputs};
use crate::plan::{Stage, ViewPlan};
use crate::state::keys::{self, CF_GROUPS, CF_TIME};
use crate::state::store::{Store, StoreError};
use crate::value::Value;

use super::groups::{BatchGroups, GroupState, HotGroups};
use super::journal;
use super::{FoldStats, MaintainError};

mod finalize;
mod inputs;
mod output;
mod revisit;
mod window;

use inputs::{Input, Queue};
use output::finalize;
use revisit::{bind_stages, split_monotone};
use window::KeyedWindow;

/// How far ahead a row's next revisit is searched; rows with no flip within it are revisited then.
const HORIZON_DAYS: i32 = 4096;

/// A state write collected during a fold: column family, key, value (`None`: delete).
pub(super) type Write = (&'static str, Vec<u8>, Option<Vec<u8>>);

/// The most inputs of a stage kept waiting to be folded ([`ViewFold::fold_inputs`]): evaluated
/// inputs weigh about 0.5 KB, and a whole catch-up batch of them (tens of thousands of changes,
/// each an input of every view of its table) cost 40-100 MB more peak RSS at 500k + 500k rows.
const INPUT_CHUNK: usize = 4096;

pub(super) struct ViewFold {
    /// The view's position: its id in the store's keys.
    id: u16,
    pub plan: ViewPlan,
    pub table: usize,
    pub date: i32,
    /// The date the groups were last finalized at, so their output rows were computed at:
    /// `date`, except between a date change and the batch that finalizes for it.
    finalized: i32,
    /// The view's date in the last committed state, where [`Self::discard`] goes back to.
    committed: i32,
    pub failed: Option<String>,
    tz: PgTimeZone,
    /// Monotonic comparisons derived from the temporal atoms of every stage (= and <> split in
    /// two); their positions index the day-side memo.
    components: Vec<Expr>,
    /// Per component, whether it compares an input side with a day side, and on which side the
    /// day side is (`Some(true)`: on the left): `revisit::split_sides`, once.
    splits: Vec<Option<bool>>,
    /// Those evaluated on a source row (the first stage's input conditions) and filed per row
    /// in the time index: none when they are all [`Self::keyed`].
    pub row_components: Range<usize>,
    /// The first stage's windows that its groups' day keys decide: its groups, not its rows,
    /// are filed for them ([`window`]).
    keyed: Vec<KeyedWindow>,
    /// Per stage: those evaluated on a group's key and aggregates (its HAVING and select list)
    /// and those evaluated on each of its output rows (the next stage's input conditions). A
    /// stage with either is timed: its groups are filed in the time index.
    group_components: Vec<(Range<usize>, Range<usize>)>,
    /// The stages with CURRENT_DATE folded for `date` ([`Expr::bind_today`]): what rows are
    /// evaluated with, unless a revisit evaluates them for another day.
    bound: Vec<Stage>,
    /// Per stage: which accumulator each aggregate reads.
    accumulators: Vec<Accumulators>,
    /// This fold's own number among all folds of the process: the key of its day-only sides
    /// in each thread's memo (see `revisit::day_side`).
    memo_id: u64,
    /// The day sides of the components at `date` (built when first needed, dropped when the
    /// date changes): see `revisit::ViewFold::sides`.
    day_sides: std::sync::OnceLock<revisit::DaySides>,
    groups: BatchGroups,
    /// Per stage: the groups touched by the current batch (their keys in the store).
    touched: Vec<BTreeSet<Vec<u8>>>,
    /// Per stage: the input rows not folded yet.
    inputs: Vec<Queue>,
    /// The first stage's groups finalized early in the current date change, at `date` (the
    /// others were last finalized at `finalized`): [`Self::finalize_early`].
    early: HashSet<Vec<u8>>,
    /// A bulk load is under way: its target changes are not wanted (the targets are filled
    /// from the groups when it ends), so the last stage's output rows are computed only where
    /// the group's next revisit needs them ([`finalize`]).
    bulk: bool,
    /// The current batch's writes, for the owner to apply ([`Self::drain_writes`]).
    writes: Vec<Write>,
    /// The current (or last) batch's counts, and how long its last fold took (to order the
    /// views) and all its folds of the batch together (a date change folds in chunks).
    pub stats: FoldStats,
    pub cost: std::time::Duration,
    pub batch_cost: std::time::Duration,
}

impl ViewFold {
    /// `hot_bytes`: this view's budgets for decoded groups kept across batches (first stage,
    /// outer stages).
    pub fn new(
        id: usize,
        plan: ViewPlan,
        table: usize,
        today: i32,
        tz: PgTimeZone,
        hot_bytes: (usize, usize),
    ) -> Self {
        let first = &plan.stages[0];
        let mut components: Vec<Expr> = Vec::new();
        let mut add = |atoms: &[Expr]| {
            let start = components.len();
            components.extend(atoms.iter().flat_map(split_monotone));
            start..components.len()
        };
        let mut row_components = add(&first.temporal);
        let stages = &plan.stages;
        let group_components = (0..stages.len())
            .map(|s| {
                let own = add(&stages[s].group_temporal);
                let next = match stages.get(s + 1) {
                    Some(n) => add(&n.temporal),
                    None => add(&[]),
                };
                (own, next)
            })
            .collect();
        let accumulators: Vec<Accumulators> = (plan.stages.iter())
            .map(|s| Accumulators::of_stage(&s.aggs))
            .collect();
        let keyed = window::keyed_windows(
            first,
            &components,
            row_components.clone(),
            &accumulators[0],
            &tz,
        );
        if !keyed.is_empty() {
            row_components = row_components.end..row_components.end;
        }
        ViewFold {
            id: id as u16,
            bound: bind_stages(&plan, today, &tz),
            accumulators,
            keyed,
            touched: vec![BTreeSet::new(); plan.stages.len()],
            inputs: (0..plan.stages.len()).map(|_| Queue::default()).collect(),
            plan,
            table,
            date: today,
            finalized: today,
            committed: today,
            failed: None,
            tz,
            splits: components
                .iter()
                .map(|c| revisit::split_sides(c).map(|split| split.3))
                .collect(),
            components,
            row_components,
            group_components,
            memo_id: revisit::next_memo_id(),
            day_sides: std::sync::OnceLock::new(),
            groups: BatchGroups {
                touched: HashMap::default(),
                hot: HotGroups::new(hot_bytes.0, hot_bytes.1),
                journal: journal::POLICY,
            },
            early: HashSet::default(),
            bulk: false,
            writes: Vec::new(),
            stats: FoldStats::default(),
            cost: std::time::Duration::ZERO,
            batch_cost: std::time::Duration::ZERO,
        }
    }

    /// Whether stage `s`'s groups are filed in the time index: its HAVING or select list, or the
    /// next stage's input conditions, read CURRENT_DATE, or its windows are keyed by its groups.
    fn timed(&self, s: usize) -> bool {
        let (own, next) = &self.group_components[s];
        !own.is_empty() || !next.is_empty() || (s == 0 && self.has_keyed_windows())
    }

    /// Whether the rows of the view's table must be revisited when its date moves to `today`
    /// from `before`: they are filed per row, or the clock went back (keyed windows then need
    /// every row again).
    pub fn revisits_rows(&self, before: i32, today: i32) -> bool {
        !self.row_components.is_empty() || (self.has_keyed_windows() && today < before)
    }

    /// Whether any of the view's conditions reads CURRENT_DATE.
    pub fn is_temporal(&self) -> bool {
        !self.components.is_empty()
    }

    /// Sets the date the view's state was last finalized at (its date in the store's meta).
    pub fn restore_date(&mut self, date: i32) {
        self.set_date(date);
        self.finalized = date;
        self.committed = date;
    }

    /// The date group `gk`'s output rows were last computed at, and its rows contributed to
    /// the next stage at.
    fn finalized_at(&self, gk: &[u8]) -> i32 {
        if self.early.contains(gk) {
            self.date
        } else {
            self.finalized
        }
    }

    /// The state folded so far was committed, at the view's date.
    pub fn committed(&mut self) {
        self.committed = self.date;
    }

    pub fn set_date(&mut self, today: i32) {
        if self.date != today {
            self.date = today;
            self.bound = bind_stages(&self.plan, today, &self.tz);
            self.day_sides = std::sync::OnceLock::new();
        }
    }

    /// Marks a group of stage `s` touched (it is finalized by the next [`Self::propagate`]).
    pub fn touch(&mut self, s: usize, key_bytes: &[u8]) {
        self.touched[s].insert(keys::group_key(self.id, s as u8, key_bytes));
    }

    /// The writes collected since the last call, in the order they were made. The buffer keeps
    /// its capacity (megabytes in catch-up), so it is not faulted in afresh every batch.
    pub fn drain_writes(&mut self) -> std::vec::Drain<'_, Write> {
        self.writes.drain(..)
    }

    /// Forgets everything folded since the last commit (after an error), and goes back to the
    /// date the committed state is at: a date change that failed is tried again whole.
    pub fn discard(&mut self) {
        self.restore_date(self.committed);
        self.groups.clear();
        self.early.clear();
        self.writes.clear();
        for t in &mut self.touched {
            t.clear();
        }
        for i in &mut self.inputs {
            i.clear();
        }
    }

    /// Drops the decoded groups kept across batches.
    pub fn forget_hot_groups(&mut self) {
        self.groups.hot.clear();
    }

    /// Starts or ends a bulk load ([`Self::bulk`]). A bulk load keeps no decoded first-stage
    /// groups across batches; its end drops every hot group, whose last stage's output rows
    /// were not computed.
    pub fn set_bulk_load(&mut self, on: bool) {
        self.bulk = on;
        self.groups.hot.keep_first_stage(!on);
        if !on {
            self.groups.hot.clear();
        }
    }

    /// When this view's groups are journaled ([`journal`]).
    pub fn journal_policy(&self) -> journal::Policy {
        self.groups.journal
    }

    #[cfg(test)]
    pub fn set_journal_policy(&mut self, policy: journal::Policy) {
        self.groups.journal = policy;
    }

    /// Keeps no group decoded across batches or parts of a date change: each is read back.
    #[cfg(test)]
    pub fn keep_no_hot_groups(&mut self) {
        self.groups.hot = HotGroups::new(0, 0);
    }

    pub fn err(&self, error: EvalError) -> MaintainError {
        MaintainError::View {
            view: self.id as usize,
            name: self.plan.name.to_string(),
            error,
        }
    }

    /// Adds (`sign` 1) or retracts (-1) one input row of stage `s`, as of `date`: evaluates it
    /// now, and folds it into its group with the stage's other inputs of the batch (when the
    /// stage is finalized, or when [`INPUT_CHUNK`] inputs wait).
    pub fn contribute(
        &mut self,
        store: &Store,
        s: usize,
        row: &[Value],
        sign: i64,
        date: i32,
    ) -> Result<(), MaintainError> {
        let ctx = EvalCtx {
            today: date,
            tz: &self.tz,
        };
        let stage: &Stage = if date == self.date {
            &self.bound[s]
        } else {
            &self.plan.stages[s]
        };
        let input = Inputs::row(row);
        let firsts = &self.accumulators[s].firsts;
        let eval = |values: &mut Vec<Value>| -> Result<Option<usize>, EvalError> {
            if let Some(f) = &stage.filter {
                if !f.holds(input, ctx)? {
                    return Ok(None);
                }
            }
            for k in &stage.keys {
                values.push(k.eval(input, ctx)?.normalized());
            }
            for agg in firsts.iter().map(|&f| &stage.aggs[f]) {
                let passes = match &agg.filter {
                    Some(f) => f.holds(input, ctx)?,
                    None => true,
                };
                values.push(match (&agg.arg, passes) {
                    (_, false) => Value::Null,
                    (None, true) => Value::Bool(true),
                    (Some(a), true) => a.eval(input, ctx)?,
                });
            }
            Ok(Some(stage.keys.len()))
        };
        let member = stage.topk.is_some().then_some(row);
        let queued = self.inputs[s].push((self.id, s as u8), sign, member, eval);
        queued.map_err(|e| self.err(e))?;
        if self.inputs[s].len() >= INPUT_CHUNK {
            self.fold_inputs(store, s)?;
        }
        Ok(())
    }

    /// Folds stage `s`'s pending inputs into their groups, sorted by group, a group's inputs in
    /// the order they came and consolidated ([`inputs`]); marks the groups touched.
    fn fold_inputs(&mut self, store: &Store, s: usize) -> Result<(), MaintainError> {
        let mut queue = std::mem::take(&mut self.inputs[s]);
        let folded = self.fold_sorted(store, s, &queue.sorted());
        // The queue keeps its capacity (a chunk of inputs is about 1 MB): freed, it went back
        // to the system at once and came back as fresh pages the kernel zeroes.
        queue.clear();
        self.inputs[s] = queue;
        folded
    }

    /// Folds `inputs`, sorted by group ([`Queue::sorted`]), run by run.
    fn fold_sorted(
        &mut self,
        store: &Store,
        s: usize,
        inputs: &[Input<'_>],
    ) -> Result<(), MaintainError> {
        let mut runs: Vec<&[Input<'_>]> = inputs.chunk_by(|a, b| a.gk == b.gk).collect();
        runs.retain(|run| !inputs::cancels(run));
        if runs.is_empty() {
            return Ok(());
        }
        let gks: Vec<Vec<u8>> = runs.iter().map(|run| run[0].gk.to_vec()).collect();
        let deletable = !self.plan.stages[s].keys.is_empty();
        self.load(store, s, &gks, deletable)?;
        self.touched[s].extend(gks.iter().cloned());
        let stage = &self.plan.stages[s];
        for (run, gk) in runs.into_iter().zip(gks) {
            let (g, _) = self.groups.touched.entry(gk).or_insert_with(|| {
                let accs = self.accumulators[s].fresh(&stage.aggs);
                (GroupState::empty(run[0].key.to_vec(), accs), deletable)
            });
            inputs::fold_run(g, run, stage.topk.is_some());
        }
        Ok(())
    }
}

impl ViewFold {
    /// Adds the groups filed for a date up to `today` (every group of a timed stage when the
    /// clock went back from `old`) to the touched ones: finalizing them files them again.
    pub fn due_groups(&mut self, store: &Store, old: i32, today: i32) -> Result<(), StoreError> {
        if today > old {
            let upto = keys::group_time_key(self.id, today.saturating_add(1), 0, &[]);
            let entries =
                store.scan_prefix(CF_TIME, &keys::group_time_prefix(self.id), Some(&upto))?;
            for (k, _) in entries {
                if let Some((_, [stage, kb @ ..])) = keys::split_time_key(&k) {
                    if let Some(t) = self.touched.get_mut(*stage as usize) {
                        t.insert(keys::group_key(self.id, *stage, kb));
                    }
                }
                self.writes.push((CF_TIME, k, None));
            }
            return Ok(());
        }
        // Back in time: every group of a timed stage is finalized again, and finalizing moves
        // its time-index entry if its next revisit changed (and keeps it if not).
        for s in 0..self.plan.stages.len() {
            if !self.timed(s) {
                continue;
            }
            let prefix = keys::group_prefix(self.id, s as u8);
            for (gk, _) in store.scan_prefix(CF_GROUPS, &prefix, None)? {
                self.touched[s].insert(gk);
            }
        }
        Ok(())
    }

    /// Finalizes the touched groups stage by stage, innermost first ([`Self::finalize_stage`]);
    /// returns the last stage's changed rows. The groups were last finalized, and their rows
    /// contributed to the next stage, at `was` (the view's date before a date change, else its
    /// date), except those finalized early in a date change ([`Self::finalize_early`]).
    pub fn propagate(
        &mut self,
        store: &Store,
        was: i32,
    ) -> Result<Vec<TargetChange>, MaintainError> {
        let mut out = Vec::new();
        for s in 0..self.plan.stages.len() {
            self.finalize_stage(store, s, was, &mut out)?;
        }
        self.flush_groups();
        self.finalized = self.date;
        self.early.clear();
        Ok(out)
    }

    /// Brings the groups `gks` of stage `s` into the batch ([`BatchGroups::load`]); a group
    /// read from the store gets its output rows back, finalized at the date it was last
    /// finalized at: its state has not changed since.
    fn load(
        &mut self,
        store: &Store,
        s: usize,
        gks: &[Vec<u8>],
        deletable: bool,
    ) -> Result<(), MaintainError> {
        let read = self.groups.load(store, gks, deletable, &mut self.stats)?;
        if self.bulk && s + 1 == self.plan.stages.len() {
            return Ok(()); // a bulk load hands no target changes on (see `finalize_group`)
        }
        let (stage, accumulators) = (&self.plan.stages[s], &self.accumulators[s]);
        for i in read {
            let ctx = EvalCtx {
                today: self.finalized_at(&gks[i]),
                tz: &self.tz,
            };
            if let Some((g, _)) = self.groups.touched.get_mut(&gks[i]) {
                g.output = match finalize(stage, accumulators, g, ctx) {
                    Ok((rows, _)) => rows,
                    Err(e) => return Err(self.err(e)),
                };
            }
        }
        Ok(())
    }
}
