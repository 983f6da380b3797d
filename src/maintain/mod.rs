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
//! and re-added at the new one; all other rows contribute the same at both dates. Where a
//! window is a function of the group's own day key (`WHERE started_at >= CURRENT_DATE - 30 ...
//! GROUP BY DATE(started_at)`), all rows of a group flip together: the group, not its rows, is
//! filed, and emptied of what the window held at that midnight (`view/window.rs` says when that
//! is proven exact).
//!
//! The same holds at every later stage, whose input rows are the output rows of the stage before
//! it (and at every stage's HAVING and select list, which read a group's key and aggregates): a
//! group whose output or whose contribution to the next stage depends on CURRENT_DATE is filed in
//! the time index under the next date at which any of those comparisons could flip. When the
//! clock passes it, the group is finalized again at the new date and its rows are retracted from
//! the next stage as they were contributed (at the old date) and added at the new one. A date
//! change thus runs like a batch: due source rows first, then each stage's changed and due
//! groups, innermost first, with no writes needed. Its due rows are read in parts, and a first
//! stage that feeds a later one is finalized between parts once it holds many groups (at the new
//! date; a group touched again is finalized again from there), so a day leaving a window is not
//! held decoded whole (`view/finalize.rs`, `finalize_early`).
//!
//! Within a batch, a stage's input rows are folded per group, sorted and consolidated (a
//! retraction and an addition that give an aggregate the same argument leave it alone: see
//! `view/inputs.rs`), and changed groups are finalized once per stage, innermost first;
//! a changed output row of one stage is a retract/insert pair for the next, and the last stage's
//! changed rows are what the sink writes.
//!
//! A batch runs in two passes. The row-level pass ([`rows`]) goes over the changes in order:
//! stored images, the rows' time index, and the images entering and leaving the views. Then
//! each view folds those images and finalizes its groups ([`view`]); views share no state they
//! write, so they fold on several threads at once ([`threads`]) and their writes are applied
//! afterwards in view order: the state, and so the crash argument of `engine::durability`, is
//! the same as with one thread (`tests.rs` checks both write the same bytes).

use std::borrow::Cow;

use thiserror::Error;

use crate::change::{Change, TargetChange};
use crate::pg::TableInfo;
use crate::pgtime::PgTimeZone;
use crate::plan::expr::{EvalError, Expr};
use crate::plan::{Stage, StageInput, ViewPlan};
use crate::state::keys::{self, CF_GROUPS};
use crate::state::meta;
use crate::state::store::{Durability, Store, StoreError};
use crate::state::{StateThread, StateThreadGone};
use crate::value::Value;

mod groups;
mod journal;
mod load;
mod midnight;
mod rows;
mod threads;
mod view;

use groups::{decode_group, HOT_GROUP_BYTES, HOT_OUTER_GROUP_BYTES};
use rows::RowDelta;
use view::ViewFold;

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

/// Batches with fewer row images than this fold their views on the calling thread: below it,
/// starting threads costs more than it saves. Tests fold a date change's parts of a few rows
/// on threads too.
const PARALLEL_MIN_ROWS: usize = if cfg!(test) { 8 } else { 64 };

/// What one batch cost the state: for `/metrics` and the debug log, so a change in the cost per
/// change shows where it comes from.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FoldStats {
    /// Source changes folded.
    pub changes: u64,
    /// Distinct groups finalized, all stages together.
    pub groups: u64,
    /// Groups a batch found decoded in memory, kept from an earlier batch (hot groups).
    pub group_hits: u64,
    /// Groups a batch looked up in the store (and decoded, if found): one batched lookup per
    /// stage of a view.
    pub group_reads: u64,
    /// Row-image lookups (every update, delete and insert).
    pub row_reads: u64,
    /// Bytes of group state written: whole records, and the journal entries of large groups
    /// (`journal`), so a group rewritten whole though it grows with the data shows here.
    pub group_bytes: u64,
    /// Microseconds of the row-level pass: the part of a fold that runs on one thread
    /// whatever `--fold-threads` says (the rest is the views' folds).
    pub row_pass_micros: u64,
}

/// A source table's size as PostgreSQL estimates it (ANALYZE): its rows (0: unknown) and each
/// column's distinct values (`None`: unknown), by column position.
#[derive(Clone, Debug, Default)]
pub struct TableStats {
    pub rows: f64,
    pub distinct: Vec<Option<f64>>,
}

/// Target rows, and the group key the next page starts from (`None`: no more).
pub type RowsPage = (Vec<Vec<Value>>, Option<Vec<u8>>);

pub struct Maintainer {
    store: Store,
    tables: Vec<TableInfo>,
    referenced: Vec<Vec<bool>>,
    table_views: Vec<Vec<usize>>,
    views: Vec<ViewFold>,
    /// How many threads fold the views of a batch.
    threads: usize,
    /// The current (or last) batch's row-level counts; the views keep theirs.
    stats: FoldStats,
    /// A bulk load under way ([`load`]).
    load: Option<load::BulkLoad>,
}

impl Maintainer {
    /// `views` and `tables` must be in a stable order (their positions are ids in the store).
    /// The views fold on as many threads as the machine has ([`Self::set_threads`]).
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
        // The hot groups' budgets are shared by the views that can use them.
        let with_outer = views.iter().filter(|p| p.stages.len() > 1).count().max(1);
        let first_bytes = HOT_GROUP_BYTES / views.len().max(1);
        let outer_bytes = HOT_OUTER_GROUP_BYTES / with_outer;
        let mut folds = Vec::new();
        for (v, plan) in views.into_iter().enumerate() {
            let table = tables
                .iter()
                .position(|t| t.name == plan.source)
                .unwrap_or(0);
            table_views[table].push(v);
            mark_columns(&plan.stages[0], &mut referenced[table]);
            for k in &tables[table].key {
                referenced[table][*k] = true;
            }
            let outer = if plan.stages.len() > 1 {
                outer_bytes
            } else {
                0
            };
            folds.push(ViewFold::new(
                v,
                plan,
                table,
                today,
                tz,
                (first_bytes, outer),
            ));
        }
        Maintainer {
            store,
            tables,
            referenced,
            table_views,
            views: folds,
            threads: crate::config::machine_cores(),
            stats: FoldStats::default(),
            load: None,
        }
    }

    /// How many threads fold the views of a batch (at least 1; more than the views is no use).
    pub fn set_threads(&mut self, threads: usize) {
        self.threads = threads.max(1);
    }

    /// The counts of the last batch folded ([`Self::apply`] or [`Self::advance_dates`]).
    pub fn stats(&self) -> FoldStats {
        let mut total = self.stats;
        for view in &self.views {
            total.groups += view.stats.groups;
            total.group_hits += view.stats.group_hits;
            total.group_reads += view.stats.group_reads;
            total.group_bytes += view.stats.group_bytes;
        }
        total
    }

    /// How long each view took to fold the last batch or date change, the groups it finalized
    /// and the group bytes it wrote, as `name=<ms>ms/<groups>g/<kB>kB` (for the debug log:
    /// which view a batch's time and memory go to).
    pub fn view_costs(&self) -> String {
        let costs: Vec<String> = (self.views.iter())
            .map(|v| {
                let (name, ms, kb) = (
                    &v.plan.name.name,
                    v.batch_cost.as_millis(),
                    v.stats.group_bytes >> 10,
                );
                format!("{name}={ms}ms/{}g/{kb}kB", v.stats.groups)
            })
            .collect();
        costs.join(" ")
    }

    /// Starts a batch's counts.
    fn begin(&mut self, changes: usize) {
        self.stats = FoldStats {
            changes: changes as u64,
            ..FoldStats::default()
        };
        for view in &mut self.views {
            view.stats = FoldStats::default();
            view.batch_cost = std::time::Duration::ZERO;
        }
    }

    pub fn store(&mut self) -> &mut Store {
        &mut self.store
    }

    pub fn table_count(&self) -> usize {
        self.tables.len()
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

    /// The views' dates as the state was last committed with (its groups finalized at them).
    pub fn set_dates(&mut self, dates: &[i32]) {
        for (view, d) in self.views.iter_mut().zip(dates) {
            view.restore_date(*d);
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

    pub fn referenced(&self, table: usize) -> &[bool] {
        &self.referenced[table]
    }

    /// The order in which to read `table`'s snapshot: the columns its views group by, most
    /// shared first, then coarsest first (fewest distinct values; ties and unknowns: first
    /// seen). Rows of a group then arrive together, so a load chunk touches each group once
    /// instead of every group once per chunk: fewer state lookups, group encodings and
    /// finalizations. A coarse column first also keeps together the groups of later stages
    /// that group by it (`mv_workspace_metrics` by workspace over its runs per agent and user).
    ///
    /// PostgreSQL sorts, and its sort costs more the more columns it compares: 5M agent_runs
    /// rows took 4.7 s by five columns, 3.1 s by one and 1.7 s unsorted. So the order stops
    /// once rows sharing its leading values number `block_rows` or fewer (`stats`: the table's
    /// rows and each column's distinct values, as estimated by ANALYZE): such a run of rows
    /// fits a load chunk, and every group within it is touched in one or two chunks. Without
    /// estimates, it keeps every column.
    pub fn load_order(&self, table: usize, stats: &TableStats, block_rows: f64) -> Vec<usize> {
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
        let distinct = |c: usize| stats.distinct.get(c).copied().flatten();
        // A stable sort keeps first-seen order among equals.
        counts.sort_by(|a, b| {
            let coarse = |c| distinct(c).unwrap_or(f64::INFINITY);
            (b.1.cmp(&a.1)).then(coarse(a.0).total_cmp(&coarse(b.0)))
        });
        let mut block = if stats.rows > 0.0 {
            stats.rows
        } else {
            f64::INFINITY
        };
        let mut order = Vec::new();
        for (c, _) in counts {
            if block <= block_rows {
                break;
            }
            order.push(c);
            block = match distinct(c) {
                Some(d) if d >= 1.0 => block / d,
                _ => f64::INFINITY,
            };
        }
        order
    }

    /// Applies a batch of changes; returns the changed target rows of each view.
    ///
    /// Two passes: the row-level one (stored images, the rows' time index) runs over the
    /// changes in order and yields each image entering or leaving; then every view folds those
    /// images and finalizes its groups, the views on up to [`Self::set_threads`] threads.
    pub fn apply(&mut self, changes: &[Change]) -> Result<Vec<Vec<TargetChange>>, MaintainError> {
        self.begin(changes.len());
        let started = std::time::Instant::now();
        let mut deltas = Vec::with_capacity(changes.len());
        let mut prefetched = self.prefetch_rows(changes)?;
        for change in changes {
            self.apply_change(change, &mut prefetched, &mut deltas)?;
        }
        self.stats.row_pass_micros = started.elapsed().as_micros() as u64;
        let dates = self.dates();
        let parallel = deltas.len() >= PARALLEL_MIN_ROWS;
        self.fold_views(&deltas, Some(&dates), parallel)
    }

    /// Every view folds `deltas` ([`threads::fold_views_then`]), then the views' writes go to
    /// the store in view order, so what is written does not depend on how many threads folded.
    fn fold_views(
        &mut self,
        deltas: &[RowDelta<'_>],
        before: Option<&[i32]>,
        parallel: bool,
    ) -> Result<Vec<Vec<TargetChange>>, MaintainError> {
        let threads = if parallel { self.threads } else { 1 };
        let no_jobs: Vec<fn()> = vec![];
        let views = &mut self.views;
        let (out, _) =
            threads::fold_views_then(views, &self.store, threads, deltas, before, no_jobs);
        self.apply_view_writes();
        out
    }

    /// Moves every view's collected writes into the store, in view order.
    fn apply_view_writes(&mut self) {
        for view in &mut self.views {
            for (cf, key, value) in view.drain_writes() {
                match value {
                    Some(bytes) => self.store.put_encoded(cf, key, bytes),
                    None => self.store.delete(cf, key),
                }
            }
        }
    }

    /// Makes sure every stage without GROUP BY has its single group (one output row even for
    /// empty input, as PostgreSQL returns); returns the resulting target changes.
    pub fn ensure_global_groups(&mut self) -> Result<Vec<Vec<TargetChange>>, MaintainError> {
        self.begin(0);
        for view in &mut self.views {
            for s in 0..view.plan.stages.len() {
                if view.plan.stages[s].keys.is_empty() {
                    view.touch(s, &keys::group_key_bytes(&[]));
                }
            }
        }
        let dates = self.dates();
        self.fold_views(&[], Some(&dates), false)
    }

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
        let view = &self.views[v];
        let mut out = Vec::with_capacity(groups.len());
        for (gk, bytes) in groups {
            let mut g = decode_group(&bytes)?;
            journal::read(&self.store, &gk, &mut g, bytes.len(), view.journal_policy())?;
            out.extend(view.stored_rows(last as usize, &g)?);
        }
        Ok((out, next))
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
        self.store.commit(&meta, durability)?;
        for view in &mut self.views {
            view.committed();
        }
        Ok(())
    }

    /// Drops the decoded groups kept across batches (after a bulk load, whose groups are not
    /// the ones the stream will touch next).
    pub fn forget_hot_groups(&mut self) {
        for view in &mut self.views {
            view.forget_hot_groups();
        }
    }

    /// Forgets everything folded since the last commit (after an error).
    pub fn discard(&mut self) {
        for view in &mut self.views {
            view.discard();
        }
        self.store.discard();
    }
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
mod tests;
