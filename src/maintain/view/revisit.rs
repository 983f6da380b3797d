//! When a view's date comparisons flip: the next date at which a row, a group or an output row
//! must be revisited (see the time index in [`super::super`]'s module doc), and the stages with
//! CURRENT_DATE bound for the view's date.

use std::borrow::Cow;
use std::cell::RefCell;
use std::ops::Range;
use std::sync::atomic::{AtomicU64, Ordering};

use rustc_hash::FxHashMap as HashMap;

use crate::pgtime::PgTimeZone;
use crate::plan::expr::{compare, CmpOp, EvalCtx, EvalError, Expr, Inputs};
use crate::plan::{Stage, ViewPlan};
use crate::value::{identical, Value};

use super::super::MaintainError;
use super::{ViewFold, HORIZON_DAYS};

thread_local! {
    /// Day-only sides of temporal comparisons by (fold, component, day). Per thread, not per
    /// fold: the initial load computes the revisits of one view's rows on several threads at
    /// once (`maintain::load`), and a memo shared between them would be locked a dozen times
    /// per row. A fold's number is never reused, so an entry is never read for another plan.
    static DAY_MEMO: RefCell<HashMap<(u64, usize, i32), Value>> = RefCell::new(HashMap::default());
}

/// Per component of a view, its day side on each day from the view's date on (`None`: the
/// component is not split): see [`ViewFold::sides`].
pub(super) type DaySides = Vec<Option<Vec<Result<Value, EvalError>>>>;

/// A comparison of an input-only side with a day-only side (the usual `col >= CURRENT_DATE -
/// k`): its operator, the input side, the day side, and whether the day side is on the left.
/// The input side is evaluated once per input, the day side once per probed day for all inputs;
/// anything else is evaluated whole at each probe.
pub(super) fn split_sides(c: &Expr) -> Option<(CmpOp, &Expr, &Expr, bool)> {
    match c {
        Expr::Cmp { op, left, right } if !right.reads_input() && !left.uses_current_date() => {
            Some((*op, left, right, false))
        }
        Expr::Cmp { op, left, right } if !left.reads_input() && !right.uses_current_date() => {
            Some((*op, right, left, true))
        }
        _ => None,
    }
}

static MEMO_IDS: AtomicU64 = AtomicU64::new(0);

/// A fresh number for a fold's entries in [`DAY_MEMO`].
pub(super) fn next_memo_id() -> u64 {
    MEMO_IDS.fetch_add(1, Ordering::Relaxed)
}

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
        // At the view's own date, the day sides of every probed day are in a table.
        let table = (date == self.date).then(|| self.day_sides.get_or_init(|| self.sides()));
        let mut best = horizon;
        for i in comps {
            let c = &self.components[i];
            let split = self.split(i).map(|(op, input_side, day_side, mirrored)| {
                (op, input_side.eval(input, ctx(date)), day_side, mirrored)
            });
            let sides = table.and_then(|t| t[i].as_deref());
            let at = |d: i32| -> Result<Value, EvalError> {
                match &split {
                    Some((op, input_side, day_side, mirrored)) => {
                        let input_side = input_side.as_ref().map_err(Clone::clone)?;
                        let day = self.day_side_on(i, day_side, d, sides)?;
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

    /// Component `i` as [`split_sides`] splits it, from the side found once per view.
    pub(super) fn split(&self, i: usize) -> Option<(CmpOp, &Expr, &Expr, bool)> {
        match (self.splits[i], &self.components[i]) {
            (Some(false), Expr::Cmp { op, left, right }) => Some((*op, left, right, false)),
            (Some(true), Expr::Cmp { op, left, right }) => Some((*op, right, left, true)),
            _ => None,
        }
    }

    /// Per component split into an input side and a day side: the day side on each day from
    /// the view's date to its horizon. Built once per date (4,097 evaluations a component),
    /// it makes a row's revisit a dozen comparisons with values at hand; through the memo, a
    /// dozen hash lookups and copies of the value were most of the initial load's row pass.
    pub(super) fn sides(&self) -> DaySides {
        let tz = &self.tz;
        (0..self.components.len())
            .map(|i| {
                let (_, _, day_side, _) = self.split(i)?;
                let days = self.date..=self.date.saturating_add(HORIZON_DAYS);
                Some(
                    days.map(|today| day_side.eval(Inputs::row(&[]), EvalCtx { today, tz }))
                        .collect(),
                )
            })
            .collect()
    }

    /// Component `i`'s day side `e` on day `d`: from `sides` (its column of the day-sides table
    /// of the view's date, [`Self::sides`]) when `d` lies in it, else [`Self::day_side`].
    pub(super) fn day_side_on<'t>(
        &self,
        i: usize,
        e: &Expr,
        d: i32,
        sides: Option<&'t [Result<Value, EvalError>]>,
    ) -> Result<Cow<'t, Value>, EvalError> {
        let cached = sides.and_then(|s| s.get(usize::try_from(d - self.date).ok()?));
        match cached {
            Some(side) => side.as_ref().map(Cow::Borrowed).map_err(Clone::clone),
            None => self.day_side(i, e, d).map(Cow::Owned),
        }
    }

    /// The day-only side of component `i` on day `d`, computed once per day and thread.
    pub(super) fn day_side(&self, i: usize, e: &Expr, d: i32) -> Result<Value, EvalError> {
        DAY_MEMO.with(|memo| {
            let key = (self.memo_id, i, d);
            if let Some(value) = memo.borrow().get(&key) {
                return Ok(value.clone());
            }
            let ctx = EvalCtx {
                today: d,
                tz: &self.tz,
            };
            let value = e.eval(Inputs::row(&[]), ctx)?;
            memo.borrow_mut().insert(key, value.clone());
            Ok(value)
        })
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
