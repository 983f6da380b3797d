//! Date changes: the clock moving forward and back, a date change that failed, windows keyed by
//! a group's day against rows filed one by one, and due rows read in parts.

use super::*;

#[test]
fn a_clock_set_back_keeps_the_groups_revisits() {
    let with = |dir: &std::path::Path, today: i32| {
        let plans = classified_with("activity.sql", ACTIVITY).plans;
        let tables: Vec<TableInfo> = seed_catalog().into_values().collect();
        let store = Store::open(dir).expect("a store in a temporary directory");
        let mut m = Maintainer::new(store, PgTimeZone::UTC, tables, plans, today);
        m.ensure_global_groups().expect("global groups");
        m
    };
    // One agent's runs, the last of them five days ahead: its group flips at +6, +7 and +8.
    let ops: Vec<Op> = (1..4)
        .map(|id| (0, 0, id, 1, 1, 0, -16 + id, Some(8), 100))
        .collect();
    let (dir, fresh_dir) = two_dirs();
    let mut m = with(dir.path(), TODAY);
    let batch = changes(&m, &ops, &mut [Default::default(), Default::default()]);
    m.apply(&batch).expect("inserts");
    // Forward two days, back one (no flip in between: the group's next revisit is the same),
    // then past its flips.
    for (lsn, day) in [TODAY + 2, TODAY + 1, TODAY + 7].into_iter().enumerate() {
        m.advance_dates(day).expect("moving the date");
        m.commit(Lsn(lsn as u64 + 1), &[], Durability::Unlogged)
            .expect("commit");
    }
    let mut fresh = with(fresh_dir.path(), TODAY + 7);
    fresh.apply(&batch).expect("inserts");
    assert_eq!(
        all_rows(&m),
        all_rows(&fresh),
        "the views after the clock's moves"
    );
}

/// A date change's parts go to RocksDB as it goes, so one whose batch failed cannot be forgotten
/// whole: the views go back to the committed date, and the parts are marked partial, so that
/// the state reopened after the error (the engine ends its round) is rebuilt, not trusted. The
/// date change's commit clears the mark, and leaves what a fresh load at the new date stores.
#[test]
fn a_failed_date_change_leaves_its_parts_marked_partial() {
    // Rows of both tables spread over the last 40 days (ages in thirds of a day).
    let ops: Vec<Op> = (0..2u8)
        .flat_map(|table| {
            (1..60).map(move |id| {
                (
                    table,
                    0,
                    id,
                    id as u8 % 5,
                    id as u8 % 4,
                    id as u8,
                    id * 2,
                    Some(id as u16),
                    100,
                )
            })
        })
        .collect();
    let (failed_dir, fresh_dir) = two_dirs();
    let dir = tempfile::tempdir().expect("a temporary directory");
    let mut live = vec![Default::default(), Default::default()];
    let mut failed = maintainer_with_dated_output(failed_dir.path());
    let batch = changes(&failed, &ops, &mut live);
    // The rows committed, then the date moved (not committed).
    let moved = |m: &mut Maintainer| {
        m.ensure_global_groups().expect("global groups");
        m.apply(&batch).expect("inserts");
        m.commit(Lsn(1), &[meta::partial(false)], Durability::Unlogged)
            .expect("commit");
        m.advance_dates(TODAY + 8).expect("moving the date");
    };
    moved(&mut failed);
    // As after an error: the engine discards what was folded since the commit, and reopens
    // the state.
    failed.discard();
    assert!(
        (0..failed.view_count()).all(|v| failed.date(v) == TODAY),
        "the views are back at the committed date"
    );
    drop(failed);
    let reopened = maintainer_with_dated_output(failed_dir.path());
    assert!(
        meta::read_partial(&reopened.store).expect("the meta"),
        "partial after the failed date change"
    );
    let mut committed = maintainer_with_dated_output(dir.path());
    moved(&mut committed);
    committed
        .commit(Lsn(2), &[meta::partial(false)], Durability::Unlogged)
        .expect("commit");
    assert!(
        !meta::read_partial(&committed.store).expect("the meta"),
        "not partial after the committed date change"
    );
    let fresh = fresh_load(fresh_dir.path(), &live, TODAY + 8);
    assert_eq!(
        all_rows(&committed),
        all_rows(&fresh),
        "the views 8 days later"
    );
}

impl Maintainer {
    /// Every view files its rows one by one, as before windows keyed by a group's day.
    fn file_rows_instead(&mut self) {
        for view in &mut self.views {
            view.file_rows_instead();
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 32, ..ProptestConfig::default() })]
    /// Windows decided by a group's day key (`view::window`: groups emptied at a midnight, no
    /// row read) write the targets that filing each row and revisiting it writes, through
    /// batches and date changes of one day, many days, and back.
    #[test]
    fn windows_keyed_by_the_group_day_match_rows_filed_one_by_one(
        steps in proptest::collection::vec((proptest::collection::vec(op(), 16..96), -3i32..40), 1..6),
    ) {
        let (keyed_dir, rows_dir) = two_dirs();
        let mut keyed = maintainer_with_dated_output(keyed_dir.path());
        let mut by_rows = maintainer_with_dated_output(rows_dir.path());
        prop_assert!(keyed.views.iter().filter(|v| v.has_keyed_windows()).count() == 3);
        by_rows.file_rows_instead();
        prop_assert!(by_rows.views.iter().all(|v| !v.has_keyed_windows()));
        let mut live = vec![Default::default(), Default::default()];
        let mut today = TODAY;
        for (n, (ops, days)) in steps.iter().enumerate() {
            let batch = changes(&keyed, ops, &mut live);
            today += days;
            step_alike(&mut keyed, &mut by_rows, &batch, today, n)?;
            prop_assert_eq!(all_rows(&keyed), all_rows(&by_rows), "after step {}", n);
        }
    }
}

/// A midnight with more due rows than one part reads its first part's rows on several threads
/// (`rows::read_rows`) and each next part's on the first thread out of views while a part
/// folds (`midnight::fold_reading`): every target change and every stored byte as one thread
/// reads and folds them.
#[test]
fn a_midnight_with_many_due_rows_reads_them_in_parts_as_one_thread_does() {
    let ops: Vec<Op> = (1..400)
        .map(|id| {
            let n = id as u16;
            let v = (id % 251) as u8;
            (
                0,
                0,
                id,
                v % 7,
                v % 5,
                v % 8,
                id % 120,
                Some(n % 4000),
                n % 5000,
            )
        })
        .collect();
    let (one_dir, many_dir) = two_dirs();
    let mut one = maintainer(one_dir.path(), 1);
    let mut many = maintainer(many_dir.path(), 2);
    let batch = changes(&one, &ops, &mut [Default::default(), Default::default()]);
    for m in [&mut one, &mut many] {
        m.apply(&batch).expect("inserts");
        m.commit(Lsn(1), &[], Durability::Unlogged).expect("commit");
    }
    let a = one
        .advance_dates(TODAY + 40)
        .expect("a date change, one thread");
    let b = many
        .advance_dates(TODAY + 40)
        .expect("a date change, two threads");
    assert!(
        many.stats().row_reads > 2 * PARALLEL_MIN_ROWS as u64,
        "enough due rows to read in parts: {}",
        many.stats().row_reads
    );
    assert_eq!(format!("{a:?}"), format!("{b:?}"));
    assert!(everything(&one) == everything(&many), "the states differ");
}
