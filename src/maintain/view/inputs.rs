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

use std::ops::Range;
use std::slice;

use crate::state::keys;
use crate::value::{identical, Value};

use super::GroupState;

/// One input row of a stage, evaluated and waiting for its group: its parts, in its stage's
/// [`Queue`].
pub(in crate::maintain) struct Input<'q> {
    /// The group's key in the store (`keys::group_key`).
    pub gk: &'q [u8],
    /// The group's key values (for a group that does not exist yet).
    pub key: &'q [Value],
    /// The argument of each accumulator (NULL: none).
    pub args: &'q [Value],
    pub sign: i64,
    /// The row itself, for a top-k partition's members (empty otherwise).
    pub row: &'q [Value],
}

/// A stage's inputs not folded yet, in buffers that keep their capacity from one chunk of
/// inputs to the next: every input's key values, arguments and row in one vector of values,
/// its group key in one vector of bytes. Three vectors per input, allocated and freed, were
/// most of the allocator's share of a fold.
#[derive(Default)]
pub(in crate::maintain) struct Queue {
    entries: Vec<Entry>,
    gks: Vec<u8>,
    values: Vec<Value>,
}

/// Where one input's parts are in its [`Queue`].
struct Entry {
    gk: Range<usize>,
    key: Range<usize>,
    args: Range<usize>,
    row: Range<usize>,
    sign: i64,
}

impl Queue {
    /// Queues an input of the group of stage `stage` of view `view`: `eval` appends its key
    /// values, then its arguments, to the values and says how many key values it appended
    /// (`None`: the row is not an input of the stage). `row`: the row itself, for a top-k
    /// partition. Nothing is queued when `eval` fails or says `None`.
    pub fn push<E>(
        &mut self,
        (view, stage): (u16, u8),
        sign: i64,
        row: Option<&[Value]>,
        eval: impl FnOnce(&mut Vec<Value>) -> Result<Option<usize>, E>,
    ) -> Result<(), E> {
        let start = self.values.len();
        let keys = match eval(&mut self.values) {
            Ok(Some(keys)) => keys,
            Ok(None) => {
                self.values.truncate(start);
                return Ok(());
            }
            Err(e) => {
                self.values.truncate(start);
                return Err(e);
            }
        };
        let (key_end, args_end) = (start + keys, self.values.len());
        if let Some(row) = row {
            self.values.extend_from_slice(row);
        }
        let gk = self.gks.len();
        keys::push_group_key(&mut self.gks, view, stage, &self.values[start..key_end]);
        self.entries.push(Entry {
            gk: gk..self.gks.len(),
            key: start..key_end,
            args: key_end..args_end,
            row: args_end..self.values.len(),
            sign,
        });
        Ok(())
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// The queued inputs in the order of their group keys' bytes, each group's in the order
    /// they came.
    pub fn sorted(&self) -> Vec<Input<'_>> {
        let gks: Vec<&[u8]> = (self.entries.iter())
            .map(|e| &self.gks[e.gk.clone()])
            .collect();
        (keys::byte_order(&gks).into_iter())
            .map(|i| {
                let e = &self.entries[i];
                Input {
                    gk: gks[i],
                    key: &self.values[e.key.clone()],
                    args: &self.values[e.args.clone()],
                    sign: e.sign,
                    row: &self.values[e.row.clone()],
                }
            })
            .collect()
    }

    pub fn clear(&mut self) {
        self.entries.clear();
        self.gks.clear();
        self.values.clear();
    }
}

/// A retraction followed by an addition to the same group.
fn is_pair(a: &Input<'_>, b: &Input<'_>) -> bool {
    a.sign == -1 && b.sign == 1
}

fn same(x: &Value, y: &Value) -> bool {
    identical(slice::from_ref(x), slice::from_ref(y))
}

/// Whether the inputs of one group (`run`) leave its state as it is.
pub(super) fn cancels(run: &[Input<'_>]) -> bool {
    run.len().is_multiple_of(2)
        && run.chunks(2).all(|p| {
            is_pair(&p[0], &p[1])
                && identical(p[0].args, p[1].args)
                && identical(p[0].row, p[1].row)
        })
}

/// Folds the inputs of one group (`run`, in their order) into its state; `topk`: the stage is
/// a top-k partition (its members are the rows).
pub(super) fn fold_run(g: &mut GroupState, run: &[Input<'_>], topk: bool) {
    let mut i = 0;
    while i < run.len() {
        let a = &run[i];
        match run.get(i + 1) {
            Some(b) if is_pair(a, b) => {
                if topk && !identical(a.row, b.row) {
                    g.apply_member(a.row, a.sign);
                    g.apply_member(b.row, b.sign);
                }
                for (k, (x, y)) in a.args.iter().zip(b.args).enumerate() {
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
                    g.apply_member(a.row, a.sign);
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

    /// A queue of inputs of one group, each with one argument.
    fn queue(inputs: &[(i64, Value)]) -> Queue {
        let mut q = Queue::default();
        for (sign, x) in inputs {
            let arg = |values: &mut Vec<Value>| {
                values.push(x.clone());
                Ok::<_, ()>(Some(0))
            };
            q.push((0, 0), *sign, None, arg).expect("queued");
        }
        q
    }

    fn num(text: &str) -> Value {
        Value::Numeric(Numeric::parse(text).expect("a numeric literal"))
    }

    /// The sum after `first` is added, then replaced by `then` in one update (a pair).
    fn replaced(call: &AggCall, first: Value, then: Value) -> (String, bool) {
        let mut g = GroupState::empty(vec![], vec![crate::ops::Acc::new(call)]);
        fold_run(&mut g, &queue(&[(1, first.clone())]).sorted(), false);
        let pair = queue(&[(-1, first), (1, then)]);
        let pair = pair.sorted();
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
