//! Counted multisets: value -> multiplicity, in PostgreSQL's sort order.
//!
//! One structure answers COUNT(DISTINCT) (number of keys), MIN/MAX (first/last key) and the
//! ordered-set aggregates PERCENTILE_CONT/DISC (walk to the row PostgreSQL's orderedsetaggs.c would
//! pick), all exact after deletes. Percentile interpolation is PostgreSQL's float8 lerp,
//! `lo + (hi - lo) * proportion`, with the same row choice, so results match bit for bit.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::value::Value;

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Multiset {
    counts: BTreeMap<Value, i64>,
    total: i64,
}

impl Multiset {
    pub fn apply(&mut self, v: &Value, sign: i64) {
        let v = v.clone().normalized();
        let entry = self.counts.entry(v.clone()).or_insert(0);
        *entry += sign;
        if *entry <= 0 {
            if *entry < 0 {
                tracing::error!(
                    ?v,
                    "multiset count went negative: a retraction without its insert"
                );
            }
            self.counts.remove(&v);
        }
        self.total += sign;
    }

    pub fn distinct(&self) -> i64 {
        self.counts.len() as i64
    }

    pub fn min(&self) -> Option<&Value> {
        self.counts.keys().next()
    }

    pub fn max(&self) -> Option<&Value> {
        self.counts.keys().next_back()
    }

    /// The value at 0-based position `row` of the sorted multiset.
    fn nth(&self, row: i64) -> Option<&Value> {
        let mut seen = 0i64;
        for (v, c) in &self.counts {
            seen += c;
            if row < seen {
                return Some(v);
            }
        }
        None
    }

    /// PERCENTILE_CONT(p) over float8 values.
    pub fn percentile_cont(&self, p: f64) -> Option<f64> {
        if self.total <= 0 {
            return None;
        }
        let pos = p * (self.total - 1) as f64;
        let first_row = pos.floor();
        let second_row = pos.ceil();
        let lo = as_f64(self.nth(first_row as i64)?)?;
        if second_row > first_row {
            let hi = as_f64(self.nth(second_row as i64)?)?;
            let proportion = pos - first_row;
            Some(lo + (hi - lo) * proportion)
        } else {
            Some(lo)
        }
    }

    /// PERCENTILE_DISC(p): the first value whose cumulative position reaches p.
    pub fn percentile_disc(&self, p: f64) -> Option<&Value> {
        if self.total <= 0 {
            return None;
        }
        let rownum = (p * self.total as f64).ceil() as i64;
        self.nth((rownum.max(1) - 1).min(self.total - 1))
    }
}

fn as_f64(v: &Value) -> Option<f64> {
    match v {
        Value::Float(f) => Some(*f),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(values: &[f64]) -> Multiset {
        let mut m = Multiset::default();
        for v in values {
            m.apply(&Value::Float(*v), 1);
        }
        m
    }

    #[test]
    fn percentiles_follow_postgres_row_choice() {
        // SELECT percentile_cont(0.5), percentile_cont(0.95), percentile_disc(0.5)
        //   FROM unnest('{1,2,3,4,10}'::float8[]) -> 3, 8.799999999999999, 3
        let m = set(&[10.0, 1.0, 3.0, 2.0, 4.0]);
        assert_eq!(m.percentile_cont(0.5), Some(3.0));
        assert_eq!(
            m.percentile_cont(0.95),
            Some(4.0 + (10.0 - 4.0) * (0.95 * 4.0 - 3.0))
        );
        assert_eq!(m.percentile_disc(0.5), Some(&Value::Float(3.0)));
        assert_eq!(m.percentile_disc(0.0), Some(&Value::Float(1.0)));
        let even = set(&[1.0, 2.0]);
        assert_eq!(even.percentile_cont(0.5), Some(1.5));
    }

    #[test]
    fn retraction_restores_exact_extremes_and_distinct_counts() {
        let mut m = set(&[5.0, 5.0, 7.0]);
        assert_eq!(m.distinct(), 2);
        m.apply(&Value::Float(7.0), -1);
        assert_eq!(m.max(), Some(&Value::Float(5.0)));
        m.apply(&Value::Float(5.0), -1);
        assert_eq!(m.distinct(), 1);
        m.apply(&Value::Float(5.0), -1);
        assert_eq!(m.min(), None);
        assert_eq!(m.percentile_cont(0.5), None);
    }
}
