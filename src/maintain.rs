//! Applying source changes to view state: the incremental operators at work.
//!
//! A source row contributes to one group of a view's first stage (or to none, when WHERE rejects
//! it); its contribution is a function of the row image and of the date CURRENT_DATE stands for.
//! Every change is therefore "retract the old image's contribution, add the new one's": updates of
//! any column (group keys, primary key, NULL to value), deletes and TRUNCATE all reduce to that,
//! and REPLICA IDENTITY DEFAULT is enough because the previous image of every row is kept here.
//!
//! Time: a comparison with CURRENT_DATE flips at most once per direction as the date grows (the
//! planner guarantees monotonic use), so for each row we compute the next date at which any such
//! comparison could flip (binary search per comparison) and file the row in a time index under
//! that date. When the clock passes a date, exactly the filed rows are retracted at the old date
//! and re-added at the new one; all other rows contribute the same at both dates.
//!
//! The same holds at every later stage, whose input rows are the output rows of the stage before
//! it (and at every stage's HAVING and select list, which read a group's key and aggregates): a
//! group whose output or whose contribution to the next stage depends on CURRENT_DATE is filed in
//! the time index under the next date at which any of those comparisons could flip. When the
//! clock passes it, the group is finalized again at the new date and its rows are retracted from
//! the next stage as they were contributed (at the old date) and added at the new one. A date
//! change thus runs like a batch: due source rows first, then each stage's changed and due
//! groups, innermost first, with no writes needed.
//!
//! Within a batch, changed groups are collected and finalized once per stage, innermost first;
//! a changed output row of one stage is a retract/insert pair for the next, and the last stage's
//! changed rows are what the sink writes.

use std::borrow::Cow;
use std::cell::RefCell;
use std::collections::BTreeSet;

use rustc_hash::FxHashMap as HashMap;
use std::ops::Range;

use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::change::{Change, TargetChange};
use crate::ops::rank::Members;
use crate::ops::Acc;
use crate::pg::TableInfo;
use crate::pgtime::PgTimeZone;
use crate::plan::expr::{compare, CmpOp, EvalCtx, EvalError, Expr, Inputs};
use crate::plan::{Stage, StageInput, ViewPlan};
use crate::state::keys::{self, CF_GROUPS, CF_ROWS, CF_TIME};
use crate::state::meta;
use crate::state::store::{Durability, Store, StoreError};
use crate::state::{StateThread, StateThreadGone};
use crate::value::{identical, Value};

/// How far ahead a row's next revisit is searched; rows with no flip within it are revisited then.
const HORIZON_DAYS: i32 = 4096;

#[derive(Debug, Error)]
pub enum MaintainError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    StateThread(#[from] StateThreadGone),
    #[error("view {view}: {error}")]
    View {
        view: usize,
        name: String,
        error: EvalError,
    },
    #[error("no stored image of the {table} row with key {key}: state and source disagree; run `deltamv init --resync`")]
    MissingRow { table: String, key: String },
}

#[derive(Serialize, Deserialize)]
struct RowRecord {
    image: Vec<Value>,
    /// Per temporal view: the date filed in the time index.
    revisit: Vec<(u16, i32)>,
}

/// A [`RowRecord`] written from a borrowed image (the same encoding): the batch's rows are
/// encoded where they lie, not copied.
#[derive(Serialize)]
struct RowRecordRef<'a> {
    image: &'a [Value],
    revisit: &'a [(u16, i32)],
}

#[derive(Serialize, Deserialize)]
struct GroupState {
    key: Vec<Value>,
    rows: i64,
    accs: Vec<Acc>,
    /// The input rows of a top-k partition (empty for aggregate stages).
    members: Members,
    /// The rows last written for this group.
    output: Vec<Vec<Value>>,
    /// The date this group is filed under in the time index (stages whose HAVING or select list,
    /// or whose next stage's input conditions, read CURRENT_DATE).
    revisit: Option<i32>,
}

/// [`GroupState`] as written before groups had a revisit date: state written by an earlier
/// version still reads (its views had no time-dependent groups).
#[derive(Serialize, Deserialize)]
struct GroupStateV1 {
    key: Vec<Value>,
    rows: i64,
    accs: Vec<Acc>,
    members: Members,
    output: Vec<Vec<Value>>,
}

fn decode_group(bytes: &[u8]) -> Result<GroupState, StoreError> {
    keys::decode::<GroupState>(bytes)
        .or_else(|e| {
            keys::decode::<GroupStateV1>(bytes)
                .map(|g| GroupState {
                    key: g.key,
                    rows: g.rows,
                    accs: g.accs,
                    members: g.members,
                    output: g.output,
                    revisit: None,
                })
                .map_err(|_| e)
        })
        .map_err(|e| StoreError::Corrupt {
            cf: CF_GROUPS,
            detail: e.to_string(),
        })
}

struct ViewRuntime {
    plan: ViewPlan,
    table: usize,
    date: i32,
    /// Monotonic comparisons derived from the temporal atoms of every stage (= and <> split in
    /// two); their positions index the day-side memo.
    components: Vec<Expr>,
    /// Those evaluated on a source row (the first stage's input conditions).
    row_components: Range<usize>,
    /// Per stage: those evaluated on a group's key and aggregates (its HAVING and select list)
    /// and those evaluated on each of its output rows (the next stage's input conditions). A
    /// stage with either is timed: its groups are filed in the time index.
    group_components: Vec<(Range<usize>, Range<usize>)>,
    /// The stages with CURRENT_DATE folded for `date` ([`Expr::bind_today`]): what rows are
    /// evaluated with, unless a revisit evaluates them for another day.
    bound: Vec<Stage>,
    failed: Option<String>,
}

type Touched = HashMap<(usize, usize), BTreeSet<Vec<u8>>>;

/// Encoded bytes per generation of [`HotGroups`] (two generations; decoded groups take a few
/// times their encoded size). A byte budget, not a count: groups grow with the data (a
/// percentile's or a distinct count's multiset holds every value of its group); a heap profile
/// of `init` at 2M + 2M rows showed 64k cached groups' multisets as the largest consumer.
/// 16 MB -> 2 MB took peak RSS from 571 to 435 MB (init) and 668 to 594 MB (run) at 200k + 200k
/// rows with the same catch-up rate (10.5k vs 10.7k changes/s): the groups worth keeping are
/// few (today's, the workspace totals); a group larger than the budget is still kept alone.
const HOT_GROUP_BYTES: usize = 2 << 20;

/// The same for the groups of outer stages (a view's groups over its inner groups' rows, and
/// top-k partitions). They are few (one per workspace in the seed views) but large (a multiset
/// entry per inner group) and touched by almost every batch, so each batch used to read, decode
/// and re-encode them whole. Kept decoded (up to 16 MB encoded per generation), a backlog
/// drained 11% faster at 500k + 500k rows beside its control, and at 100k + 100k freshness at
/// 2k changes/s went from p50/p99 150/576 to 55/106 ms (2026-12-05, steps file in
/// `bench/results/`). Giving every group that budget instead gained less and cost more memory.
const HOT_OUTER_GROUP_BYTES: usize = 16 << 20;

/// Decoded groups kept across batches, so a group changed again soon (today's groups, the
/// workspace totals) is neither looked up in RocksDB nor decoded again. Write-through: a group
/// enters when the batch writing it is flushed to the store, so it always equals what the store
/// holds once that batch commits; a discarded batch clears the cache. Two generations
/// approximate LRU without bookkeeping: when the young one is full it becomes the old one and
/// the previous old one is dropped.
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

/// Hot groups of first stages and of outer stages, each with its budget.
struct HotGroups {
    first: Generations,
    outer: Generations,
}

impl Default for HotGroups {
    fn default() -> Self {
        HotGroups {
            first: Generations::new(HOT_GROUP_BYTES),
            outer: Generations::new(HOT_OUTER_GROUP_BYTES),
        }
    }
}

impl HotGroups {
    /// The generations a group key (view, stage, key: see [`keys::group_key`]) belongs to.
    fn of(&mut self, key: &[u8]) -> &mut Generations {
        match keys::group_key_stage(key) {
            Some(stage) if stage > 0 => &mut self.outer,
            _ => &mut self.first,
        }
    }

    fn take(&mut self, key: &[u8]) -> Option<GroupState> {
        self.of(key).take(key)
    }

    fn put(&mut self, key: Vec<u8>, group: GroupState, encoded: usize) {
        self.of(&key).put(key, group, encoded)
    }

    fn clear(&mut self) {
        self.first.clear();
        self.outer.clear();
    }
}

/// What one batch cost the state: for `/metrics` and the debug log, so a change in the cost per
/// change shows where it comes from.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FoldStats {
    /// Source changes folded.
    pub changes: u64,
    /// Distinct groups finalized, all stages together.
    pub groups: u64,
    /// Group lookups answered by decoded groups in memory (this batch's or the hot ones).
    pub group_hits: u64,
    /// Group lookups that went to the store (and decoded what they found).
    pub group_reads: u64,
    /// Row-image lookups (every update, delete and insert).
    pub row_reads: u64,
}

/// Target rows, and the group key the next page starts from (`None`: no more).
pub type RowsPage = (Vec<Vec<Value>>, Option<Vec<u8>>);

/// A row's group key and the argument it feeds each aggregate (NULL: none).
type Contribution = (Vec<Value>, Vec<Value>);

pub struct Maintainer {
    store: Store,
    /// Day-only sides of temporal comparisons by (view, component, day): see `day_side`.
    day_memo: RefCell<HashMap<(usize, usize, i32), Value>>,
    /// Groups touched by the current batch, decoded (flag: may be deleted when empty).
    groups: HashMap<Vec<u8>, (GroupState, bool)>,
    /// Recently written groups, decoded, across batches.
    hot: HotGroups,
    tz: PgTimeZone,
    tables: Vec<TableInfo>,
    referenced: Vec<Vec<bool>>,
    table_views: Vec<Vec<usize>>,
    views: Vec<ViewRuntime>,
    /// The current (or last) batch's counts.
    stats: FoldStats,
}

impl Maintainer {
    /// `views` and `tables` must be in a stable order (their positions are ids in the store).
    pub fn new(
        store: Store,
        tz: PgTimeZone,
        tables: Vec<TableInfo>,
        views: Vec<ViewPlan>,
        today: i32,
    ) -> Self {
        let mut referenced: Vec<Vec<bool>> = tables
            .iter()
            .map(|t| vec![false; t.columns.len()])
            .collect();
        let mut table_views = vec![Vec::new(); tables.len()];
        let mut runtimes = Vec::new();
        for (v, plan) in views.into_iter().enumerate() {
            let table = tables
                .iter()
                .position(|t| t.name == plan.source)
                .unwrap_or(0);
            table_views[table].push(v);
            let first = &plan.stages[0];
            mark_columns(first, &mut referenced[table]);
            for k in &tables[table].key {
                referenced[table][*k] = true;
            }
            let mut components: Vec<Expr> = Vec::new();
            let mut add = |atoms: &[Expr]| {
                let start = components.len();
                components.extend(atoms.iter().flat_map(split_monotone));
                start..components.len()
            };
            let row_components = add(&first.temporal);
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
            runtimes.push(ViewRuntime {
                bound: bind_stages(&plan, today, &tz),
                plan,
                table,
                date: today,
                components,
                row_components,
                group_components,
                failed: None,
            });
        }
        Maintainer {
            store,
            day_memo: RefCell::new(HashMap::default()),
            groups: HashMap::default(),
            hot: HotGroups::default(),
            tz,
            tables,
            referenced,
            table_views,
            views: runtimes,
            stats: FoldStats::default(),
        }
    }

    /// The counts of the last batch folded ([`Self::apply`] or [`Self::advance_dates`]).
    pub fn stats(&self) -> FoldStats {
        self.stats
    }

    pub fn store(&mut self) -> &mut Store {
        &mut self.store
    }

    pub fn view_count(&self) -> usize {
        self.views.len()
    }

    pub fn plan(&self, v: usize) -> &ViewPlan {
        &self.views[v].plan
    }

    pub fn failed(&self, v: usize) -> Option<&str> {
        self.views[v].failed.as_deref()
    }

    pub fn set_failed(&mut self, v: usize, why: String) {
        self.views[v].failed = Some(why);
    }

    /// The views that read `column` of `table` (the key is read by all of them).
    pub fn readers(&self, table: usize, column: usize) -> Vec<usize> {
        let t = &self.tables[table];
        self.table_views[table]
            .iter()
            .copied()
            .filter(|&v| {
                let mut cols = vec![false; t.columns.len()];
                mark_columns(&self.views[v].plan.stages[0], &mut cols);
                cols[column] || t.key.contains(&column)
            })
            .collect()
    }

    pub fn date(&self, v: usize) -> i32 {
        self.views[v].date
    }

    pub fn set_dates(&mut self, dates: &[i32]) {
        for (v, d) in dates.iter().enumerate().take(self.views.len()) {
            self.set_date(v, *d);
        }
    }

    pub fn dates(&self) -> Vec<i32> {
        self.views.iter().map(|v| v.date).collect()
    }

    pub fn failures(&self) -> Vec<(usize, String)> {
        self.views
            .iter()
            .enumerate()
            .filter_map(|(i, v)| v.failed.clone().map(|f| (i, f)))
            .collect()
    }

    /// Keeps only the columns some view reads (and the key): the stored image. Borrowed when
    /// the source sent nothing else (the stream leaves unread columns NULL).
    pub fn project<'a>(&self, table: usize, row: &'a [Value]) -> Cow<'a, [Value]> {
        let unread = |(i, v): (usize, &Value)| {
            !self.referenced[table].get(i).copied().unwrap_or(true) && !matches!(v, Value::Null)
        };
        if !row.iter().enumerate().any(unread) {
            return Cow::Borrowed(row);
        }
        let mut row = row.to_vec();
        for (i, keep) in self.referenced[table].iter().enumerate() {
            if !keep {
                if let Some(v) = row.get_mut(i) {
                    *v = Value::Null;
                }
            }
        }
        Cow::Owned(row)
    }

    fn set_date(&mut self, v: usize, today: i32) {
        let rt = &mut self.views[v];
        if rt.date != today {
            rt.date = today;
            rt.bound = bind_stages(&rt.plan, today, &self.tz);
        }
    }

    pub fn referenced(&self, table: usize) -> &[bool] {
        &self.referenced[table]
    }

    /// The order in which to read `table`'s snapshot: the columns its views group by first,
    /// most shared first (ties: first seen). Rows of a group then arrive together, so a load
    /// chunk touches each group once instead of every group once per chunk: fewer state
    /// lookups, group encodings and finalizations.
    pub fn load_order(&self, table: usize) -> Vec<usize> {
        let mut counts: Vec<(usize, usize)> = Vec::new(); // (column, views grouping by it)
        for &v in &self.table_views[table] {
            let mut used = vec![false; self.tables[table].columns.len()];
            for key in &self.views[v].plan.stages[0].keys {
                let mut cols = vec![false; used.len()];
                collect_columns(key, &mut cols);
                for (c, hit) in cols.into_iter().enumerate() {
                    if hit && !used[c] {
                        used[c] = true;
                        match counts.iter_mut().find(|(col, _)| *col == c) {
                            Some((_, n)) => *n += 1,
                            None => counts.push((c, 1)),
                        }
                    }
                }
            }
        }
        // A stable sort keeps first-seen order among equals.
        counts.sort_by_key(|c| std::cmp::Reverse(c.1));
        counts.into_iter().map(|(c, _)| c).collect()
    }

    /// Applies a batch of changes; returns the changed target rows of each view.
    pub fn apply(&mut self, changes: &[Change]) -> Result<Vec<Vec<TargetChange>>, MaintainError> {
        self.stats = FoldStats {
            changes: changes.len() as u64,
            ..FoldStats::default()
        };
        let mut touched = Touched::default();
        for change in changes {
            self.apply_change(change, &mut touched)?;
        }
        self.propagate(touched)
    }

    /// Moves every temporal view to `today`: revisits the source rows and the groups filed for
    /// the dates passed (every one when the clock went back), innermost first.
    pub fn advance_dates(&mut self, today: i32) -> Result<Vec<Vec<TargetChange>>, MaintainError> {
        self.stats = FoldStats::default();
        let mut touched = Touched::default();
        let before = self.dates();
        for v in 0..self.views.len() {
            let rt = &self.views[v];
            if rt.components.is_empty() || rt.failed.is_some() || rt.date == today {
                self.set_date(v, today);
                continue;
            }
            let old = rt.date;
            let due: Vec<Vec<u8>> = if rt.row_components.is_empty() {
                vec![]
            } else if today > old {
                let upto = keys::time_key(v as u16, today.saturating_add(1), &[]);
                self.store
                    .scan_prefix(CF_TIME, &keys::time_prefix(v as u16), Some(&upto))?
                    .into_iter()
                    .filter_map(|(k, _)| keys::split_time_key(&k).map(|(_, rk)| rk.to_vec()))
                    .collect()
            } else {
                let prefix = keys::table_prefix(rt.table as u16);
                self.store
                    .scan_prefix(CF_ROWS, &prefix, None)?
                    .into_iter()
                    .map(|(k, _)| k)
                    .collect()
            };
            for rk in due {
                let Some(mut rec) = self.store.get::<RowRecord>(CF_ROWS, &rk)? else {
                    continue;
                };
                self.contribute(v, 0, &rec.image, -1, old, &mut touched)?;
                self.contribute(v, 0, &rec.image, 1, today, &mut touched)?;
                rec.revisit.retain(|(view, d)| {
                    if *view as usize == v {
                        self.store
                            .delete(CF_TIME, keys::time_key(v as u16, *d, &rk));
                        false
                    } else {
                        true
                    }
                });
                let range = self.views[v].row_components.clone();
                let next = self.next_revisit(v, range, Inputs::row(&rec.image), today)?;
                self.store
                    .put(CF_TIME, keys::time_key(v as u16, next, &rk), &());
                rec.revisit.push((v as u16, next));
                self.store.put(CF_ROWS, rk, &rec);
            }
            self.due_groups(v, old, today, &mut touched)?;
            self.set_date(v, today);
        }
        self.propagate_dated(touched, &before)
    }

    /// Adds the groups of view `v` filed for a date up to `today` (every group of a timed stage
    /// when the clock went back) to `touched`, and drops their time-index entries: finalizing
    /// them files them again under a later date.
    fn due_groups(
        &mut self,
        v: usize,
        old: i32,
        today: i32,
        touched: &mut Touched,
    ) -> Result<(), MaintainError> {
        if today > old {
            let upto = keys::group_time_key(v as u16, today.saturating_add(1), 0, &[]);
            let entries =
                self.store
                    .scan_prefix(CF_TIME, &keys::group_time_prefix(v as u16), Some(&upto))?;
            for (k, _) in entries {
                if let Some((_, [stage, kb @ ..])) = keys::split_time_key(&k) {
                    touched
                        .entry((v, *stage as usize))
                        .or_default()
                        .insert(kb.to_vec());
                }
                self.store.delete(CF_TIME, k);
            }
            return Ok(());
        }
        for s in 0..self.views[v].plan.stages.len() {
            let (own, next) = &self.views[v].group_components[s];
            if own.is_empty() && next.is_empty() {
                continue;
            }
            let prefix = keys::group_prefix(v as u16, s as u8);
            for (gk, bytes) in self.store.scan_prefix(CF_GROUPS, &prefix, None)? {
                let kb = &gk[prefix.len()..];
                if let Some(d) = decode_group(&bytes)?.revisit {
                    self.store
                        .delete(CF_TIME, keys::group_time_key(v as u16, d, s as u8, kb));
                }
                touched.entry((v, s)).or_default().insert(kb.to_vec());
            }
        }
        Ok(())
    }

    /// Makes sure every stage without GROUP BY has its single group (one output row even for
    /// empty input, as PostgreSQL returns); returns the resulting target changes.
    pub fn ensure_global_groups(&mut self) -> Result<Vec<Vec<TargetChange>>, MaintainError> {
        let mut touched = Touched::default();
        for v in 0..self.views.len() {
            for s in 0..self.views[v].plan.stages.len() {
                if self.views[v].plan.stages[s].keys.is_empty() {
                    touched
                        .entry((v, s))
                        .or_default()
                        .insert(keys::group_key_bytes(&[]));
                }
            }
        }
        self.propagate(touched)
    }

    /// All current output rows of view `v` (for loading or rebuilding its target).
    /// One page of view `v`'s target rows: the output of up to about `limit` groups from `from`
    /// on (`None`: the first page), and where the next page starts (`None`: this was the last).
    pub fn rows_page(
        &self,
        v: usize,
        from: Option<Vec<u8>>,
        limit: usize,
    ) -> Result<RowsPage, MaintainError> {
        let last = (self.views[v].plan.stages.len() - 1) as u8;
        let prefix = keys::group_prefix(v as u16, last);
        let from = from.unwrap_or_else(|| prefix.clone());
        let (groups, next) = self.store.scan_page(CF_GROUPS, &prefix, &from, limit)?;
        let mut out = Vec::with_capacity(groups.len());
        for (_, bytes) in groups {
            out.extend(decode_group(&bytes)?.output);
        }
        Ok((out, next))
    }

    fn key_of(&self, table: usize, row: &[Value]) -> Vec<Value> {
        self.tables[table]
            .key
            .iter()
            .map(|i| row.get(*i).cloned().unwrap_or(Value::Null))
            .collect()
    }

    fn missing(&self, table: usize, key: &[Value]) -> MaintainError {
        MaintainError::MissingRow {
            table: self.tables[table].name.to_string(),
            key: key
                .iter()
                .map(|v| v.to_sql_text())
                .collect::<Vec<_>>()
                .join(", "),
        }
    }

    fn apply_change(
        &mut self,
        change: &Change,
        touched: &mut Touched,
    ) -> Result<(), MaintainError> {
        match change {
            Change::Load { table, row } => {
                let table = *table;
                let row = self.project(table, row);
                let rk = keys::row_key(table as u16, &self.key_of(table, &row));
                self.insert_row(table, rk, &row, touched)
            }
            Change::Insert { table, row } => {
                let table = *table;
                let row = self.project(table, row);
                let rk = keys::row_key(table as u16, &self.key_of(table, &row));
                self.stats.row_reads += 1;
                if let Some(old) = self.store.get::<RowRecord>(CF_ROWS, &rk)? {
                    tracing::warn!(table = %self.tables[table].name, "insert of a key already stored; replacing it");
                    self.remove_row(table, &rk, old, touched)?;
                }
                self.insert_row(table, rk, &row, touched)
            }
            Change::Update {
                table,
                old_key,
                row,
                unchanged,
            } => {
                let table = *table;
                let mut row = self.project(table, row);
                let old_rk = match old_key {
                    Some(key) => keys::row_key(table as u16, key),
                    None => keys::row_key(table as u16, &self.key_of(table, &row)),
                };
                self.stats.row_reads += 1;
                let old = match self.store.get::<RowRecord>(CF_ROWS, &old_rk)? {
                    Some(old) => old,
                    None => {
                        let key = old_key.clone().unwrap_or_else(|| self.key_of(table, &row));
                        return Err(self.missing(table, &key));
                    }
                };
                if !unchanged.is_empty() {
                    let patched = row.to_mut();
                    for c in unchanged {
                        if let (Some(slot), Some(prev)) = (patched.get_mut(*c), old.image.get(*c)) {
                            *slot = prev.clone();
                        }
                    }
                }
                self.remove_row(table, &old_rk, old, touched)?;
                let rk = keys::row_key(table as u16, &self.key_of(table, &row));
                self.insert_row(table, rk, &row, touched)
            }
            Change::Delete { table, key } => {
                let table = *table;
                let rk = keys::row_key(table as u16, key);
                self.stats.row_reads += 1;
                let old = self
                    .store
                    .get::<RowRecord>(CF_ROWS, &rk)?
                    .ok_or_else(|| self.missing(table, key))?;
                self.remove_row(table, &rk, old, touched)
            }
            Change::Truncate { table } => {
                let table = *table;
                for (rk, bytes) in
                    self.store
                        .scan_prefix(CF_ROWS, &keys::table_prefix(table as u16), None)?
                {
                    let old: RowRecord = keys::decode(&bytes).map_err(|e| StoreError::Corrupt {
                        cf: CF_ROWS,
                        detail: e.to_string(),
                    })?;
                    self.remove_row(table, &rk, old, touched)?;
                }
                Ok(())
            }
        }
    }

    fn insert_row(
        &mut self,
        table: usize,
        rk: Vec<u8>,
        image: &[Value],
        touched: &mut Touched,
    ) -> Result<(), MaintainError> {
        let mut revisit = Vec::new();
        for i in 0..self.table_views[table].len() {
            let v = self.table_views[table][i];
            if self.views[v].failed.is_some() {
                continue;
            }
            let date = self.views[v].date;
            self.contribute(v, 0, image, 1, date, touched)?;
            if !self.views[v].row_components.is_empty() {
                let range = self.views[v].row_components.clone();
                let next = self.next_revisit(v, range, Inputs::row(image), date)?;
                self.store
                    .put(CF_TIME, keys::time_key(v as u16, next, &rk), &());
                revisit.push((v as u16, next));
            }
        }
        let rec = RowRecordRef {
            image,
            revisit: &revisit,
        };
        self.store.put(CF_ROWS, rk, &rec);
        Ok(())
    }

    fn remove_row(
        &mut self,
        table: usize,
        rk: &[u8],
        rec: RowRecord,
        touched: &mut Touched,
    ) -> Result<(), MaintainError> {
        for i in 0..self.table_views[table].len() {
            let v = self.table_views[table][i];
            if self.views[v].failed.is_some() {
                continue;
            }
            let date = self.views[v].date;
            self.contribute(v, 0, &rec.image, -1, date, touched)?;
        }
        for (v, d) in &rec.revisit {
            self.store.delete(CF_TIME, keys::time_key(*v, *d, rk));
        }
        self.store.delete(CF_ROWS, rk.to_vec());
        Ok(())
    }

    fn view_err(&self, v: usize, error: EvalError) -> MaintainError {
        MaintainError::View {
            view: v,
            name: self.views[v].plan.name.to_string(),
            error,
        }
    }

    /// Adds (`sign` 1) or retracts (-1) one input row of stage `s` of view `v`.
    fn contribute(
        &mut self,
        v: usize,
        s: usize,
        row: &[Value],
        sign: i64,
        date: i32,
        touched: &mut Touched,
    ) -> Result<(), MaintainError> {
        let ctx = EvalCtx {
            today: date,
            tz: &self.tz,
        };
        let rt = &self.views[v];
        let stage: &Stage = if date == rt.date {
            &rt.bound[s]
        } else {
            &rt.plan.stages[s]
        };
        let input = Inputs::row(row);
        let eval = || -> Result<Option<Contribution>, EvalError> {
            if let Some(f) = &stage.filter {
                if !f.holds(input, ctx)? {
                    return Ok(None);
                }
            }
            let key = stage
                .keys
                .iter()
                .map(|k| k.eval(input, ctx).map(Value::normalized))
                .collect::<Result<Vec<_>, _>>()?;
            let mut args = Vec::with_capacity(stage.aggs.len());
            for agg in &stage.aggs {
                let passes = match &agg.filter {
                    Some(f) => f.holds(input, ctx)?,
                    None => true,
                };
                args.push(match (&agg.arg, passes) {
                    (_, false) => Value::Null,
                    (None, true) => Value::Bool(true),
                    (Some(a), true) => a.eval(input, ctx)?,
                });
            }
            Ok(Some((key, args)))
        };
        let Some((key, args)) = eval().map_err(|e| self.view_err(v, e))? else {
            return Ok(());
        };
        let kb = keys::group_key_bytes(&key);
        let gk = keys::group_key(v as u16, s as u8, &kb);
        let deletable = !stage.keys.is_empty();
        let is_topk = stage.topk.is_some();
        let fresh_accs = || stage.aggs.iter().map(Acc::new).collect::<Vec<_>>();
        let found = find_group(
            &mut self.groups,
            &mut self.hot,
            &self.store,
            &gk,
            &mut self.stats,
        )?;
        let mut g = match found {
            Some(g) => g,
            None => GroupState {
                key,
                rows: 0,
                accs: fresh_accs(),
                members: Members::default(),
                output: vec![],
                revisit: None,
            },
        };
        g.rows += sign;
        if is_topk {
            g.members.apply(row, sign);
        }
        for (acc, arg) in g.accs.iter_mut().zip(&args) {
            acc.apply(arg, sign);
        }
        self.groups.insert(gk, (g, deletable));
        touched.entry((v, s)).or_default().insert(kb);
        Ok(())
    }

    /// A group's state: from this batch's groups, the hot groups or the store. Groups are decoded once
    /// and encoded once per batch however many rows touch them (see [`Self::flush_groups`]).
    fn take_group(&mut self, gk: &[u8]) -> Result<Option<GroupState>, MaintainError> {
        Ok(find_group(
            &mut self.groups,
            &mut self.hot,
            &self.store,
            gk,
            &mut self.stats,
        )?)
    }

    /// Writes every group touched by the batch into the store's pending writes, dropping empty
    /// groups (except the single group of a stage without GROUP BY).
    fn flush_groups(&mut self) {
        for (gk, (g, deletable)) in self.groups.drain() {
            if deletable && g.rows <= 0 {
                self.store.delete(CF_GROUPS, gk);
            } else {
                let bytes = keys::encode(&g);
                let size = bytes.len();
                self.store.put_encoded(CF_GROUPS, gk.clone(), bytes);
                self.hot.put(gk, g, size);
            }
        }
    }

    /// Writes everything folded so far, with the position it reflects and the views' dates (plus
    /// `extra` meta entries), atomically.
    pub fn commit(
        &mut self,
        lsn: crate::pg::Lsn,
        extra: &[(&str, Vec<u8>)],
        durability: Durability,
    ) -> Result<(), StoreError> {
        let mut meta = vec![meta::lsn(lsn), meta::dates(&self.dates())];
        meta.extend(extra.iter().cloned());
        self.store.commit(&meta, durability)
    }

    /// Drops the decoded groups kept across batches (after a bulk load, whose groups are not
    /// the ones the stream will touch next).
    pub fn forget_hot_groups(&mut self) {
        self.hot.clear();
    }

    /// Forgets everything folded since the last commit (after an error).
    pub fn discard(&mut self) {
        self.groups.clear();
        // It may hold this batch's uncommitted group values.
        self.hot.clear();
        self.store.discard();
    }

    /// Finalizes touched groups stage by stage; returns the last stages' changed rows per view.
    fn propagate(&mut self, touched: Touched) -> Result<Vec<Vec<TargetChange>>, MaintainError> {
        let dates = self.dates();
        self.propagate_dated(touched, &dates)
    }

    /// [`Self::propagate`] where each view's groups were last finalized, and their rows
    /// contributed to the next stage, at `before[view]` (its date before a date change).
    fn propagate_dated(
        &mut self,
        mut touched: Touched,
        before: &[i32],
    ) -> Result<Vec<Vec<TargetChange>>, MaintainError> {
        let mut out = vec![Vec::new(); self.views.len()];
        #[allow(clippy::needless_range_loop)] // `self` is borrowed mutably inside the loop
        for v in 0..self.views.len() {
            let stages = self.views[v].plan.stages.len();
            let (date, was) = (self.views[v].date, before[v]);
            for s in 0..stages {
                let Some(groups) = touched.remove(&(v, s)) else {
                    continue;
                };
                let (own, next) = self.views[v].group_components[s].clone();
                let timed = !own.is_empty() || !next.is_empty();
                // After a date change, an unchanged row may still contribute differently.
                let moved = was != date && !next.is_empty();
                self.stats.groups += groups.len() as u64;
                for kb in groups {
                    let gk = keys::group_key(v as u16, s as u8, &kb);
                    let deletable = !self.views[v].plan.stages[s].keys.is_empty();
                    let mut g = match self.take_group(&gk)? {
                        Some(g) => g,
                        None if !deletable => GroupState {
                            key: vec![],
                            rows: 0,
                            accs: self.views[v].plan.stages[s]
                                .aggs
                                .iter()
                                .map(Acc::new)
                                .collect(),
                            members: Members::default(),
                            output: vec![],
                            revisit: None,
                        },
                        None => continue,
                    };
                    let (new, aggs) = self.output(v, s, &g).map_err(|e| self.view_err(v, e))?;
                    if timed {
                        let revisit = if deletable && g.rows <= 0 {
                            None // gone: dropped from the store with this batch
                        } else {
                            let mut at = self.next_revisit(
                                v,
                                own.clone(),
                                Inputs {
                                    row: &[],
                                    keys: &g.key,
                                    aggs: &aggs,
                                },
                                date,
                            )?;
                            for row in &new {
                                let r =
                                    self.next_revisit(v, next.clone(), Inputs::row(row), date)?;
                                at = at.min(r);
                            }
                            Some(at)
                        };
                        if revisit != g.revisit {
                            if let Some(d) = g.revisit {
                                self.store.delete(
                                    CF_TIME,
                                    keys::group_time_key(v as u16, d, s as u8, &kb),
                                );
                            }
                            if let Some(d) = revisit {
                                self.store.put(
                                    CF_TIME,
                                    keys::group_time_key(v as u16, d, s as u8, &kb),
                                    &(),
                                );
                            }
                            g.revisit = revisit;
                        }
                    }
                    let changed = g.output.len() != new.len()
                        || g.output.iter().zip(&new).any(|(a, b)| !identical(a, b));
                    let old = std::mem::replace(&mut g.output, new.clone());
                    let key = g.key.clone();
                    self.groups.insert(gk, (g, deletable));
                    if s + 1 == stages {
                        if changed {
                            out[v].push(TargetChange { key, rows: new });
                        }
                    } else if changed || moved {
                        for row in &old {
                            self.contribute(v, s + 1, row, -1, was, &mut touched)?;
                        }
                        for row in &new {
                            self.contribute(v, s + 1, row, 1, date, &mut touched)?;
                        }
                    }
                }
            }
        }
        self.flush_groups();
        Ok(out)
    }

    /// The rows a group contributes to its stage's output now, and its finalized aggregates
    /// (none for a top-k partition or a group gone).
    fn output(
        &self,
        v: usize,
        s: usize,
        g: &GroupState,
    ) -> Result<(Vec<Vec<Value>>, Vec<Value>), EvalError> {
        let rt = &self.views[v];
        let stage = &rt.plan.stages[s];
        if g.rows <= 0 && !stage.keys.is_empty() {
            return Ok((vec![], vec![]));
        }
        if let Some(t) = &stage.topk {
            return Ok((g.members.top(t), vec![]));
        }
        let aggs = stage
            .aggs
            .iter()
            .zip(&g.accs)
            .map(|(c, a)| a.finish(c))
            .collect::<Result<Vec<_>, _>>()?;
        let input = Inputs {
            row: &[],
            keys: &g.key,
            aggs: &aggs,
        };
        let ctx = EvalCtx {
            today: rt.date,
            tz: &self.tz,
        };
        if let Some(h) = &stage.having {
            if !h.holds(input, ctx)? {
                return Ok((vec![], aggs));
            }
        }
        let row = stage
            .outputs
            .iter()
            .map(|e| e.eval(input, ctx))
            .collect::<Result<Vec<_>, _>>()?;
        Ok((vec![row], aggs))
    }

    /// The next date after `date` at which one of the view's date comparisons `comps` may flip
    /// for `input` (a source row, an inner stage's output row, or a group's key and aggregates).
    fn next_revisit(
        &self,
        v: usize,
        comps: Range<usize>,
        input: Inputs<'_>,
        date: i32,
    ) -> Result<i32, MaintainError> {
        let tz = &self.tz;
        let ctx = |today| EvalCtx { today, tz };
        let horizon = date.saturating_add(HORIZON_DAYS);
        let mut best = horizon;
        for i in comps {
            let c = &self.views[v].components[i];
            // A comparison of an input-only side with a day-only side (the usual `col >=
            // CURRENT_DATE - k`): the input side is evaluated once, the day side once per probed
            // day for all inputs (memoized); anything else is evaluated whole at each probe.
            let split = match c {
                Expr::Cmp { op, left, right }
                    if !right.reads_input() && !left.uses_current_date() =>
                {
                    Some((*op, left.eval(input, ctx(date)), right, false))
                }
                Expr::Cmp { op, left, right }
                    if !left.reads_input() && !right.uses_current_date() =>
                {
                    Some((*op, right.eval(input, ctx(date)), left, true))
                }
                _ => None,
            };
            let at = |d: i32| -> Result<Value, EvalError> {
                match &split {
                    Some((op, input_side, day_side, mirrored)) => {
                        let input_side = input_side.as_ref().map_err(Clone::clone)?;
                        let day = self.day_side(v, i, day_side, d)?;
                        Ok(if *mirrored {
                            compare(*op, &day, input_side)
                        } else {
                            compare(*op, input_side, &day)
                        })
                    }
                    None => c.eval(input, ctx(d)),
                }
            };
            let at = |d: i32| at(d).map_err(|e| self.view_err(v, e));
            let start = at(date)?;
            if identical(&[at(horizon)?], std::slice::from_ref(&start)) {
                continue;
            }
            let (mut lo, mut hi) = (date, horizon);
            while hi - lo > 1 {
                let mid = lo + (hi - lo) / 2;
                if identical(&[at(mid)?], std::slice::from_ref(&start)) {
                    lo = mid;
                } else {
                    hi = mid;
                }
            }
            best = best.min(hi);
        }
        Ok(best)
    }

    /// The day-only side of component `i` of view `v` on day `d`, computed once per day.
    fn day_side(&self, v: usize, i: usize, e: &Expr, d: i32) -> Result<Value, EvalError> {
        let mut memo = self.day_memo.borrow_mut();
        if let Some(value) = memo.get(&(v, i, d)) {
            return Ok(value.clone());
        }
        let value = e.eval(
            Inputs::row(&[]),
            EvalCtx {
                today: d,
                tz: &self.tz,
            },
        )?;
        memo.insert((v, i, d), value.clone());
        Ok(value)
    }
}

/// A group's state, taken out of this batch's groups, else the hot groups, else read from the
/// store (a free function: callers hold borrows of other fields).
fn find_group(
    groups: &mut HashMap<Vec<u8>, (GroupState, bool)>,
    hot: &mut HotGroups,
    store: &Store,
    gk: &[u8],
    stats: &mut FoldStats,
) -> Result<Option<GroupState>, StoreError> {
    if let Some(g) = groups.remove(gk).map(|(g, _)| g).or_else(|| hot.take(gk)) {
        stats.group_hits += 1;
        return Ok(Some(g));
    }
    stats.group_reads += 1;
    store.read(CF_GROUPS, gk, decode_group)
}

/// Every stage of `plan` with CURRENT_DATE folded for `today` in what rows are evaluated with.
fn bind_stages(plan: &ViewPlan, today: i32, tz: &PgTimeZone) -> Vec<Stage> {
    let ctx = EvalCtx { today, tz };
    plan.stages
        .iter()
        .map(|stage| {
            let mut b = stage.clone();
            b.filter = stage.filter.as_ref().map(|f| f.bind_today(ctx));
            b.keys = stage.keys.iter().map(|k| k.bind_today(ctx)).collect();
            for agg in &mut b.aggs {
                agg.arg = agg.arg.as_ref().map(|a| a.bind_today(ctx));
                agg.filter = agg.filter.as_ref().map(|f| f.bind_today(ctx));
            }
            b
        })
        .collect()
}

fn mark_columns(stage: &Stage, referenced: &mut [bool]) {
    if stage.input != StageInput::Inner {
        let exprs = stage.filter.iter().chain(&stage.keys).chain(
            stage
                .aggs
                .iter()
                .flat_map(|a| a.arg.iter().chain(&a.filter)),
        );
        for e in exprs {
            collect_columns(e, referenced);
        }
    }
}

fn collect_columns(e: &Expr, referenced: &mut [bool]) {
    if let Expr::Column { index, .. } = e {
        if let Some(r) = referenced.get_mut(*index) {
            *r = true;
        }
    }
    for c in e.children() {
        collect_columns(c, referenced);
    }
}

/// `a = b` flips twice as the date grows; `a <= b` and `a >= b` each flip at most once.
fn split_monotone(atom: &Expr) -> Vec<Expr> {
    match atom {
        Expr::Cmp {
            op: CmpOp::Eq | CmpOp::NotEq,
            left,
            right,
        } => vec![
            Expr::Cmp {
                op: CmpOp::LtEq,
                left: left.clone(),
                right: right.clone(),
            },
            Expr::Cmp {
                op: CmpOp::GtEq,
                left: left.clone(),
                right: right.clone(),
            },
        ],
        other => vec![other.clone()],
    }
}

/// A view's rows read out of the state a page of groups at a time, from the async side, so
/// that memory stays flat however large the view (filling a target, comparing it with the
/// state in a reconcile).
pub struct RowPages {
    view: usize,
    from: Option<Vec<u8>>,
    done: bool,
}

impl RowPages {
    /// Groups per page.
    pub const PAGE: usize = 20_000;

    pub fn of(view: usize) -> RowPages {
        RowPages {
            view,
            from: None,
            done: false,
        }
    }

    /// The next page of rows; `None` once every group was read.
    pub async fn next(
        &mut self,
        state: &StateThread<Maintainer>,
    ) -> Result<Option<Vec<Vec<Value>>>, MaintainError> {
        if self.done {
            return Ok(None);
        }
        let (v, from) = (self.view, self.from.take());
        let (rows, next) = state
            .call(move |m| m.rows_page(v, from, RowPages::PAGE))
            .await??;
        self.done = next.is_none();
        self.from = next;
        Ok(Some(rows))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn groups_written_before_revisit_dates_still_decode() {
        let v1 = GroupStateV1 {
            key: vec![Value::Int(7)],
            rows: 3,
            accs: vec![],
            members: Members::default(),
            output: vec![vec![Value::Int(7), Value::Int(3)]],
        };
        let old = decode_group(&keys::encode(&v1)).expect("a version 1 group decodes");
        assert!(identical(&old.key, &v1.key) && identical(&old.output[0], &v1.output[0]));
        assert_eq!((old.rows, old.revisit), (3, None));
        let now = GroupState {
            revisit: Some(20_000),
            ..decode_group(&keys::encode(&v1)).expect("decodes")
        };
        let again = decode_group(&keys::encode(&now)).expect("a current group decodes");
        assert_eq!(again.revisit, Some(20_000));
        assert!(
            decode_group(&[1, 2, 3]).is_err(),
            "garbage is corrupt state"
        );
    }
}
