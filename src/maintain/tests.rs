//! The views folded on several threads change the targets and the state exactly as one thread
//! does, batch after batch and across a date change; and consolidated inputs (updates of
//! columns a view does not read, arguments an update leaves as they were) leave the views as a
//! fresh load of the same rows.

use std::str::FromStr;

use proptest::prelude::*;

use super::*;
use crate::numeric::Numeric;
use crate::pg::Lsn;
use crate::plan::fixtures::{
    classified, classified_with, classified_with_all, seed_catalog, seed_views,
};
use crate::state::keys::{ALL_CFS, CF_ROWS, CF_TIME};
use crate::state::store::KeyValue;

mod dates;
mod journal;
mod order;

const TODAY: i32 = 20_400;
const DAY_MICROS: i64 = 86_400_000_000;

/// One generated source change: table (0: agent_runs), kind (0 insert, 1 update, 2 delete, 3 an
/// update of the runtime (agent_runs) or the activity type (user_activity) alone), id, and the
/// columns' choices.
type Op = (u8, u8, i64, u8, u8, u8, i64, Option<u16>, u16);

fn maintainer(dir: &std::path::Path, threads: usize) -> Maintainer {
    maintainer_of(dir, threads, classified(&seed_views()).plans)
}

/// The seed views, one whose HAVING and select list read CURRENT_DATE, so a group's output
/// rows depend on the date they were finalized at, and whose rows flip twice (at 7 days old
/// with mv_error_summary's, again at 20): a date change that revisits a row in several views
/// must file it again in each; and one whose inner rows and outer conditions both read it, so
/// an inner group finalized early in a date change and touched again must be retracted from
/// the outer stage as of the date it was finalized at.
fn maintainer_with_dated_output(dir: &std::path::Path) -> Maintainer {
    let more = [("recent.sql", RECENT), ("windowed.sql", WINDOWED)];
    maintainer_of(dir, 2, classified_with_all(&more).plans)
}

const WINDOWED: &str = "CREATE MATERIALIZED VIEW analytics.v_windowed_agents AS
SELECT workspace_id, COUNT(*) AS agents, SUM(runs) AS runs,
       COUNT(*) FILTER (WHERE last_day >= CURRENT_DATE - 2) AS active_lately,
       COUNT(*) FILTER (WHERE recent) AS recent
  FROM (SELECT workspace_id, agent_id, MAX(DATE(started_at)) AS last_day, COUNT(*) AS runs,
               MAX(DATE(started_at)) >= CURRENT_DATE - 4 AS recent
          FROM public.agent_runs WHERE started_at >= CURRENT_DATE - 12
         GROUP BY workspace_id, agent_id) per_agent
 GROUP BY workspace_id;";

const RECENT: &str = "CREATE MATERIALIZED VIEW analytics.v_recent_agents AS
SELECT agent_id, COUNT(*) AS runs, MAX(DATE(started_at)) >= CURRENT_DATE - 3 AS recent,
       COUNT(*) FILTER (WHERE started_at >= CURRENT_DATE - 7) AS week_runs,
       COUNT(*) FILTER (WHERE started_at >= CURRENT_DATE - 20) AS runs_20_days
  FROM public.agent_runs
 GROUP BY agent_id
HAVING MAX(started_at) >= CURRENT_DATE - 40;";

fn maintainer_of(dir: &std::path::Path, threads: usize, plans: Vec<ViewPlan>) -> Maintainer {
    let tables: Vec<TableInfo> = seed_catalog().into_values().collect();
    let store = Store::open(dir).expect("a store in a temporary directory");
    let mut m = Maintainer::new(store, PgTimeZone::UTC, tables, plans, TODAY);
    m.set_threads(threads);
    m
}

/// State directories for two maintainers compared with each other.
fn two_dirs() -> (tempfile::TempDir, tempfile::TempDir) {
    let dir = || tempfile::tempdir().expect("a temporary directory");
    (dir(), dir())
}

fn uuid(kind: u8, n: u8) -> Value {
    let mut b = [0u8; 16];
    b[0] = kind;
    b[15] = n;
    Value::Uuid(b)
}

/// The row an op writes, in the seed catalog's column order.
fn row(agent_runs: bool, op: &Op) -> Vec<Value> {
    let &(_, _, id, agent, user, status, age, runtime, credits) = op;
    let at = Value::TimestampTz(TODAY as i64 * DAY_MICROS - age * (DAY_MICROS / 3));
    if !agent_runs {
        let kind = ["chat", "run", "view"][status as usize % 3];
        return vec![
            Value::Int(id),
            uuid(2, agent % 3),
            uuid(3, user),
            Value::Text(kind.into()),
            at,
        ];
    }
    let status = ["completed", "failed", "running", "cancelled"][status as usize % 4];
    let credits = Numeric::from_str(&format!("{}.{:02}", credits / 100, credits % 100))
        .expect("a numeric literal");
    vec![
        Value::Int(id),
        uuid(1, agent),
        uuid(2, agent % 3),
        uuid(3, user),
        Value::Text(status.into()),
        at,
        runtime.map_or(Value::Null, |r| Value::Float(f64::from(r) / 8.0)),
        Value::Numeric(credits),
        if status == "failed" {
            Value::Text(format!("E{}", agent % 4))
        } else {
            Value::Null
        },
    ]
}

/// The live rows of each table by id.
type Live = [std::collections::BTreeMap<i64, Vec<Value>>];

/// The ops as valid changes: an insert of a live id becomes an update, an update or delete of
/// an absent one an insert.
fn changes(m: &Maintainer, ops: &[Op], live: &mut Live) -> Vec<Change> {
    let agent_runs = m
        .tables
        .iter()
        .position(|t| t.name.name == "agent_runs")
        .expect("agent_runs in the seed catalog");
    ops.iter()
        .map(|op| {
            let table = if op.0 == 0 {
                agent_runs
            } else {
                1 - agent_runs
            };
            let mut row = row(table == agent_runs, op);
            let id = op.2;
            match (op.1, live[table].get(&id)) {
                (2, Some(_)) => {
                    live[table].remove(&id);
                    Change::Delete {
                        table,
                        key: vec![Value::Int(id)],
                    }
                }
                (kind, Some(old)) => {
                    if kind == 3 {
                        let (column, new) = (3 + 3 * usize::from(table == agent_runs), row);
                        row = old.clone();
                        row[column] = new[column].clone();
                    }
                    live[table].insert(id, row.clone());
                    Change::Update {
                        table,
                        old_key: None,
                        row,
                        unchanged: vec![],
                    }
                }
                (_, None) => {
                    live[table].insert(id, row.clone());
                    Change::Insert { table, row }
                }
            }
        })
        .collect()
}

fn everything(m: &Maintainer) -> Vec<(String, Vec<KeyValue>)> {
    ALL_CFS
        .iter()
        .map(|cf| {
            let all = m
                .store
                .scan_prefix(cf, &[], None)
                .expect("scanning the store");
            (cf.to_string(), all)
        })
        .collect()
}

fn op() -> impl Strategy<Value = Op> {
    (
        0u8..2,
        0u8..4,
        1i64..60,
        0u8..6,
        0u8..4,
        0u8..8,
        0i64..120,
        proptest::option::of(0u16..4000),
        0u16..5000,
    )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 12, ..ProptestConfig::default() })]
    #[test]
    fn views_folded_on_threads_match_one_thread(
        batches in proptest::collection::vec(proptest::collection::vec(op(), 64..160), 1..4),
        days_later in 1i32..45,
    ) {
        let (one_dir, many_dir) = two_dirs();
        let mut one = maintainer(one_dir.path(), 1);
        let mut many = maintainer(many_dir.path(), 3);
        prop_assert_eq!(
            format!("{:?}", one.ensure_global_groups().expect("global groups")),
            format!("{:?}", many.ensure_global_groups().expect("global groups"))
        );
        let mut live = vec![Default::default(), Default::default()];
        for (n, ops) in batches.iter().enumerate() {
            let batch = changes(&one, ops, &mut live);
            let a = one.apply(&batch).expect("one thread folds");
            let b = many.apply(&batch).expect("three threads fold");
            prop_assert!(a.iter().any(|v| !v.is_empty()), "the batch changed some target");
            prop_assert_eq!(format!("{a:?}"), format!("{b:?}"), "batch {}", n);
            let counts = |m: &Maintainer| FoldStats { row_pass_micros: 0, ..m.stats() };
            prop_assert_eq!(counts(&one), counts(&many));
            for m in [&mut one, &mut many] {
                m.commit(Lsn(n as u64 + 1), &[], Durability::Unlogged).expect("commit");
            }
        }
        let a = one.advance_dates(TODAY + days_later).expect("one thread moves the date");
        let b = many.advance_dates(TODAY + days_later).expect("three threads move the date");
        prop_assert_eq!(format!("{a:?}"), format!("{b:?}"), "after {} days", days_later);
        prop_assert!(everything(&one) == everything(&many), "the states differ");
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]
    #[test]
    fn consolidated_batches_leave_the_views_as_a_fresh_load(
        batches in proptest::collection::vec(proptest::collection::vec(op(), 64..160), 1..4),
        days_later in 0i32..45,
        cold in proptest::bool::ANY,
        after in proptest::collection::vec(op(), 0..64),
        more_days in 0i32..20,
    ) {
        let (dir, fresh_dir) = two_dirs();
        let mut m = maintainer_with_dated_output(dir.path());
        if cold {
            // Every group is read back from the store, its output rows computed again (at the
            // date it was finalized at, which differs within a date change: `finalize_early`).
            for view in &mut m.views {
                view.keep_no_hot_groups();
            }
        }
        // The target rows as the changes the maintainer emitted left them.
        let mut targets = Targets::of(&m);
        targets.apply(m.ensure_global_groups().expect("global groups"));
        let mut live = vec![Default::default(), Default::default()];
        for (n, ops) in batches.iter().enumerate() {
            let batch = changes(&m, ops, &mut live);
            targets.apply(m.apply(&batch).expect("folding a batch"));
            m.commit(Lsn(n as u64 + 1), &[], Durability::Unlogged).expect("commit");
        }
        targets.apply(m.advance_dates(TODAY + days_later).expect("moving the date"));
        m.commit(Lsn(10), &[], Durability::Unlogged).expect("commit");
        // Then changes to rows the date change revisited (their time-index entries as it
        // filed them again), and a second date change that depends on those entries.
        let batch = changes(&m, &after, &mut live);
        targets.apply(m.apply(&batch).expect("folding a batch after the date change"));
        m.commit(Lsn(11), &[], Durability::Unlogged).expect("commit");
        let today = TODAY + days_later + more_days;
        targets.apply(m.advance_dates(today).expect("moving the date again"));
        let fresh = fresh_load(fresh_dir.path(), &live, today);
        prop_assert_eq!(all_rows(&m), all_rows(&fresh));
        prop_assert_eq!(targets.rows(m.view_count()), all_rows(&fresh), "the targets written");
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 16, ..ProptestConfig::default() })]
    /// A bulk load ([`super::load`]) stores what inserts of the same rows store, byte for byte
    /// (row images, time index, groups), in chunks of any size and on any number of threads;
    /// and later changes and a date change find the ingested images as they find inserted ones.
    #[test]
    fn a_bulk_load_stores_what_inserts_store(
        ops in proptest::collection::vec(op(), 1..400),
        chunk in 1usize..200,
        threads in 1usize..4,
        after in proptest::collection::vec(op(), 1..64),
        days_later in 1i32..45,
    ) {
        let (dir, bulk_dir) = two_dirs();
        let mut inserted = maintainer(dir.path(), 1);
        let mut bulk = maintainer(bulk_dir.path(), threads);
        // The rows the ops leave live: a snapshot, loaded in bulk on one side and inserted on
        // the other.
        let mut live = vec![Default::default(), Default::default()];
        changes(&inserted, &ops, &mut live);
        let mut batch = Vec::new();
        for (table, rows) in live.iter().enumerate() {
            let rows: Vec<Vec<Value>> = rows.values().cloned().collect();
            for part in rows.chunks(chunk) {
                bulk.load(table, part).expect("a bulk load");
            }
            batch.extend(rows.into_iter().map(|row| Change::Insert { table, row }));
        }
        inserted.apply(&batch).expect("inserts");
        bulk.finish_load().expect("ingesting the load");
        for m in [&mut inserted, &mut bulk] {
            m.ensure_global_groups().expect("global groups");
            m.commit(Lsn(1), &[], Durability::Unlogged).expect("commit");
        }
        // Row images and time index byte for byte; groups by what they finalize to (a group's
        // record may depend on how its rows were batched, as it does between batches of the
        // stream).
        let rows_and_time = |m: &Maintainer| {
            let mut all = everything(m);
            all.retain(|(cf, _)| cf == CF_ROWS || cf == CF_TIME);
            all
        };
        prop_assert!(rows_and_time(&inserted) == rows_and_time(&bulk), "the loaded state differs");
        prop_assert_eq!(all_rows(&inserted), all_rows(&bulk));
        let batch = changes(&inserted, &after, &mut live);
        let a = inserted.apply(&batch).expect("changes after inserts");
        let b = bulk.apply(&batch).expect("changes after a bulk load");
        prop_assert_eq!(format!("{a:?}"), format!("{b:?}"));
        let a = inserted.advance_dates(TODAY + days_later).expect("a date change");
        let b = bulk.advance_dates(TODAY + days_later).expect("a date change");
        prop_assert_eq!(format!("{a:?}"), format!("{b:?}"));
        for m in [&mut inserted, &mut bulk] {
            m.commit(Lsn(2), &[], Durability::Unlogged).expect("commit");
        }
        prop_assert!(rows_and_time(&inserted) == rows_and_time(&bulk), "the states differ after changes");
        prop_assert_eq!(all_rows(&inserted), all_rows(&bulk));
    }
}

/// Target tables as the emitted changes leave them, written as the sink writes them: per view,
/// each group's rows by key; a change naming ranks replaces only the rows of those ranks.
struct Targets {
    rows: std::collections::BTreeMap<(usize, Vec<u8>), Vec<Vec<Value>>>,
    /// Per view, its rank column.
    ranks: Vec<Option<usize>>,
}

impl Targets {
    fn of(m: &Maintainer) -> Targets {
        Targets {
            rows: Default::default(),
            ranks: (0..m.view_count())
                .map(|v| m.plan(v).rank_column())
                .collect(),
        }
    }

    fn apply(&mut self, changes: Vec<Vec<TargetChange>>) {
        for (v, view) in changes.into_iter().enumerate() {
            for c in view {
                let group = self
                    .rows
                    .entry((v, keys::group_key_bytes(&c.key)))
                    .or_default();
                match (c.ranks, self.ranks[v]) {
                    (Some(ranks), Some(r)) => {
                        group.retain(|row| !ranks.contains(&row[r]));
                        group.extend(c.rows.into_iter().filter(|row| ranks.contains(&row[r])));
                        group.sort_by(|a, b| a[r].cmp(&b[r]));
                    }
                    _ => *group = c.rows,
                }
            }
        }
    }

    /// In the form and order of [`all_rows`].
    fn rows(&self, views: usize) -> String {
        let rows: Vec<Vec<Vec<Value>>> = (0..views)
            .map(|v| {
                let of_view = self.rows.range((v, vec![])..(v + 1, vec![]));
                of_view.flat_map(|(_, rows)| rows.iter().cloned()).collect()
            })
            .collect();
        format!("{rows:?}")
    }
}

/// A view whose inner groups are revisited by date (the outer stage's conditions read the
/// inner `last_day`).
const ACTIVITY: &str = "CREATE MATERIALIZED VIEW analytics.v_agent_activity AS
SELECT workspace_id,
       COUNT(*) AS agents,
       COUNT(*) FILTER (WHERE last_day >= CURRENT_DATE - 1) AS active_since_yesterday,
       SUM(runs) FILTER (WHERE last_day < CURRENT_DATE) AS runs_before_today
  FROM (SELECT workspace_id, agent_id, MAX(DATE(started_at)) AS last_day, COUNT(*) AS runs
          FROM public.agent_runs GROUP BY workspace_id, agent_id) per_agent
 WHERE last_day >= CURRENT_DATE - 2
 GROUP BY workspace_id;";

/// The views of [`maintainer_with_dated_output`] loaded afresh at `date` from the live rows.
fn fresh_load(dir: &std::path::Path, live: &Live, date: i32) -> Maintainer {
    let mut fresh = maintainer_with_dated_output(dir);
    fresh.set_dates(&vec![date; fresh.view_count()]);
    fresh.ensure_global_groups().expect("global groups");
    for (table, rows) in live.iter().enumerate() {
        let rows: Vec<Vec<Value>> = rows.values().cloned().collect();
        fresh.load(table, &rows).expect("loading the live rows");
    }
    fresh.finish_load().expect("ingesting the loaded rows");
    fresh
}

/// Every view's rows, as a fresh load at the maintainer's date would have them.
fn all_rows(m: &Maintainer) -> String {
    let rows: Vec<_> = (0..m.view_count())
        .map(|v| m.rows_page(v, None, 100_000).expect("reading rows").0)
        .collect();
    format!("{rows:?}")
}

/// One step of two maintainers that must agree: `batch` applied, then a date change to `today`,
/// each emitting the same target changes on both; then both committed at LSN `n + 1`.
fn step_alike(
    a: &mut Maintainer,
    b: &mut Maintainer,
    batch: &[Change],
    today: i32,
    n: usize,
) -> Result<(), TestCaseError> {
    let x = a.apply(batch).expect("a batch, first maintainer");
    let y = b.apply(batch).expect("a batch, second maintainer");
    prop_assert_eq!(format!("{x:?}"), format!("{y:?}"), "batch {}", n);
    let x = a
        .advance_dates(today)
        .expect("a date change, first maintainer");
    let y = b
        .advance_dates(today)
        .expect("a date change, second maintainer");
    prop_assert_eq!(
        format!("{x:?}"),
        format!("{y:?}"),
        "date change {} to {}",
        n,
        today
    );
    for m in [a, b] {
        m.commit(Lsn(n as u64 + 1), &[], Durability::Unlogged)
            .expect("commit");
    }
    Ok(())
}
