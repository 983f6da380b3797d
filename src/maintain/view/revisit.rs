//! When a view's date comparisons flip: the next date at which a row, a group or an output row
//! must be revisited (see the time index in [`super::super`]'s module doc), and the stages with
//! CURRENT_DATE bound for the view's date.

use std::borrow::Cow;
use std::cell::RefCell;
use std::convert::Infallible;
use std::ops::Range;
use std::sync::atomic::{AtomicU64, Ordering};

use rustc_hash::FxHashMap as HashMap;

use crate::pgtime::PgTimeZone;
use crate::plan::expr::{compare, holds, CmpOp, EvalCtx, EvalError, Expr, Inputs};
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
pub(super) type DaySides = Vec<Option<Sides>>;

/// A split component's day side on each day from the view's date to its horizon.
pub(super) struct Sides {
    pub values: Vec<Result<Value, EvalError>>,
    /// The same days as integers when every one is a value of one integer-ordered type (dates,
    /// timestamps, integers: [`as_int`]), the usual case: a row's flip is then found by
    /// comparing integers, not values.
    ints: Option<(u8, Vec<i64>)>,
    /// For a keyed window's comparison, the first day inside the window on each of these days
    /// (`window`'s `first_day`).
    pub first_days: Option<Vec<i32>>,
}

impl Sides {
    fn new(values: Vec<Result<Value, EvalError>>) -> Sides {
        let int = |v: &Result<Value, EvalError>| v.as_ref().ok().and_then(as_int);
        let ints = values.first().and_then(int).and_then(|(kind, _)| {
            let days = (values.iter())
                .map(|v| int(v).filter(|(k, _)| *k == kind).map(|(_, day)| day))
                .collect::<Option<Vec<i64>>>()?;
            Some((kind, days))
        });
        Sides {
            values,
            ints,
            first_days: None,
        }
    }
}

/// A value of a type whose values of one kind order as integers (what `Value`'s order does
/// within each of these variants), as its kind and integer.
fn as_int(v: &Value) -> Option<(u8, i64)> {
    match v {
        Value::Int(i) => Some((0, *i)),
        Value::Date(d) => Some((1, i64::from(*d))),
        Value::Timestamp(t) => Some((2, *t)),
        Value::TimestampTz(t) => Some((3, *t)),
        _ => None,
    }
}

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
        self.next_revisit_by(comps, input, date, true)
    }

    /// [`Self::next_revisit`], with integer day sides compared as integers where `typed` (the
    /// engine's way; the tests compare both ways).
    fn next_revisit_by(
        &self,
        comps: Range<usize>,
        input: Inputs<'_>,
        date: i32,
        typed: bool,
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
            let sides = table.and_then(|t| t[i].as_ref());
            if let (true, Some((op, Ok(value), _, mirrored)), Some((kind, days))) =
                (typed, &split, sides.and_then(|s| s.ints.as_ref()))
            {
                match as_int(value) {
                    // NULL compares as NULL on every day: it never flips.
                    None if value.is_null() => continue,
                    Some((k, x)) if k == *kind => {
                        if let Some(flip) = int_flip(*op, x, days, *mirrored) {
                            best = best.min(date.saturating_add(flip));
                        }
                        continue;
                    }
                    _ => {}
                }
            }
            let sides = sides.map(|s| s.values.as_slice());
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
            let same = |d: i32| at(d).map(|v| identical(&[v], std::slice::from_ref(&start)));
            if same(horizon)? {
                continue;
            }
            best = best.min(first_change(date, horizon, same)?);
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
                let mut sides = Sides::new(
                    days.map(|today| day_side.eval(Inputs::row(&[]), EvalCtx { today, tz }))
                        .collect(),
                );
                if self.is_keyed_component(i) {
                    sides.first_days = self.first_days(&sides.values);
                }
                Some(sides)
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

/// The day offset at which `x op day` (`day op x` if `mirrored`) first reads otherwise than on
/// day 0, over the integer day sides `days` (day 0 to the horizon); `None` if it reads the same
/// at the horizon. Searched by [`first_change`], as [`ViewFold::next_revisit`] searches over
/// values, so both probe the same days and find the same one.
fn int_flip(op: CmpOp, x: i64, days: &[i64], mirrored: bool) -> Option<i32> {
    let at = |k: i32| {
        let day = days[k as usize];
        holds(op, if mirrored { day.cmp(&x) } else { x.cmp(&day) })
    };
    let last = i32::try_from(days.len().checked_sub(1)?).ok()?;
    let start = at(0);
    if at(last) == start {
        return None;
    }
    let Ok(flip) = first_change(0, last, |k| Ok::<bool, Infallible>(at(k) == start));
    Some(flip)
}

/// The first day in `(lo, hi]` on which a condition no longer reads as on `lo`, given that it
/// reads otherwise on `hi` (`same(d)`: whether it reads on `d` as on `lo`). A bisection: for a
/// condition that changes once as the date grows, the day it changes. Every revisit is
/// searched with it (over values, over integers, by a group's day).
pub(super) fn first_change<E>(
    mut lo: i32,
    mut hi: i32,
    mut same: impl FnMut(i32) -> Result<bool, E>,
) -> Result<i32, E> {
    while hi - lo > 1 {
        let mid = lo + (hi - lo) / 2;
        if same(mid)? {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    Ok(hi)
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

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::plan::fixtures::{classified_with, seed_catalog};

    /// Windows of every shape a day side takes: a date cast to a timestamp with time zone, a
    /// timestamp (date minus an interval), a date on the left, and an equality (split in two).
    const VIEW: &str = "CREATE MATERIALIZED VIEW analytics.v AS SELECT agent_id, COUNT(*) AS n,
        COUNT(*) FILTER (WHERE started_at < CURRENT_DATE - INTERVAL '36 hours') AS older,
        COUNT(*) FILTER (WHERE CURRENT_DATE - 3 <= DATE(started_at)) AS recent,
        COUNT(*) FILTER (WHERE DATE(started_at) = CURRENT_DATE - 2) AS that_day
      FROM public.agent_runs WHERE started_at >= CURRENT_DATE - 7 GROUP BY agent_id;";

    const DAY: i64 = 86_400_000_000;
    const TODAY: i32 = 20_400;

    fn fold(zone: &str) -> ViewFold {
        let plan = classified_with("v.sql", VIEW)
            .plans
            .into_iter()
            .find(|p| p.name.name == "v")
            .expect("the view plans");
        let tz = PgTimeZone::parse(zone).expect("a zone");
        ViewFold::new(0, plan, 0, TODAY, tz, (0, 0))
    }

    /// An agent_runs row started at `micros` (NULL: `None`), every other column NULL.
    fn run(started: Option<i64>) -> Vec<Value> {
        let runs = (seed_catalog().into_values())
            .find(|t| t.name.name == "agent_runs")
            .expect("the seed catalog has agent_runs");
        let at = (runs.columns.iter())
            .position(|c| c.name == "started_at")
            .expect("agent_runs.started_at");
        let mut row = vec![Value::Null; runs.columns.len()];
        row[at] = started.map_or(Value::Null, Value::TimestampTz);
        row
    }

    #[test]
    fn every_window_of_the_view_compares_as_integers() {
        let f = fold("UTC");
        let sides = f.sides();
        let split: Vec<&Sides> = sides.iter().flatten().collect();
        assert_eq!(
            split.len(),
            f.row_components.len(),
            "every component is split"
        );
        assert!(split.iter().all(|s| s.ints.is_some()));
    }

    proptest! {
        /// The flip found over integers is the one found over values, for times around the
        /// view's date, far from it, at the ends of the range (the infinities) and NULL, in
        /// zones with and without daylight saving.
        #[test]
        fn a_rows_revisit_over_integers_is_its_revisit_over_values(
            zone in prop::sample::select(vec!["UTC", "America/Chicago", "Asia/Kolkata", "America/Sao_Paulo"]),
            started in prop_oneof![
                (-40 * DAY..10 * DAY).prop_map(|d| Some(i64::from(TODAY) * DAY + d)),
                any::<i64>().prop_map(Some),
                Just(Some(i64::MIN)),
                Just(Some(i64::MAX)),
                Just(None),
            ],
        ) {
            let f = fold(zone);
            let row = run(started);
            let comps = f.row_components.clone();
            let typed = f.next_revisit_by(comps.clone(), Inputs::row(&row), TODAY, true);
            let by_value = f.next_revisit_by(comps, Inputs::row(&row), TODAY, false);
            prop_assert_eq!(typed.map_err(|e| e.to_string()), by_value.map_err(|e| e.to_string()));
        }
    }
}
