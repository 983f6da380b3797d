//! Large groups written as the changes of a batch, not whole.
//!
//! A group is stored as one record, and a batch that changes it used to write the record whole.
//! Most groups are small (an agent's day), but a group over many inner groups grows with the
//! data: a workspace's distinct users and agents in `mv_workspace_metrics`, a workspace's
//! members in `mv_top_agents`. Almost every batch touches almost every workspace, so at 500k +
//! 500k rows those two views wrote 8 of the 10 MB of group records a 20k-change batch wrote
//! (`group_kb` in the debug log), each byte encoded, put in a memtable, flushed and compacted
//! for a handful of changed entries.
//!
//! A group whose stored record (its *base*) is at least [`POLICY`]'s bound is instead written
//! as a journal: each batch that changes it appends one entry, a [`Delta`] holding exactly the
//! accumulator, member and row-count updates the batch applied to it, in order, under the key
//! [`entry_key`] `(group, n)`, n = 0, 1, ... A reader decodes the base and replays the entries
//! in order through the same [`crate::ops::Acc::apply`] and [`crate::ops::rank::Members::apply`]
//! calls: the state it gets is the one the writer held, by construction (the same deterministic
//! updates from the same state; a multiset keeps 1.50 or 1.5 as the first one applied, in replay
//! as in the writer). When the entries would outweigh half the base, or reach [`MAX_ENTRIES`],
//! the group is written whole again and its entries deleted, in the same batch.
//!
//! What keeps this exact:
//! - every update of a group's accumulators, members or row count goes through [`GroupState`]'s
//!   methods, which record it; any other change (a keyed window's reset at midnight) calls
//!   [`GroupState::unjournaled`], and the group is then written whole;
//! - entries are numbered from 0 without gaps: a group knows how many it has (counted when read,
//!   kept while hot) and deletes all of them when written whole or dropped, so a reader reads
//!   them until the first one missing;
//! - the entries and the base move into the store in the batch's one write with its LSN (the
//!   store's crash argument: `state::store`), so a crash leaves a base and entries of one commit;
//! - `RECORD_FORMAT` 8 marks states that may hold entries: an engine that does not read them
//!   rebuilds from a snapshot rather than misread a base as the whole group.
//!
//! `tests/journal.rs` checks that views with every group journaled emit the same target changes
//! and store the same states as views with none, through batches, cold reads, discarded folds
//! and date changes.

use serde::{Deserialize, Serialize};

use crate::state::keys::{self, CF_GROUPS};
use crate::state::store::{Store, StoreError};
use crate::value::Value;

use super::groups::GroupState;
use super::view::Write;

/// When groups are journaled: from what record size, and up to what share of the base the
/// entries may grow before the group is written whole again.
#[derive(Clone, Copy, Debug)]
pub(super) struct Policy {
    /// Part of the stored format: a state written with entries for groups above one bound
    /// must not be read with a higher one (change the default only with `RECORD_FORMAT`).
    pub min_bytes: usize,
    pub max_percent: usize,
}

/// Groups of 1 kB or more are journaled; their entries may reach half their base: a cold read
/// then reads at most 1.5 times the base.
pub(super) const POLICY: Policy = Policy {
    min_bytes: 1024,
    max_percent: 50,
};

/// The most entries a group keeps before it is written whole: a reader that finds the group
/// cold reads each of them.
const MAX_ENTRIES: u32 = 32;

/// What one batch did to a journaled group, in the order it did it.
#[derive(Serialize, Deserialize, Default, Debug)]
pub(super) struct Delta {
    rows: i64,
    /// (accumulator, argument, sign) per update applied.
    accs: Vec<(u32, Value, i64)>,
    /// (member row, sign) per update of a top-k partition's members.
    members: Vec<(Vec<Value>, i64)>,
    /// The group's revisit date after the batch.
    revisit: Option<i32>,
}

impl Delta {
    pub fn add_rows(&mut self, sign: i64) {
        self.rows += sign;
    }

    pub fn acc(&mut self, i: usize, v: &Value, sign: i64) {
        self.accs.push((i as u32, v.clone(), sign));
    }

    pub fn member(&mut self, row: &[Value], sign: i64) {
        self.members.push((row.to_vec(), sign));
    }

    /// Applies the delta to the group it was taken from, as the batch did.
    fn replay(self, g: &mut GroupState) -> Result<(), StoreError> {
        g.rows += self.rows;
        for (i, v, sign) in &self.accs {
            let Some(acc) = g.accs.get_mut(*i as usize) else {
                return Err(corrupt(format!(
                    "a journal entry updates accumulator {i} of a group with {}",
                    g.accs.len()
                )));
            };
            acc.apply(v, *sign);
        }
        for (row, sign) in &self.members {
            g.members.apply(row, *sign);
        }
        g.revisit = self.revisit;
        Ok(())
    }
}

/// A group's journal: its entries in the store, and the updates not written yet.
#[derive(Default, Debug)]
pub(super) struct Journal {
    /// Entries stored after the base (numbered 0..entries) and their bytes. (Sizes in u32 and
    /// the delta boxed: a load holds hundreds of thousands of groups decoded at once.)
    entries: u32,
    bytes: u32,
    /// The stored base's size (0: none stored, or too small to journal).
    base: u32,
    /// The updates since the group was last written; `None`: not journaled (the base is not,
    /// or the group changed in a way a delta does not express).
    pending: Option<Box<Delta>>,
}

impl Journal {
    /// The journal of a group just read or written whole, whose record is `base` bytes.
    pub fn after_base(base: usize, policy: Policy) -> Journal {
        let journaled = base >= policy.min_bytes;
        Journal {
            entries: 0,
            bytes: 0,
            base: if journaled { size(base) } else { 0 },
            pending: journaled.then(Box::default),
        }
    }

    pub fn pending(&mut self) -> Option<&mut Delta> {
        self.pending.as_deref_mut()
    }

    /// The group changed in a way a delta does not express: it is written whole next.
    pub fn stop(&mut self) {
        self.pending = None;
    }

    /// The stored base's size, the group's weight among the hot groups.
    pub fn base(&self) -> usize {
        self.base as usize
    }
}

/// The key of entry `n` of group `gk` (a [`keys::group_key`]): under the view id with its top
/// bit set, outside every view's group range, so scans of groups never meet an entry.
pub(super) fn entry_key(gk: &[u8], n: u32) -> Vec<u8> {
    let mut k = Vec::with_capacity(gk.len() + 4);
    k.extend_from_slice(&(u16::from_be_bytes([gk[0], gk[1]]) | ENTRY_BIT).to_be_bytes());
    k.extend_from_slice(&gk[2..]);
    k.extend_from_slice(&n.to_be_bytes());
    k
}

/// A size in a journal's counters (a record of 4 GB or more counts as 4 GB).
fn size(bytes: usize) -> u32 {
    u32::try_from(bytes).unwrap_or(u32::MAX)
}

/// Marks journal entries among the groups (view ids stay below it: [`keys::MAX_VIEWS`]).
const ENTRY_BIT: u16 = 0x8000;

fn corrupt(detail: String) -> StoreError {
    StoreError::Corrupt {
        cf: CF_GROUPS,
        detail,
    }
}

/// Replays the stored entries of group `gk`, just decoded from a base of `base` bytes, and
/// sets its journal.
pub(super) fn read(
    store: &Store,
    gk: &[u8],
    g: &mut GroupState,
    base: usize,
    policy: Policy,
) -> Result<(), StoreError> {
    g.journal = Journal::after_base(base, policy);
    if g.journal.pending.is_none() {
        return Ok(());
    }
    loop {
        let key = entry_key(gk, g.journal.entries);
        let entry = store.read(CF_GROUPS, &key, |bytes| {
            let delta: Delta =
                keys::decode_record(bytes).map_err(|e| corrupt(format!("journal entry: {e}")))?;
            Ok((delta, bytes.len()))
        })?;
        let Some((delta, len)) = entry else {
            return Ok(());
        };
        delta.replay(g)?;
        g.journal.entries += 1;
        g.journal.bytes = g.journal.bytes.saturating_add(size(len));
    }
}

/// Writes group `g` (key `gk`) as this batch left it into `writes`: a journal entry if it is
/// journaled and its entries stay small beside the base, else the record whole with its
/// entries deleted. Returns the bytes of the record or entry written.
pub(super) fn store(
    gk: &[u8],
    g: &mut GroupState,
    policy: Policy,
    writes: &mut Vec<Write>,
) -> usize {
    if let Some(mut delta) = g.journal.pending.take() {
        delta.revisit = g.revisit;
        let bytes = keys::encode_record(&delta);
        let j = &mut g.journal;
        let len = bytes.len();
        let share = (j.bytes as usize + len).saturating_mul(100);
        let bound = (j.base as usize).saturating_mul(policy.max_percent);
        if j.entries < MAX_ENTRIES && share <= bound {
            writes.push((CF_GROUPS, entry_key(gk, j.entries), Some(bytes)));
            j.entries += 1;
            j.bytes = j.bytes.saturating_add(size(len));
            j.pending = Some(Box::default());
            return len;
        }
    }
    let record = keys::encode_record(&*g);
    let len = record.len();
    drop_entries(gk, &g.journal, writes);
    writes.push((CF_GROUPS, gk.to_vec(), Some(record)));
    g.journal = Journal::after_base(len, policy);
    len
}

/// Deletes a group's stored entries (it is written whole, or dropped).
pub(super) fn drop_entries(gk: &[u8], j: &Journal, writes: &mut Vec<Write>) {
    writes.extend((0..j.entries).map(|n| (CF_GROUPS, entry_key(gk, n), None)));
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::numeric::Numeric;
    use crate::ops::Acc;
    use crate::plan::expr::Expr;
    use crate::plan::{AggCall, AggFunc};
    use crate::value::SqlType;

    fn call(func: AggFunc, ty: SqlType) -> AggCall {
        let arg = Expr::Column {
            index: 0,
            name: "x".into(),
            ty,
        };
        AggCall {
            func,
            arg: Some(arg),
            filter: None,
            ty,
        }
    }

    fn num(text: &str) -> Value {
        Value::Numeric(Numeric::parse(text).expect("a numeric literal"))
    }

    /// Updates with the values whose representation exactness depends on (a numeric's scale,
    /// 1.50 before 1.5; NaN, infinities and -0 in a float sum and a percentile's multiset),
    /// stored as an entry and replayed on the stored base, give the state the writer held, byte
    /// for byte.
    #[test]
    fn an_entry_replayed_on_its_base_is_the_state_the_writer_held() {
        let calls = [
            call(AggFunc::Sum, SqlType::Numeric),
            call(AggFunc::Sum, SqlType::Float8),
            call(AggFunc::PercentileCont(0.5), SqlType::Float8),
            call(AggFunc::Max, SqlType::Numeric),
        ];
        let mut g = GroupState::empty(vec![], calls.iter().map(Acc::new).collect());
        let policy = Policy {
            min_bytes: 0,
            max_percent: usize::MAX,
        };
        let gk = keys::group_key(1, 0, &keys::group_key_bytes(&[]));
        let mut base = Vec::new();
        store(&gk, &mut g, policy, &mut base);
        let updates = [
            (0, num("1.50"), 1),
            (0, num("1.5"), 1),
            (3, num("2.00"), 1),
            (3, num("2"), 1),
            (3, num("2.00"), -1),
            (1, Value::Float(-0.0), 1),
            (1, Value::Float(f64::INFINITY), 1),
            (1, Value::Float(f64::NAN), 1),
            (1, Value::Float(f64::INFINITY), -1),
            (2, Value::Float(-0.0), 1),
            (2, Value::Float(0.0), 1),
            (2, Value::Float(f64::NAN), 1),
            (2, Value::Float(0.0), -1),
        ];
        for (i, v, sign) in &updates {
            g.apply_acc(*i, v, *sign);
        }
        g.add_rows(3);
        g.revisit = Some(20_500);
        let mut entry = Vec::new();
        store(&gk, &mut g, policy, &mut entry);
        assert_eq!(entry.len(), 1, "one entry, the base left alone");
        let mut stored: std::collections::BTreeMap<Vec<u8>, Vec<u8>> = base
            .into_iter()
            .chain(entry)
            .filter_map(|(_, k, v)| Some((k, v?)))
            .collect();
        let bytes = stored.remove(&gk).expect("the base");
        let mut back: GroupState = keys::decode_record(&bytes).expect("a base");
        for (_, bytes) in stored {
            let delta: Delta = keys::decode_record(&bytes).expect("an entry");
            delta.replay(&mut back).expect("replayed");
        }
        assert_eq!(keys::encode_record(&back), keys::encode_record(&g));
    }
}
