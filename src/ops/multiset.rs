//! Counted multisets: value -> multiplicity, in PostgreSQL's sort order.
//!
//! One structure answers COUNT(DISTINCT) (number of keys), MIN/MAX (first/last key) and the
//! ordered-set aggregates PERCENTILE_CONT/DISC (walk to the row PostgreSQL's orderedsetaggs.c would
//! pick), all exact after deletes. Percentile interpolation is PostgreSQL's float8 lerp,
//! `lo + (hi - lo) * proportion`, with the same row choice, so results match bit for bit.

use serde::de::Error as _;
use serde::{Deserialize, Deserializer, Serialize};

use crate::value::Value;

/// Distinct values in ascending order ([`Value`]'s order: 1.5 and 1.50 are one value, kept as
/// first seen), each with its multiplicity (> 0), and the sum of the multiplicities.
///
/// A sorted vector, not a B-tree: a group's multiset is decoded and encoded on every batch that
/// touches it, and a vector decodes in one allocation, already in order, where a B-tree map
/// inserted entry by entry with a comparison each; lookups are a binary search over contiguous
/// values. Its serialized form is the one the map had (a length, then value and count pairs),
/// so stored records read the same.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Multiset {
    counts: Vec<(Value, i64)>,
    total: i64,
}

impl Multiset {
    pub fn apply(&mut self, v: &Value, sign: i64) {
        self.total += sign;
        match self.counts.binary_search_by(|(k, _)| k.cmp(v)) {
            Ok(i) => {
                self.counts[i].1 += sign;
                if self.counts[i].1 <= 0 {
                    if self.counts[i].1 < 0 {
                        negative(v);
                    }
                    self.counts.remove(i);
                }
            }
            Err(i) if sign > 0 => self.counts.insert(i, (v.clone().normalized(), sign)),
            Err(_) => {
                if sign < 0 {
                    negative(v);
                }
            }
        }
    }

    pub fn distinct(&self) -> i64 {
        self.counts.len() as i64
    }

    pub fn min(&self) -> Option<&Value> {
        self.counts.first().map(|(v, _)| v)
    }

    pub fn max(&self) -> Option<&Value> {
        self.counts.last().map(|(v, _)| v)
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

fn negative(v: &Value) {
    tracing::error!(
        ?v,
        "multiset count went negative: a retraction without its insert"
    );
}

/// Reads a stored multiset, refusing one whose values are not strictly ascending or whose
/// counts are not positive (a damaged record: every lookup relies on the order).
impl<'de> Deserialize<'de> for Multiset {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        struct Stored {
            counts: Vec<(Value, i64)>,
            total: i64,
        }
        let Stored { counts, total } = Stored::deserialize(d)?;
        if counts.windows(2).any(|w| w[0].0 >= w[1].0) || counts.iter().any(|(_, c)| *c <= 0) {
            return Err(D::Error::custom(
                "a multiset's values are out of order or have a count below 1",
            ));
        }
        Ok(Multiset { counts, total })
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

    /// The representation this one replaced (a B-tree map), kept here as the reference.
    #[derive(Default, Serialize)]
    struct MapMultiset {
        counts: std::collections::BTreeMap<Value, i64>,
        total: i64,
    }

    impl MapMultiset {
        fn apply(&mut self, v: &Value, sign: i64) {
            let v = v.clone().normalized();
            let entry = self.counts.entry(v.clone()).or_insert(0);
            *entry += sign;
            if *entry <= 0 {
                self.counts.remove(&v);
            }
            self.total += sign;
        }
    }

    /// Values that collide under the order (±0, NaNs, 1.5 and 1.50) and extremes.
    fn value(kind: u8, pick: u8) -> Value {
        let floats = [
            0.0,
            -0.0,
            f64::NAN,
            -f64::NAN,
            f64::INFINITY,
            f64::NEG_INFINITY,
            1.5,
            2.0,
            1e300,
            5e-324,
        ];
        let numerics = ["1.5", "1.50", "1.500", "-2", "0", "0.00", "NaN", "Infinity"];
        match kind % 3 {
            0 => Value::Float(floats[pick as usize % floats.len()]),
            1 => Value::Numeric(
                crate::numeric::Numeric::parse(numerics[pick as usize % numerics.len()])
                    .expect("numeric literal"),
            ),
            _ => Value::Text(["a", "b", "ab", ""][pick as usize % 4].to_string()),
        }
    }

    proptest::proptest! {
        /// Over random insert and retract streams (a retraction only of a value present, as the
        /// engine guarantees), the vector answers every aggregate exactly as the map did, and
        /// writes the same bytes.
        #[test]
        fn the_vector_answers_as_the_map_did(
            kind in 0u8..3,
            ops in proptest::collection::vec((0u8..10, proptest::bool::weighted(0.6)), 1..200),
        ) {
            let mut new = Multiset::default();
            let mut old = MapMultiset::default();
            let mut present: Vec<Value> = Vec::new();
            for (pick, insert) in ops {
                let (v, sign) = if insert || present.is_empty() {
                    let v = value(kind, pick);
                    present.push(v.clone());
                    (v, 1)
                } else {
                    (present.swap_remove(pick as usize % present.len()), -1)
                };
                new.apply(&v, sign);
                old.apply(&v, sign);
                let old_keys: Vec<&Value> = old.counts.keys().collect();
                let new_keys: Vec<&Value> = new.counts.iter().map(|(v, _)| v).collect();
                // Bit for bit: which of 1.5 and 1.50 is kept matters to MIN and MAX.
                proptest::prop_assert_eq!(format!("{old_keys:?}"), format!("{new_keys:?}"));
                proptest::prop_assert_eq!(new.distinct(), old.counts.len() as i64);
                proptest::prop_assert_eq!(new.total, old.total);
                // The map's values in order, each as often as counted: PostgreSQL's sorted input.
                let flat: Vec<&Value> = old
                    .counts
                    .iter()
                    .flat_map(|(v, c)| std::iter::repeat_n(v, *c as usize))
                    .collect();
                let n = flat.len() as f64;
                for p in [0.0, 0.25, 0.5, 0.95, 1.0] {
                    let disc = new.percentile_disc(p).map(|v| format!("{v:?}"));
                    let row = (((p * n).ceil() as usize).max(1) - 1).min(flat.len().saturating_sub(1));
                    let want = flat.get(row).map(|v| format!("{v:?}"));
                    proptest::prop_assert_eq!(disc, want);
                    if kind == 0 {
                        let pos = p * (n - 1.0);
                        let want = (!flat.is_empty()).then(|| {
                            let lo = as_f64(flat[pos.floor() as usize]).expect("float");
                            let hi = as_f64(flat[pos.ceil() as usize]).expect("float");
                            if pos.ceil() > pos.floor() { lo + (hi - lo) * (pos - pos.floor()) } else { lo }
                        });
                        proptest::prop_assert_eq!(
                            new.percentile_cont(p).map(f64::to_bits),
                            want.map(f64::to_bits)
                        );
                    }
                }
                let bytes = crate::state::keys::encode_record(&new);
                proptest::prop_assert_eq!(&bytes, &crate::state::keys::encode_record(&old));
                let back: Multiset = crate::state::keys::decode_record(&bytes).expect("reads back");
                proptest::prop_assert_eq!(crate::state::keys::encode_record(&back), bytes);
            }
        }
    }

    #[test]
    fn a_damaged_order_is_refused() {
        let mut m = set(&[1.0, 2.0]);
        m.counts.swap(0, 1);
        let bytes = crate::state::keys::encode_record(&m);
        let err = crate::state::keys::decode_record::<Multiset>(&bytes).expect_err("refused");
        assert!(err.to_string().contains("out of order"), "{err}");
    }
}
