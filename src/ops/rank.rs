//! The state of a top-k partition: the multiset of its input rows, and ROW_NUMBER over them.
//!
//! Partitions are small (the agents of one workspace), so the rows are kept as a vector with
//! multiplicities and sorted when the partition changes. Order follows PostgreSQL: ASC puts NULLs
//! last and DESC first unless NULLS FIRST/LAST says otherwise; rows equal in every ORDER BY key are
//! numbered in full-row order so results are deterministic (PostgreSQL leaves that order
//! unspecified, so views should break ties explicitly, e.g. by agent_id).

use std::cmp::Ordering;

use serde::{Deserialize, Serialize};

use crate::plan::topk::TopK;
use crate::value::Value;

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Members {
    rows: Vec<(Vec<Value>, i64)>,
}

impl Members {
    pub fn apply(&mut self, row: &[Value], sign: i64) {
        match self.rows.iter_mut().position(|(r, _)| r.as_slice() == row) {
            Some(i) => {
                self.rows[i].1 += sign;
                if self.rows[i].1 <= 0 {
                    self.rows.swap_remove(i);
                }
            }
            None if sign > 0 => self.rows.push((row.to_vec(), sign)),
            None => tracing::error!("top-k retraction of a row that is not there"),
        }
    }

    /// The first `limit` rows in rank order, projected to the stage's outputs.
    pub fn top(&self, t: &TopK) -> Vec<Vec<Value>> {
        let mut sorted: Vec<&(Vec<Value>, i64)> = self.rows.iter().collect();
        sorted.sort_by(|a, b| compare(&a.0, &b.0, t).then_with(|| a.0.cmp(&b.0)));
        let mut out = Vec::new();
        'rows: for (row, count) in sorted {
            for _ in 0..*count {
                if out.len() as i64 >= t.limit {
                    break 'rows;
                }
                let rank = out.len() as i64 + 1;
                out.push(
                    t.outputs
                        .iter()
                        .map(|o| match o {
                            Some(i) => row.get(*i).cloned().unwrap_or(Value::Null),
                            None => Value::Int(rank),
                        })
                        .collect(),
                );
            }
        }
        out
    }
}

fn compare(a: &[Value], b: &[Value], t: &TopK) -> Ordering {
    for (col, desc, nulls_first) in &t.order {
        let (x, y) = (
            a.get(*col).unwrap_or(&Value::Null),
            b.get(*col).unwrap_or(&Value::Null),
        );
        let ord = match (x.is_null(), y.is_null()) {
            (true, true) => Ordering::Equal,
            (true, false) => {
                if *nulls_first {
                    Ordering::Less
                } else {
                    Ordering::Greater
                }
            }
            (false, true) => {
                if *nulls_first {
                    Ordering::Greater
                } else {
                    Ordering::Less
                }
            }
            (false, false) => {
                let o = x.cmp(y);
                if *desc {
                    o.reverse()
                } else {
                    o
                }
            }
        };
        if ord != Ordering::Equal {
            return ord;
        }
    }
    Ordering::Equal
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranks_by_count_desc_then_name_and_keeps_k() {
        let t = TopK {
            partition: vec![0],
            order: vec![(2, true, true), (1, false, false)],
            limit: 2,
            outputs: vec![Some(1), None],
        };
        let mut m = Members::default();
        let row = |agent: &str, n: i64| {
            vec![
                Value::Text("w".into()),
                Value::Text(agent.into()),
                Value::Int(n),
            ]
        };
        m.apply(&row("b", 5), 1);
        m.apply(&row("a", 5), 1);
        m.apply(&row("c", 9), 1);
        let top = m.top(&t);
        assert_eq!(
            top,
            vec![
                vec![Value::Text("c".into()), Value::Int(1)],
                vec![Value::Text("a".into()), Value::Int(2)]
            ]
        );
        m.apply(&row("c", 9), -1);
        m.apply(&row("c", 1), 1);
        assert_eq!(m.top(&t)[1], vec![Value::Text("b".into()), Value::Int(2)]);
    }
}
