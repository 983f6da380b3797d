//! A stage's input rows of a batch, consolidated per group before they touch its state.
//!
//! An update reaches a view as the old image retracted and the new one added, and a changed
//! inner group reaches the next stage as its old row retracted and its new one added: a pair,
//! adjacent in the stage's inputs. Where both give an aggregate the same argument, bit for bit
//! ([`identical`]: 1.5 and 1.50, or -0 and 0, are different arguments), the pair leaves that
//! aggregate's state exactly as it was, so it is not applied: a distinct count's or a
//! maximum's multiset is not searched twice for nothing. A group whose inputs all cancel so is
//! not touched at all: neither looked up, nor finalized, nor written. That is how a view skips
//! an update of columns it does not read.

use std::slice;

use crate::value::{identical, Value};

use super::GroupState;

/// One input row of a stage, evaluated and waiting for its group.
pub(in crate::maintain) struct Input {
    /// The group's key in the store (`keys::group_key`).
    pub gk: Vec<u8>,
    /// The group's key values (for a group that does not exist yet).
    pub key: Vec<Value>,
    /// The argument of each accumulator (NULL: none).
    pub args: Vec<Value>,
    pub sign: i64,
    /// The row itself, for a top-k partition's members (empty otherwise).
    pub row: Vec<Value>,
}

/// A retraction followed by an addition to the same group.
fn is_pair(a: &Input, b: &Input) -> bool {
    a.sign == -1 && b.sign == 1
}

fn same(x: &Value, y: &Value) -> bool {
    identical(slice::from_ref(x), slice::from_ref(y))
}

/// Whether the inputs of one group (`run`) leave its state as it is.
pub(super) fn cancels(run: &[Input]) -> bool {
    run.len().is_multiple_of(2)
        && run.chunks(2).all(|p| {
            is_pair(&p[0], &p[1])
                && identical(&p[0].args, &p[1].args)
                && identical(&p[0].row, &p[1].row)
        })
}

/// Folds the inputs of one group (`run`, in their order) into its state; `topk`: the stage is
/// a top-k partition (its members are the rows).
pub(super) fn fold_run(g: &mut GroupState, run: &[Input], topk: bool) {
    let mut i = 0;
    while i < run.len() {
        let a = &run[i];
        match run.get(i + 1) {
            Some(b) if is_pair(a, b) => {
                if topk && !identical(&a.row, &b.row) {
                    g.apply_member(&a.row, a.sign);
                    g.apply_member(&b.row, b.sign);
                }
                for (k, (x, y)) in a.args.iter().zip(&b.args).enumerate() {
                    if !same(x, y) {
                        g.apply_acc(k, x, a.sign);
                        g.apply_acc(k, y, b.sign);
                    }
                }
                i += 2;
            }
            _ => {
                g.add_rows(a.sign);
                if topk {
                    g.apply_member(&a.row, a.sign);
                }
                for (k, x) in a.args.iter().enumerate() {
                    g.apply_acc(k, x, a.sign);
                }
                i += 1;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::numeric::Numeric;
    use crate::plan::expr::Expr;
    use crate::plan::{AggCall, AggFunc};
    use crate::value::SqlType;

    fn sum_of(ty: SqlType) -> AggCall {
        AggCall {
            func: AggFunc::Sum,
            arg: Some(Expr::Column {
                index: 0,
                name: "x".into(),
                ty,
            }),
            filter: None,
            ty,
        }
    }

    fn input(sign: i64, x: Value) -> Input {
        Input {
            gk: vec![],
            key: vec![],
            args: vec![x],
            sign,
            row: vec![],
        }
    }

    fn num(text: &str) -> Value {
        Value::Numeric(Numeric::parse(text).expect("a numeric literal"))
    }

    /// The sum after `first` is added, then replaced by `then` in one update (a pair).
    fn replaced(call: &AggCall, first: Value, then: Value) -> (String, bool) {
        let mut g = GroupState::empty(vec![], vec![crate::ops::Acc::new(call)]);
        fold_run(&mut g, &[input(1, first.clone())], false);
        let pair = [input(-1, first), input(1, then)];
        fold_run(&mut g, &pair, false);
        let sum = g.accs[0].finish(call).expect("a sum");
        (format!("{sum:?} {}", sum.to_sql_text()), cancels(&pair))
    }

    /// Equal values written differently are different arguments: the pair is applied, and the
    /// sum takes the new scale or sign, as PostgreSQL would print it.
    #[test]
    fn pairs_cancel_only_bit_for_bit() {
        let numeric = sum_of(SqlType::Numeric);
        let (sum, cancelled) = replaced(&numeric, num("1.50"), num("1.5"));
        assert!(!cancelled && sum.ends_with("'1.5'"), "{sum}");
        let (sum, cancelled) = replaced(&numeric, num("1.50"), num("1.50"));
        assert!(cancelled && sum.ends_with("'1.50'"), "{sum}");
        let float = sum_of(SqlType::Float8);
        let (sum, cancelled) = replaced(&float, Value::Float(-0.0), Value::Float(0.0));
        assert!(!cancelled, "{sum}");
        assert_eq!(
            sum,
            replaced(&float, Value::Float(0.0), Value::Float(0.0)).0
        );
        let (sum, _) = replaced(&float, Value::Float(0.0), Value::Float(-0.0));
        assert_eq!(
            sum,
            replaced(&float, Value::Float(-0.0), Value::Float(-0.0)).0
        );
        let (sum, cancelled) = replaced(&float, Value::Float(f64::NAN), Value::Float(1.0));
        assert!(!cancelled && sum.contains("1.0"), "{sum}");
    }
}
