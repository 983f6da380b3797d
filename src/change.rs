//! What flows between the pipeline's stages: a source row's [`Change`] from the stream to the
//! maintainer, and a view's [`TargetChange`] from the maintainer to the sink. Neither end owns them, so neither imports the other.

use crate::value::{identical, Value};

/// One change of a source row, columns in the table's attribute order.
#[derive(Clone, Debug)]
pub enum Change {
    Insert {
        table: usize,
        row: Vec<Value>,
    },
    /// `old_key` is present when the key changed; `unchanged` lists TOASTed columns not sent.
    Update {
        table: usize,
        old_key: Option<Vec<Value>>,
        row: Vec<Value>,
        unchanged: Vec<usize>,
    },
    Delete {
        table: usize,
        key: Vec<Value>,
    },
    Truncate {
        table: usize,
    },
}

/// A changed group of a view's last stage: its key (in key order) and its rows now.
#[derive(Clone, Debug, PartialEq)]
pub struct TargetChange {
    pub key: Vec<Value>,
    /// The group's rows now: none (gone), one (an aggregate group) or up to k (a top-k partition).
    pub rows: Vec<Vec<Value>>,
    /// For a top-k partition whose target has the rank column: the ranks whose row changed,
    /// appeared or went. The sink rewrites only those rows: one agent's new run re-ranks a
    /// row or two of its workspace, not all k. `None`: the whole group is rewritten.
    pub ranks: Option<Vec<Value>>,
}

impl TargetChange {
    /// A change that rewrites the whole group.
    pub fn whole(key: Vec<Value>, rows: Vec<Vec<Value>>) -> TargetChange {
        TargetChange {
            key,
            rows,
            ranks: None,
        }
    }

    /// A group whose rows went from `old` to `new`. A top-k partition (`rank`: its rank column)
    /// with a key free of NULLs changes only the ranks whose row differs (bit for bit); a NULL
    /// key is matched by the whole group's delete only.
    pub fn of_group(
        key: Vec<Value>,
        old: &[Vec<Value>],
        new: Vec<Vec<Value>>,
        rank: Option<usize>,
    ) -> TargetChange {
        let Some(r) = rank.filter(|_| key.iter().all(|k| !k.is_null())) else {
            return TargetChange::whole(key, new);
        };
        let at = |rows: &[Vec<Value>], rank: &Value| rows.iter().position(|row| &row[r] == rank);
        let mut ranks: Vec<Value> = old.iter().chain(&new).map(|row| row[r].clone()).collect();
        ranks.sort();
        ranks.dedup();
        ranks.retain(|rank| match (at(old, rank), at(&new, rank)) {
            (Some(o), Some(n)) => !identical(&old[o], &new[n]),
            _ => true,
        });
        TargetChange {
            key,
            rows: new,
            ranks: Some(ranks),
        }
    }

    /// This change followed by a `later` one of the same group (parts of one transaction):
    /// the later rows, and every rank either of them changed.
    pub fn then(self, later: TargetChange) -> TargetChange {
        let ranks = match (self.ranks, later.ranks) {
            (Some(mut ours), Some(theirs)) => {
                ours.extend(theirs);
                ours.sort();
                ours.dedup();
                Some(ours)
            }
            _ => None,
        };
        TargetChange { ranks, ..later }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::numeric::Numeric;

    fn row(agent: i64, runs: i64, rank: i64) -> Vec<Value> {
        vec![Value::Int(agent), Value::Int(runs), Value::Int(rank)]
    }

    #[test]
    fn a_ranked_group_names_the_ranks_whose_row_changed() {
        let old = vec![row(7, 9, 1), row(8, 5, 2), row(9, 4, 3)];
        // Agent 9 passes agent 8; rank 1 is the same row; a fourth agent appears.
        let new = vec![row(7, 9, 1), row(9, 6, 2), row(8, 5, 3), row(4, 1, 4)];
        let c = TargetChange::of_group(vec![Value::Int(1)], &old, new.clone(), Some(2));
        let ranks = [2, 3, 4].map(Value::Int).to_vec();
        assert_eq!(c.ranks, Some(ranks));
        assert_eq!(c.rows, new);
        // Shrinking: the ranks that went are named too.
        let c = TargetChange::of_group(vec![Value::Int(1)], &old, vec![row(7, 9, 1)], Some(2));
        assert_eq!(c.ranks, Some([2, 3].map(Value::Int).to_vec()));
        // 1.5 and 1.50 print differently: a rank whose row changed only in scale is rewritten.
        let scaled = |s: &str| {
            vec![
                Value::Numeric(Numeric::parse(s).expect("numeric")),
                Value::Int(1),
            ]
        };
        let c = TargetChange::of_group(vec![], &[scaled("1.5")], vec![scaled("1.50")], Some(1));
        assert_eq!(c.ranks, Some(vec![Value::Int(1)]));
    }

    #[test]
    fn a_null_key_or_an_unranked_view_rewrites_the_whole_group() {
        let old = vec![row(7, 9, 1)];
        let c = TargetChange::of_group(vec![Value::Null], &old, vec![row(7, 10, 1)], Some(2));
        assert_eq!(c.ranks, None);
        let c = TargetChange::of_group(vec![Value::Int(1)], &old, vec![row(7, 10, 1)], None);
        assert_eq!(c.ranks, None);
    }

    #[test]
    fn parts_of_one_transaction_add_up_their_ranks() {
        let key = vec![Value::Int(1)];
        let first = TargetChange::of_group(
            key.clone(),
            &[row(7, 9, 1), row(8, 5, 2)],
            vec![row(7, 9, 1), row(8, 6, 2)],
            Some(2),
        );
        let later = TargetChange::of_group(
            key.clone(),
            &[row(7, 9, 1), row(8, 6, 2)],
            vec![row(7, 10, 1), row(8, 6, 2)],
            Some(2),
        );
        let both = first.clone().then(later.clone());
        assert_eq!(both.ranks, Some([1, 2].map(Value::Int).to_vec()));
        assert_eq!(both.rows, later.rows);
        let whole = TargetChange::whole(key, vec![row(7, 11, 1)]);
        assert_eq!(first.then(whole).ranks, None);
    }
}
