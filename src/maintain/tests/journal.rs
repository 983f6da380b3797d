//! Groups stored as a base and journal entries ([`crate::maintain::journal`]) against the same
//! groups written whole: the representation must not change a single target change or state.

use super::*;
use crate::maintain::groups::decode_group;
use crate::maintain::journal;

impl Maintainer {
    /// Journals every view's groups from `min_bytes` on, with entries up to `max_percent` of
    /// their base.
    fn journal_from(&mut self, min_bytes: usize, max_percent: usize) {
        for view in &mut self.views {
            view.set_journal_policy(journal::Policy {
                min_bytes,
                max_percent,
            });
        }
    }

    /// Every group of every view and stage as a reader finds it (a base and its entries
    /// replayed), encoded; and how many journal entries the store holds.
    fn groups_as_read(&self) -> (Vec<KeyValue>, usize) {
        let all = self
            .store
            .scan_prefix(CF_GROUPS, &[], None)
            .expect("scanning the groups");
        let (entries, bases): (Vec<_>, Vec<_>) = all.into_iter().partition(|(k, _)| k[0] >= 0x80);
        let groups = bases
            .into_iter()
            .map(|(gk, bytes)| {
                let mut g = decode_group(&bytes).expect("a group record");
                let policy = self.views[0].journal_policy();
                journal::read(&self.store, &gk, &mut g, bytes.len(), policy).expect("its entries");
                (gk, keys::encode_record(&g))
            })
            .collect();
        (groups, entries.len())
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 32, ..ProptestConfig::default() })]
    /// Every group journaled (bound 0; entries up to the default share of the base, or up to
    /// the most entries a group may have, whatever their size) emits the target changes and reads back the group states
    /// that no group journaled does: through batches, cold reads (every group read from its base
    /// and entries), a batch discarded after its fold, and date changes forward and back.
    #[test]
    fn journaled_groups_match_groups_written_whole(
        steps in proptest::collection::vec(
            (proptest::collection::vec(op(), 8..120), -2i32..4, proptest::bool::ANY, proptest::bool::ANY),
            2..8,
        ),
        unbounded in proptest::bool::ANY,
    ) {
        let (journaled_dir, whole_dir) = two_dirs();
        let mut journaled = maintainer_with_dated_output(journaled_dir.path());
        let mut whole = maintainer_with_dated_output(whole_dir.path());
        let share = if unbounded { usize::MAX } else { journal::POLICY.max_percent };
        journaled.journal_from(0, share);
        whole.journal_from(usize::MAX, 0);
        let mut live = vec![Default::default(), Default::default()];
        let mut today = TODAY;
        let mut entries_seen = 0;
        for (n, (ops, days, cold, discard)) in steps.iter().enumerate() {
            if *discard {
                // A fold whose batch fails afterwards: its groups and entries are forgotten.
                let mut scratch = live.clone();
                let batch = changes(&journaled, ops, &mut scratch);
                journaled.apply(&batch).expect("a batch, journaled");
                journaled.discard();
            }
            let batch = changes(&journaled, ops, &mut live);
            today += days;
            step_alike(&mut journaled, &mut whole, &batch, today, n)?;
            if *cold {
                journaled.forget_hot_groups();
                whole.forget_hot_groups();
            }
            let (a, entries) = journaled.groups_as_read();
            let (b, none) = whole.groups_as_read();
            prop_assert_eq!(none, 0, "groups written whole leave no entries");
            prop_assert!(a == b, "the groups read back differ after step {}", n);
            prop_assert_eq!(all_rows(&journaled), all_rows(&whole), "after step {}", n);
            entries_seen += entries;
        }
        prop_assert!(entries_seen > 0, "no group was journaled");
    }
}

/// A large group changed by a few rows is written as an entry of about their size, not whole;
/// once its entries would outweigh half its base, or number too many for a cold read, it is
/// written whole and its entries deleted.
#[test]
fn a_large_group_changed_a_little_writes_a_small_entry() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let mut m = maintainer(dir.path(), 1);
    let mut live = vec![Default::default(), Default::default()];
    // 250 users' runs of agent 0, in workspace 0: its mv_workspace_metrics group holds them
    // all; then one run each of agent 3, also in workspace 0 (workspace = agent % 3).
    let ops: Vec<Op> = (0..600)
        .map(|i| {
            (
                0,
                0,
                i,
                0,
                (i % 250) as u8,
                (i / 250) as u8,
                i % 100,
                None,
                i as u16,
            )
        })
        .collect();
    let batch = changes(&m, &ops, &mut live);
    m.apply(&batch).expect("the first batch");
    m.commit(Lsn(1), &[], Durability::Unlogged).expect("commit");
    let workspace_metrics = (0..m.view_count())
        .find(|&v| m.plan(v).name.name == "mv_workspace_metrics")
        .expect("the seed view");
    let bytes_of = |m: &Maintainer| m.views[workspace_metrics].stats.group_bytes;
    let whole = bytes_of(&m);
    let (_, entries) = m.groups_as_read();
    assert_eq!(entries, 0, "new groups are written whole");
    let mut written = Vec::new();
    for n in 0..40 {
        let one = vec![(0, 0, 1_000 + n, 3, 7, 1, 5, None, 3)];
        let batch = changes(&m, &one, &mut live);
        m.apply(&batch).expect("a one-row batch");
        m.commit(Lsn(2 + n as u64), &[], Durability::Unlogged)
            .expect("commit");
        written.push(bytes_of(&m));
    }
    let small = written.iter().filter(|&&b| b * 10 < whole).count();
    assert!(
        small >= 30,
        "most one-row batches write an entry: {written:?} against {whole}"
    );
    assert!(
        written.iter().any(|&b| b * 10 >= whole),
        "entries beyond half the base write the group whole again: {written:?}"
    );
    let (_, entries) = m.groups_as_read();
    assert!(
        entries < 32,
        "entries of a group written whole are deleted ({entries})"
    );
}
