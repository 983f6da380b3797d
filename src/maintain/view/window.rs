//! Windows on days that a group's own day key decides: `WHERE started_at >= CURRENT_DATE - 30`
//! in a view that groups by `DATE(started_at)`.
//!
//! Every row of such a group has the same local date `d`, so the window holds for all of its
//! rows or for none, and it leaves them all on the same midnight. The group, not each row, is
//! then what the time index files: at that midnight the group is emptied of what its rows stop
//! contributing ([`Effect`]), with no row read. That is exact only when four things are proven
//! here, once per view; otherwise the view's rows are filed one by one as before:
//!
//! 1. The comparison is `col >= day side` (or `day side <= col`) on a bare column of type
//!    date, timestamp or timestamptz: as the date grows its day side does not decrease, so it
//!    only ever flips from true to false ("leaving").
//! 2. The stage groups by `DATE(col)` (or by `col`, a date), evaluated in the same zone.
//! 3. The day side is whole days from CURRENT_DATE (`± n`, `± interval` without a time part,
//!    casts): on every date it is a local midnight. In a zone whose offset changes never touch
//!    a midnight ([`PgTimeZone::midnights_are_clean`]), `col >= midnight of day e` holds
//!    exactly when `DATE(col) >= e`, so a group of day `d` is inside while `d >= e`.
//! 4. The comparison appears only where leaving means "contributes nothing": a conjunct of
//!    WHERE (the row leaves the group, so the group empties), or a conjunct of an aggregate's
//!    FILTER or of the only WHEN of a `CASE` argument without ELSE (the argument becomes NULL,
//!    which no accumulator counts, so that accumulator returns to its empty state).
//!
//! Rows changed after the midnight are evaluated at the new date, so they contribute nothing to
//! what was emptied, as the emptied state says. A clock set back revisits every row of the
//! view, as for any temporal view; emptying applies only when the date moves forward.

use std::ops::Range;

use crate::ops::{Acc, Accumulators};
use crate::pgtime::{PgTimeZone, CLEAN_MIDNIGHTS_FROM, USECS_PER_DAY};
use crate::plan::expr::{ArithOp, CmpOp, EvalError, Expr};
use crate::plan::Stage;
use crate::value::{SqlType, Value};

use super::super::groups::GroupState;
use super::super::MaintainError;
use super::revisit::first_change;
use super::{ViewFold, HORIZON_DAYS};

/// A window of a view's first stage decided by a group's day key.
pub(super) struct KeyedWindow {
    /// Its comparison among the view's components.
    component: usize,
    /// The position of `DATE(col)` among the stage's keys.
    key: usize,
    /// What a group's rows stop contributing when the window leaves their day.
    effects: Vec<Effect>,
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Effect {
    /// A WHERE conjunct: the rows leave the group, which empties.
    Leaves,
    /// An aggregate's FILTER or CASE: this accumulator gets NULL from every row.
    Resets(usize),
}

/// The view's windows decided by its first stage's day key, if every comparison with
/// CURRENT_DATE that its rows are evaluated with (`row` among `components`) is one; otherwise
/// none, and the rows are filed one by one.
pub(super) fn keyed_windows(
    stage: &Stage,
    components: &[Expr],
    row: Range<usize>,
    accumulators: &Accumulators,
    tz: &PgTimeZone,
) -> Vec<KeyedWindow> {
    windows(stage, components, row, accumulators, tz).unwrap_or_default()
}

fn windows(
    stage: &Stage,
    components: &[Expr],
    row: Range<usize>,
    accumulators: &Accumulators,
    tz: &PgTimeZone,
) -> Option<Vec<KeyedWindow>> {
    if row.is_empty() || stage.topk.is_some() || stage.keys.iter().any(Expr::uses_current_date) {
        return None;
    }
    let mut found = Vec::new();
    for i in row {
        let (column, ty, day_side) = leaving_on_column(&components[i])?;
        let zone_ok = ty != SqlType::TimestampTz || tz.midnights_are_clean();
        if !zone_ok || day_side.ty() != ty || !whole_days(day_side) {
            return None;
        }
        let key = stage.keys.iter().position(|k| is_day_of(k, column))?;
        found.push(KeyedWindow {
            component: i,
            key,
            effects: Vec::new(),
        });
    }
    // Every use of CURRENT_DATE must be one of the windows, where leaving means "nothing".
    let mut place = |conjunct: &Expr, effect: Effect| -> Option<()> {
        match found
            .iter_mut()
            .find(|w| components[w.component] == *conjunct)
        {
            Some(w) => w.effects.push(effect),
            None if conjunct.uses_current_date() => return None,
            None => {}
        }
        Some(())
    };
    if let Some(filter) = &stage.filter {
        for c in conjuncts(filter) {
            place(c, Effect::Leaves)?;
        }
    }
    for (j, agg) in stage.aggs.iter().enumerate() {
        let acc = Effect::Resets(accumulators.of(j));
        for c in agg.filter.iter().flat_map(conjuncts) {
            place(c, acc)?;
        }
        match &agg.arg {
            Some(arg) if arg.uses_current_date() => {
                let cond = only_when(arg)?;
                for c in conjuncts(cond) {
                    place(c, acc)?;
                }
            }
            _ => {}
        }
    }
    found.iter().all(|w| !w.effects.is_empty()).then_some(found)
}

/// `col >= side` or `side <= col` with `side` free of input columns: the column, its type and
/// the side.
fn leaving_on_column(c: &Expr) -> Option<(usize, SqlType, &Expr)> {
    let (col, side) = match c {
        Expr::Cmp {
            op: CmpOp::GtEq,
            left,
            right,
        } => (left, right),
        Expr::Cmp {
            op: CmpOp::LtEq,
            left,
            right,
        } => (right, left),
        _ => return None,
    };
    match (col.as_ref(), side.reads_input()) {
        (Expr::Column { index, ty, .. }, false)
            if matches!(
                ty,
                SqlType::Date | SqlType::Timestamp | SqlType::TimestampTz
            ) =>
        {
            Some((*index, *ty, side))
        }
        _ => None,
    }
}

/// Whether `e` is a local midnight on every date: CURRENT_DATE plus or minus whole days or
/// months, through casts between date, timestamp and timestamptz.
fn whole_days(e: &Expr) -> bool {
    let from_days = |e: &Expr| matches!(e.ty(), SqlType::Date | SqlType::Timestamp);
    match e {
        Expr::CurrentDate => true,
        Expr::Arith {
            op: ArithOp::Add | ArithOp::Sub,
            left,
            right,
            ..
        } => {
            let whole = match right.as_ref() {
                Expr::Literal {
                    value: Value::Int(_),
                    ..
                } => left.ty() == SqlType::Date,
                Expr::Literal {
                    value: Value::Interval(iv),
                    ..
                } => iv.micros == 0,
                _ => false,
            };
            whole && from_days(left) && whole_days(left)
        }
        Expr::Cast {
            expr,
            to: SqlType::Date | SqlType::Timestamp | SqlType::TimestampTz,
            scale: None,
        } => from_days(expr) && whole_days(expr),
        _ => false,
    }
}

/// Whether the group key `k` is the local date of input column `column` (or the column, a date).
fn is_day_of(k: &Expr, column: usize) -> bool {
    match k {
        Expr::Column { index, ty, .. } => *index == column && *ty == SqlType::Date,
        Expr::Cast {
            expr,
            to: SqlType::Date,
            scale: None,
        } => matches!(expr.as_ref(), Expr::Column { index, ty, .. }
            if *index == column && matches!(ty, SqlType::Timestamp | SqlType::TimestampTz)),
        _ => false,
    }
}

fn conjuncts(e: &Expr) -> Vec<&Expr> {
    match e {
        Expr::And(parts) => parts.iter().flat_map(conjuncts).collect(),
        other => vec![other],
    }
}

/// The condition of `CASE WHEN cond THEN x END` (or `ELSE NULL`) whose `x` does not read
/// CURRENT_DATE.
fn only_when(arg: &Expr) -> Option<&Expr> {
    match arg {
        Expr::Case {
            whens, otherwise, ..
        } if whens.len() == 1 && !whens[0].1.uses_current_date() => {
            let null_else = match otherwise.as_deref() {
                None => true,
                Some(Expr::Literal { value, .. }) => value.is_null(),
                Some(_) => false,
            };
            null_else.then_some(&whens[0].0)
        }
        _ => None,
    }
}

impl ViewFold {
    /// Whether the view's first stage has windows its groups' day keys decide.
    pub(in crate::maintain) fn has_keyed_windows(&self) -> bool {
        !self.keyed.is_empty()
    }

    /// Files the rows one by one for the windows as well (as views whose windows the key does
    /// not decide): what the keyed windows are checked against.
    #[cfg(test)]
    pub(in crate::maintain) fn file_rows_instead(&mut self) {
        if let (Some(a), Some(b)) = (self.keyed.first(), self.keyed.last()) {
            self.row_components = a.component..b.component + 1;
        }
        self.keyed.clear();
    }

    /// The first day inside window `w` at date `t`: its day side's local date. From the view's
    /// date to its horizon it is read from the table built with the day sides
    /// ([`Self::first_days`]): a group's revisit probes a dozen days per window, and in a zone
    /// with transitions each probe was a search of chrono-tz's table.
    fn first_day(&self, w: &KeyedWindow, t: i32) -> Result<i32, MaintainError> {
        let sides = self.day_sides.get_or_init(|| self.sides());
        let known = sides.get(w.component).and_then(Option::as_ref);
        let at = usize::try_from(t - self.date).ok();
        if let Some(day) = known.and_then(|s| s.first_days.as_ref()?.get(at?)) {
            return Ok(*day);
        }
        let Some((_, _, day_side, _)) = self.split(w.component) else {
            return Err(self.err(EvalError::Internal("a keyed window is not split".into())));
        };
        let value = self
            .day_side_on(w.component, day_side, t, known.map(|s| s.values.as_slice()))
            .map_err(|e| self.err(e))?;
        self.local_midnight(&value).ok_or_else(|| {
            self.err(EvalError::Internal(format!(
                "{} is not a local midnight from 1970 on at date {t}: the window cannot be \
                 decided by the group's day",
                value.to_sql_text()
            )))
        })
    }

    /// Per day from the view's date to its horizon, the first day inside a keyed window whose
    /// day sides are `values` ([`Self::first_day`]); `None` if any of them is not a local
    /// midnight (`first_day` then reports which).
    pub(super) fn first_days(&self, values: &[Result<Value, EvalError>]) -> Option<Vec<i32>> {
        (values.iter())
            .map(|v| v.as_ref().ok().and_then(|v| self.local_midnight(v)))
            .collect()
    }

    /// Whether component `i` is a keyed window's comparison.
    pub(super) fn is_keyed_component(&self, i: usize) -> bool {
        self.keyed.iter().any(|w| w.component == i)
    }

    /// The day whose local midnight `value` is (a date is its own), if it is one from
    /// [`CLEAN_MIDNIGHTS_FROM`] on.
    fn local_midnight(&self, value: &Value) -> Option<i32> {
        match *value {
            Value::Date(d) => Some(d),
            Value::Timestamp(ts) => {
                (ts.rem_euclid(USECS_PER_DAY) == 0).then(|| ts.div_euclid(USECS_PER_DAY) as i32)
            }
            Value::TimestampTz(ts) => {
                let local = self.tz.utc_to_local(ts);
                let day = local.div_euclid(USECS_PER_DAY) as i32;
                (local.rem_euclid(USECS_PER_DAY) == 0 && day >= CLEAN_MIDNIGHTS_FROM).then_some(day)
            }
            _ => None,
        }
    }

    /// The day of a group's window key (`None`: NULL, whose rows no window ever holds).
    fn key_day(&self, w: &KeyedWindow, key: &[Value]) -> Result<Option<i32>, MaintainError> {
        match key.get(w.key) {
            Some(Value::Date(d)) => Ok(Some(*d)),
            Some(Value::Null) => Ok(None),
            other => Err(self.err(EvalError::Internal(format!(
                "a window's day key is {other:?}"
            )))),
        }
    }

    /// The next date after `date` at which one of the windows leaves the day of a group with
    /// key `key` (the horizon if none does before it).
    pub(super) fn keyed_revisit(&self, key: &[Value], date: i32) -> Result<i32, MaintainError> {
        let horizon = date.saturating_add(HORIZON_DAYS);
        let mut best = horizon;
        for w in &self.keyed {
            let Some(d) = self.key_day(w, key)? else {
                continue;
            };
            if d < self.first_day(w, date)? || d >= self.first_day(w, horizon)? {
                continue;
            }
            let flip = first_change(date, horizon, |mid| {
                self.first_day(w, mid).map(|first| d >= first)
            })?;
            best = best.min(flip);
        }
        Ok(best)
    }

    /// Empties a first-stage group of what its rows stop contributing as the date moves
    /// forward from `was` to `self.date`: the windows that held its day at `was` and no longer
    /// do.
    pub(super) fn expire(&self, g: &mut GroupState, was: i32) -> Result<(), MaintainError> {
        let date = self.date;
        if date <= was {
            return Ok(());
        }
        let aggs = &self.plan.stages[0].aggs;
        for w in &self.keyed {
            let Some(d) = self.key_day(w, &g.key)? else {
                continue;
            };
            if d < self.first_day(w, was)? || d >= self.first_day(w, date)? {
                continue;
            }
            let g = g.unjournaled();
            for effect in &w.effects {
                match *effect {
                    Effect::Leaves => {
                        g.rows = 0;
                        g.accs = self.accumulators[0].fresh(aggs);
                    }
                    Effect::Resets(a) => {
                        let first = self.accumulators[0].firsts[a];
                        let Some(acc) = g.accs.get_mut(a) else {
                            let e = format!("a group has {} accumulators", g.accs.len());
                            return Err(self.err(EvalError::Internal(e)));
                        };
                        *acc = Acc::new(&aggs[first]);
                    }
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::fixtures::{classified, classified_with, seed_views};

    /// Per view, whether its windows are keyed by its groups' day, in `zone`.
    fn keyed(plans: Vec<crate::plan::ViewPlan>, zone: &str) -> Vec<(String, bool)> {
        let tz = PgTimeZone::parse(zone).expect("a zone");
        plans
            .into_iter()
            .map(|plan| {
                let name = plan.name.name.clone();
                let fold = ViewFold::new(0, plan, 0, 20_400, tz, (0, 0));
                (name, fold.has_keyed_windows())
            })
            .collect()
    }

    #[test]
    fn the_seed_views_grouped_by_their_window_day_are_keyed() {
        let seed = |zone| keyed(classified(&seed_views()).plans, zone);
        let expected = [
            ("mv_active_users", true),
            ("mv_agent_performance", true),
            ("mv_error_summary", true),
            ("mv_top_agents", false),
            ("mv_workspace_metrics", false),
        ];
        let expected: Vec<(String, bool)> =
            expected.iter().map(|(n, k)| (n.to_string(), *k)).collect();
        assert_eq!(seed("UTC"), expected);
        assert_eq!(seed("America/New_York"), expected);
        // Its DST began at midnight until 2019: every view keeps per-row revisits.
        assert!(seed("America/Sao_Paulo").iter().all(|(_, k)| !k));
    }

    /// A keyed window's first day, read from the table built with the day sides, is the day
    /// side evaluated at that date and taken to its local day, on every day the table covers
    /// and beyond it, in zones with and without transitions.
    #[test]
    fn a_windows_first_day_from_the_table_is_its_day_side_at_that_date() {
        let today = 20_400;
        for zone in [
            "UTC",
            "America/New_York",
            "Australia/Lord_Howe",
            "Asia/Kolkata",
        ] {
            let tz = PgTimeZone::parse(zone).expect("a zone");
            for plan in classified(&seed_views()).plans {
                let fold = ViewFold::new(0, plan, 0, today, tz, (0, 0));
                for w in &fold.keyed {
                    let (_, _, day_side, _) = fold.split(w.component).expect("split");
                    let tabled = (fold.sides()[w.component].as_ref())
                        .and_then(|s| s.first_days.as_ref())
                        .map_or(0, Vec::len);
                    assert_eq!(tabled, HORIZON_DAYS as usize + 1, "{zone}");
                    for t in (today - 3..today + HORIZON_DAYS + 3)
                        .step_by(7)
                        .chain([today])
                    {
                        let ctx = crate::plan::expr::EvalCtx { today: t, tz: &tz };
                        let side = day_side.eval(crate::plan::expr::Inputs::row(&[]), ctx);
                        let want = fold.local_midnight(&side.expect("a day side"));
                        assert_eq!(fold.first_day(w, t).ok(), want, "{zone} at {t}");
                    }
                }
            }
        }
    }

    /// Each of these breaks one of the four conditions of the module doc.
    #[test]
    fn windows_the_day_key_does_not_decide_are_filed_per_row() {
        let view = |select: &str, filter: &str| {
            format!(
                "CREATE MATERIALIZED VIEW analytics.v AS SELECT agent_id, DATE(started_at) AS d, \
                 {select} FROM public.agent_runs WHERE {filter} GROUP BY agent_id, DATE(started_at);"
            )
        };
        let whole = "started_at >= CURRENT_DATE - 7";
        let cases = [
            ("COUNT(*)", "started_at > CURRENT_DATE - 7"),
            ("COUNT(*)", "started_at < CURRENT_DATE - 7"),
            ("COUNT(*)", "started_at >= CURRENT_DATE - INTERVAL '36 hours'"),
            ("COUNT(*)", "NOT (started_at >= CURRENT_DATE - 7)"),
            ("COUNT(*)", "started_at >= CURRENT_DATE - 7 OR status = 'failed'"),
            ("COUNT(*) FILTER (WHERE NOT (started_at >= CURRENT_DATE - 1))", whole),
            ("SUM(CASE WHEN started_at >= CURRENT_DATE - 1 THEN 1 ELSE 0 END)", whole),
            ("COUNT(CASE WHEN started_at >= CURRENT_DATE - 1 THEN started_at >= CURRENT_DATE - 2 END)", whole),
        ];
        for (select, filter) in cases {
            let plans = classified_with("v.sql", &view(select, filter)).plans;
            let (name, k) = keyed(plans, "UTC").pop().expect("the view");
            assert_eq!(name, "v");
            assert!(!k, "{select} WHERE {filter}");
        }
        let by_agent = "CREATE MATERIALIZED VIEW analytics.v AS SELECT agent_id, COUNT(*) \
                        FROM public.agent_runs WHERE started_at >= CURRENT_DATE - 7 GROUP BY agent_id;";
        let plans = classified_with("v.sql", by_agent).plans;
        assert_eq!(keyed(plans, "UTC").pop(), Some(("v".to_string(), false)));
        let plans = classified_with("v.sql", &view(
            "COUNT(*) FILTER (WHERE started_at >= CURRENT_DATE - 1 AND status = 'failed'), \
             COUNT(DISTINCT CASE WHEN started_at >= CURRENT_DATE - INTERVAL '1 month' THEN user_id END)",
            "status <> 'queued' AND started_at >= (CURRENT_DATE - 7)::timestamptz",
        ))
        .plans;
        assert_eq!(keyed(plans, "UTC").pop(), Some(("v".to_string(), true)));
    }
}
