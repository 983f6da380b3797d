//! Aggregate accumulators with insert *and* retract.
//!
//! Every aggregate keeps state from which its exact result can be recomputed after any mix of
//! inserts and deletes: counts; exact sums (integers in i128, numerics as exact decimals with the
//! multiset of input scales, since PostgreSQL's result scale is the largest input scale; floats in
//! an exact superaccumulator so millions of adds and removes never drift); and counted multisets
//! (value -> multiplicity) for COUNT(DISTINCT), MIN/MAX and percentiles, which stay exact under
//! deletes where a running min or a streaming sketch cannot.

mod multiset;
pub mod rank;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

pub use multiset::Multiset;

use crate::exact_float::ExactFloatSum;
use crate::numeric::Numeric;
use crate::plan::expr::EvalError;
use crate::plan::{AggCall, AggFunc};
use crate::value::{SqlType, Value};

/// Exact sum of numerics: value, the multiset of input scales, and counts of special values.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct NumericSum {
    sum: Numeric,
    scales: BTreeMap<u32, i64>,
    nan: i64,
    pos_inf: i64,
    neg_inf: i64,
}

impl Default for NumericSum {
    fn default() -> Self {
        NumericSum {
            sum: Numeric::from_i64(0),
            scales: BTreeMap::new(),
            nan: 0,
            pos_inf: 0,
            neg_inf: 0,
        }
    }
}

impl NumericSum {
    fn apply(&mut self, n: &Numeric, sign: i64) {
        match n {
            Numeric::NaN => self.nan += sign,
            Numeric::PosInf => self.pos_inf += sign,
            Numeric::NegInf => self.neg_inf += sign,
            Numeric::Finite { dscale, .. } => {
                self.sum = if sign > 0 {
                    self.sum.add(n)
                } else {
                    self.sum.sub(n)
                };
                let e = self.scales.entry(*dscale).or_insert(0);
                *e += sign;
                if *e == 0 {
                    self.scales.remove(dscale);
                }
            }
        }
    }

    /// The sum as PostgreSQL prints it: at the largest scale among the current inputs.
    fn value(&self) -> Numeric {
        if self.nan > 0 || (self.pos_inf > 0 && self.neg_inf > 0) {
            return Numeric::NaN;
        }
        if self.pos_inf > 0 {
            return Numeric::PosInf;
        }
        if self.neg_inf > 0 {
            return Numeric::NegInf;
        }
        let scale = self.scales.keys().next_back().copied().unwrap_or(0);
        self.sum.round_to_scale(scale)
    }
}

/// The state of one aggregate in one group.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum Acc {
    Count(i64),
    IntSum { sum: i128, n: i64 },
    NumSum { sum: NumericSum, n: i64 },
    FloatSum(ExactFloatSum),
    Set(Multiset),
}

impl Acc {
    /// Fresh state for an aggregate whose argument has type `arg`.
    pub fn new(call: &AggCall) -> Acc {
        let arg = call.arg.as_ref().map(|a| a.ty()).unwrap_or(SqlType::Int8);
        match call.func {
            AggFunc::CountStar | AggFunc::Count => Acc::Count(0),
            AggFunc::Sum | AggFunc::Avg => match arg {
                SqlType::Float4 | SqlType::Float8 => Acc::FloatSum(ExactFloatSum::default()),
                SqlType::Numeric => Acc::NumSum {
                    sum: NumericSum::default(),
                    n: 0,
                },
                _ => Acc::IntSum { sum: 0, n: 0 },
            },
            _ => Acc::Set(Multiset::default()),
        }
    }

    /// Adds (`sign` = 1) or removes (`sign` = -1) one input; NULL inputs are ignored except by
    /// COUNT(*), whose caller passes a non-NULL marker.
    pub fn apply(&mut self, v: &Value, sign: i64) {
        if v.is_null() {
            return;
        }
        match (self, v) {
            (Acc::Count(c), _) => *c += sign,
            (Acc::IntSum { sum, n }, Value::Int(i)) => {
                *sum += sign as i128 * *i as i128;
                *n += sign;
            }
            (Acc::NumSum { sum, n }, Value::Numeric(x)) => {
                sum.apply(x, sign);
                *n += sign;
            }
            (Acc::FloatSum(s), Value::Float(f)) => {
                if sign > 0 {
                    s.add(*f)
                } else {
                    s.retract(*f)
                }
            }
            (Acc::Set(m), v) => m.apply(v, sign),
            (acc, v) => tracing::error!(?acc, ?v, "accumulator got a value of an unexpected type"),
        }
    }

    /// The aggregate's current result.
    pub fn finish(&self, call: &AggCall) -> Result<Value, EvalError> {
        Ok(match (self, call.func) {
            (Acc::Count(c), _) => Value::Int(*c),
            (Acc::IntSum { n: 0, .. } | Acc::NumSum { n: 0, .. }, _) => Value::Null,
            (Acc::IntSum { sum, .. }, AggFunc::Sum) if call.ty == SqlType::Int8 => {
                Value::Int(i64::try_from(*sum).map_err(|_| EvalError::OutOfRange("bigint"))?)
            }
            (Acc::IntSum { sum, .. }, AggFunc::Sum) => Value::Numeric(numeric_from_i128(*sum)),
            (Acc::IntSum { sum, n }, _) => Value::Numeric(
                Numeric::avg(&numeric_from_i128(*sum), *n)
                    .map_err(|e| EvalError::Numeric(e.to_string()))?,
            ),
            (Acc::NumSum { sum, .. }, AggFunc::Sum) => Value::Numeric(sum.value()),
            (Acc::NumSum { sum, n }, _) => Value::Numeric(
                Numeric::avg(&sum.value(), *n).map_err(|e| EvalError::Numeric(e.to_string()))?,
            ),
            (Acc::FloatSum(s), _) if s.count() == 0 => Value::Null,
            (Acc::FloatSum(s), AggFunc::Sum) => Value::Float(s.sum()),
            (Acc::FloatSum(s), _) => s.avg().map(Value::Float).unwrap_or(Value::Null),
            (Acc::Set(m), AggFunc::CountDistinct) => Value::Int(m.distinct()),
            (Acc::Set(m), AggFunc::Min) => m.min().unwrap_or(Value::Null),
            (Acc::Set(m), AggFunc::Max) => m.max().unwrap_or(Value::Null),
            (Acc::Set(m), AggFunc::PercentileCont(p)) => m
                .percentile_cont(p)
                .map(Value::Float)
                .unwrap_or(Value::Null),
            (Acc::Set(m), AggFunc::PercentileDisc(p)) => {
                m.percentile_disc(p).unwrap_or(Value::Null)
            }
            (acc, func) => {
                return Err(EvalError::Internal(format!(
                    "accumulator {acc:?} for {func:?}"
                )))
            }
        })
    }
}

/// Which accumulator each aggregate of a stage reads. Aggregates that keep the same state of
/// the same input share one: AVG(x) and SUM(x) (a sum and a count), MIN(x), MAX(x) and the
/// percentiles of x (its multiset), when their FILTERs agree too. A shared accumulator is
/// applied, stored and decoded once: mv_agent_performance's median and p95 of the runtime kept
/// two copies of the same multiset.
#[derive(Clone, Debug)]
pub struct Accumulators {
    /// Per accumulator: the first aggregate reading it (its argument and filter feed it).
    pub firsts: Vec<usize>,
    /// Per aggregate: its accumulator.
    of: Vec<usize>,
}

/// What an accumulator keeps, by aggregate function (see [`Acc::new`]).
fn state_kind(func: AggFunc) -> u8 {
    match func {
        AggFunc::CountStar | AggFunc::Count => 0,
        AggFunc::Sum | AggFunc::Avg => 1,
        _ => 2,
    }
}

impl Accumulators {
    pub fn of_stage(aggs: &[AggCall]) -> Self {
        let mut firsts: Vec<usize> = Vec::new();
        let of = aggs
            .iter()
            .enumerate()
            .map(|(i, a)| {
                let shared = firsts.iter().position(|&f| {
                    let b = &aggs[f];
                    state_kind(a.func) == state_kind(b.func)
                        && a.arg == b.arg
                        && a.filter == b.filter
                });
                shared.unwrap_or_else(|| {
                    firsts.push(i);
                    firsts.len() - 1
                })
            })
            .collect();
        Accumulators { firsts, of }
    }

    /// The accumulator aggregate `agg` reads.
    pub fn of(&self, agg: usize) -> usize {
        self.of[agg]
    }

    /// Fresh state for a group no row has reached.
    pub fn fresh(&self, aggs: &[AggCall]) -> Vec<Acc> {
        self.firsts.iter().map(|&f| Acc::new(&aggs[f])).collect()
    }

    /// Every aggregate's current result, from the accumulators' states.
    pub fn finish(&self, aggs: &[AggCall], accs: &[Acc]) -> Result<Vec<Value>, EvalError> {
        aggs.iter()
            .zip(&self.of)
            .map(|(call, &a)| match accs.get(a) {
                Some(acc) => acc.finish(call),
                None => Err(EvalError::Internal(format!(
                    "a group has {} accumulators, its stage {}",
                    accs.len(),
                    self.firsts.len()
                ))),
            })
            .collect()
    }
}

fn numeric_from_i128(v: i128) -> Numeric {
    match i64::try_from(v) {
        Ok(i) => Numeric::from_i64(i),
        Err(_) => Numeric::parse(&v.to_string()).unwrap_or(Numeric::NaN),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::expr::Expr;

    fn call(func: AggFunc, arg_ty: SqlType, ty: SqlType) -> AggCall {
        AggCall {
            func,
            arg: Some(Expr::Column {
                index: 0,
                name: "x".into(),
                ty: arg_ty,
            }),
            filter: None,
            ty,
        }
    }

    #[test]
    fn numeric_avg_uses_postgres_scale_and_forgets_retracted_scales() {
        let c = call(AggFunc::Avg, SqlType::Numeric, SqlType::Numeric);
        let mut acc = Acc::new(&c);
        for s in ["1.0000", "2.0000", "2.0000"] {
            acc.apply(&Value::Numeric(Numeric::parse(s).expect("num")), 1);
        }
        assert_eq!(
            acc.finish(&c).expect("avg").to_sql_text(),
            "'1.6666666666666667'"
        );
        let s = call(AggFunc::Sum, SqlType::Numeric, SqlType::Numeric);
        let mut sum = Acc::new(&s);
        sum.apply(&Value::Numeric(Numeric::parse("1.5").expect("num")), 1);
        sum.apply(&Value::Numeric(Numeric::parse("2.25").expect("num")), 1);
        assert_eq!(sum.finish(&s).expect("sum").to_sql_text(), "'3.75'");
        sum.apply(&Value::Numeric(Numeric::parse("2.25").expect("num")), -1);
        assert_eq!(sum.finish(&s).expect("sum").to_sql_text(), "'1.5'");
        sum.apply(&Value::Numeric(Numeric::parse("1.5").expect("num")), -1);
        assert_eq!(sum.finish(&s).expect("sum"), Value::Null);
    }

    #[test]
    fn integer_sum_and_avg_types() {
        let s = call(AggFunc::Sum, SqlType::Int4, SqlType::Int8);
        let mut acc = Acc::new(&s);
        acc.apply(&Value::Int(3), 1);
        acc.apply(&Value::Int(4), 1);
        assert_eq!(acc.finish(&s).expect("sum"), Value::Int(7));
        let a = call(AggFunc::Avg, SqlType::Int4, SqlType::Numeric);
        assert_eq!(
            acc.finish(&a).expect("avg").to_sql_text(),
            "'3.5000000000000000'"
        );
    }

    /// A stage reading x (column 0) and a flag (column 1), with aggregates that share state.
    fn sharing_stage(x: SqlType) -> Vec<AggCall> {
        let flag = Expr::Column {
            index: 1,
            name: "flag".into(),
            ty: SqlType::Bool,
        };
        let mut funcs = vec![
            AggFunc::CountStar,
            AggFunc::Count,
            AggFunc::CountDistinct,
            AggFunc::Sum,
            AggFunc::Avg,
            AggFunc::Min,
            AggFunc::Max,
            AggFunc::PercentileDisc(0.5),
        ];
        if x == SqlType::Float8 {
            funcs.extend([AggFunc::PercentileCont(0.5), AggFunc::PercentileCont(0.95)]);
        }
        let mut aggs: Vec<AggCall> = funcs.iter().map(|f| call(*f, x, x)).collect();
        aggs[0].arg = None;
        for f in [AggFunc::Sum, AggFunc::Avg, AggFunc::Max, AggFunc::Count] {
            aggs.push(AggCall {
                filter: Some(flag.clone()),
                ..call(f, x, x)
            });
        }
        aggs
    }

    /// The argument the fold passes an aggregate for a row (x, flag).
    fn argument(call: &AggCall, x: &Value, flag: bool) -> Value {
        match (&call.filter, &call.arg) {
            (Some(_), _) if !flag => Value::Null,
            (_, None) => Value::Bool(true),
            (_, Some(_)) => x.clone(),
        }
    }

    proptest::proptest! {
        /// Shared accumulators give every aggregate the result its own accumulator gives, bit
        /// for bit, over random insert/retract streams (NaN, ±Infinity, -0, NULL, numeric
        /// scales, ties in the percentiles' row choice).
        #[test]
        fn shared_accumulators_finish_as_separate_ones(
            float in proptest::bool::ANY,
            ops in proptest::collection::vec((0usize..12, proptest::bool::ANY, proptest::bool::weighted(0.6)), 1..120),
        ) {
            let (ty, values): (SqlType, Vec<Value>) = if float {
                let f = [0.0, -0.0, 1.5, 1.5, 2.25, -7.0, f64::NAN, f64::INFINITY, f64::NEG_INFINITY, 1e300, 3.0];
                (SqlType::Float8, f.iter().map(|v| Value::Float(*v)).chain([Value::Null]).collect())
            } else {
                let n = ["1.5", "1.50", "0", "-0.000", "2.25", "NaN", "Infinity", "-Infinity", "7", "1e20", "0.1"];
                (SqlType::Numeric, n.iter().map(|t| Value::Numeric(Numeric::parse(t).expect("numeric"))).chain([Value::Null]).collect())
            };
            let aggs = sharing_stage(ty);
            let shared = Accumulators::of_stage(&aggs);
            proptest::prop_assert!(shared.firsts.len() < aggs.len());
            let mut states = shared.fresh(&aggs);
            let mut separate: Vec<Acc> = aggs.iter().map(Acc::new).collect();
            let mut present: Vec<(Value, bool)> = Vec::new();
            for (pick, flag, insert) in ops {
                let ((x, flag), sign) = if insert || present.is_empty() {
                    present.push((values[pick].clone(), flag));
                    (present[present.len() - 1].clone(), 1)
                } else {
                    (present.swap_remove(pick % present.len()), -1)
                };
                for (acc, &f) in states.iter_mut().zip(&shared.firsts) {
                    acc.apply(&argument(&aggs[f], &x, flag), sign);
                }
                for (acc, c) in separate.iter_mut().zip(&aggs) {
                    acc.apply(&argument(c, &x, flag), sign);
                }
                let want = separate
                    .iter()
                    .zip(&aggs)
                    .map(|(a, c)| a.finish(c))
                    .collect::<Result<Vec<_>, _>>();
                let got = shared.finish(&aggs, &states);
                // Debug prints floats exactly (NaN, -0) and numerics with their scale.
                let (got, want) = (format!("{got:?}"), format!("{want:?}"));
                proptest::prop_assert_eq!(got, want);
            }
        }
    }

    #[test]
    fn the_seed_percentiles_share_one_multiset() {
        let aggs = sharing_stage(SqlType::Float8);
        let shared = Accumulators::of_stage(&aggs);
        // COUNT(*); COUNT(x); x's multiset (DISTINCT, MIN, MAX, the percentiles); SUM/AVG;
        // and the filtered SUM/AVG, MAX and COUNT.
        assert_eq!(shared.firsts.len(), 7, "{shared:?}");
        assert_eq!(
            shared.of[5], shared.of[9],
            "MIN(x) and PERCENTILE_CONT(0.95) share"
        );
        assert_ne!(
            shared.of[6], shared.of[12],
            "MAX(x) and MAX(x) FILTER do not"
        );
    }
}
