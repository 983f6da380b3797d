//! When a view's date comparisons flip: the next date at which a row, a group or an output row
//! must be revisited (see the time index in [`super::super`]'s module doc), and the stages with
//! CURRENT_DATE bound for the view's date.

use std::ops::Range;

use crate::pgtime::PgTimeZone;
use crate::plan::expr::{compare, CmpOp, EvalCtx, EvalError, Expr, Inputs};
use crate::plan::{Stage, ViewPlan};
use crate::value::{identical, Value};

use super::super::MaintainError;
use super::{ViewFold, HORIZON_DAYS};

impl ViewFold {
    /// The next date after `date` at which one of the view's date comparisons `comps` may flip
    /// for `input` (a source row, an inner stage's output row, or a group's key and aggregates).
    pub(super) fn next_revisit(
        &self,
        comps: Range<usize>,
        input: Inputs<'_>,
        date: i32,
    ) -> Result<i32, MaintainError> {
        let tz = &self.tz;
        let ctx = |today| EvalCtx { today, tz };
        let horizon = date.saturating_add(HORIZON_DAYS);
        let mut best = horizon;
        for i in comps {
            let c = &self.components[i];
            // A comparison of an input-only side with a day-only side (the usual `col >=
            // CURRENT_DATE - k`): the input side is evaluated once, the day side once per probed
            // day for all inputs (memoized); anything else is evaluated whole at each probe.
            let split = match c {
                Expr::Cmp { op, left, right }
                    if !right.reads_input() && !left.uses_current_date() =>
                {
                    Some((*op, left.eval(input, ctx(date)), right, false))
                }
                Expr::Cmp { op, left, right }
                    if !left.reads_input() && !right.uses_current_date() =>
                {
                    Some((*op, right.eval(input, ctx(date)), left, true))
                }
                _ => None,
            };
            let at = |d: i32| -> Result<Value, EvalError> {
                match &split {
                    Some((op, input_side, day_side, mirrored)) => {
                        let input_side = input_side.as_ref().map_err(Clone::clone)?;
                        let day = self.day_side(i, day_side, d)?;
                        Ok(if *mirrored {
                            compare(*op, &day, input_side)
                        } else {
                            compare(*op, input_side, &day)
                        })
                    }
                    None => c.eval(input, ctx(d)),
                }
            };
            let at = |d: i32| at(d).map_err(|e| self.err(e));
            let start = at(date)?;
            if identical(&[at(horizon)?], std::slice::from_ref(&start)) {
                continue;
            }
            let (mut lo, mut hi) = (date, horizon);
            while hi - lo > 1 {
                let mid = lo + (hi - lo) / 2;
                if identical(&[at(mid)?], std::slice::from_ref(&start)) {
                    lo = mid;
                } else {
                    hi = mid;
                }
            }
            best = best.min(hi);
        }
        Ok(best)
    }

    /// The day-only side of component `i` on day `d`, computed once per day.
    fn day_side(&self, i: usize, e: &Expr, d: i32) -> Result<Value, EvalError> {
        let mut memo = self.day_memo.borrow_mut();
        if let Some(value) = memo.get(&(i, d)) {
            return Ok(value.clone());
        }
        let ctx = EvalCtx {
            today: d,
            tz: &self.tz,
        };
        let value = e.eval(Inputs::row(&[]), ctx)?;
        memo.insert((i, d), value.clone());
        Ok(value)
    }

    /// The next revisit after `date` of a source row, if the view's first stage reads
    /// CURRENT_DATE.
    pub fn row_revisit(&self, image: &[Value], date: i32) -> Result<Option<i32>, MaintainError> {
        if self.row_components.is_empty() {
            return Ok(None);
        }
        let comps = self.row_components.clone();
        self.next_revisit(comps, Inputs::row(image), date).map(Some)
    }
}

/// Every stage of `plan` with CURRENT_DATE folded for `today` in what rows are evaluated with.
pub(super) fn bind_stages(plan: &ViewPlan, today: i32, tz: &PgTimeZone) -> Vec<Stage> {
    let ctx = EvalCtx { today, tz };
    plan.stages
        .iter()
        .map(|stage| {
            let mut b = stage.clone();
            b.filter = stage.filter.as_ref().map(|f| f.bind_today(ctx));
            b.keys = stage.keys.iter().map(|k| k.bind_today(ctx)).collect();
            for agg in &mut b.aggs {
                agg.arg = agg.arg.as_ref().map(|a| a.bind_today(ctx));
                agg.filter = agg.filter.as_ref().map(|f| f.bind_today(ctx));
            }
            b
        })
        .collect()
}

/// `a = b` flips twice as the date grows; `a <= b` and `a >= b` each flip at most once.
pub(super) fn split_monotone(atom: &Expr) -> Vec<Expr> {
    match atom {
        Expr::Cmp {
            op: CmpOp::Eq | CmpOp::NotEq,
            left,
            right,
        } => vec![
            Expr::Cmp {
                op: CmpOp::LtEq,
                left: left.clone(),
                right: right.clone(),
            },
            Expr::Cmp {
                op: CmpOp::GtEq,
                left: left.clone(),
                right: right.clone(),
            },
        ],
        other => vec![other.clone()],
    }
}
