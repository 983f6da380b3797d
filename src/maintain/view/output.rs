//! A group's output: the rows it contributes to its stage's output, finalized at a date.

use crate::ops::Accumulators;
use crate::plan::expr::{EvalCtx, EvalError, Inputs};
use crate::plan::Stage;
use crate::value::Value;

use super::super::groups::GroupState;
use super::super::MaintainError;
use super::ViewFold;

impl ViewFold {
    /// The rows a group contributes to stage `s`'s output now, and its finalized aggregates
    /// (none for a top-k partition or a group gone).
    pub(super) fn output(&self, s: usize, g: &GroupState) -> Result<Finalized, EvalError> {
        self.output_at(s, g, self.date)
    }

    /// The rows a group read from the store was last written with (finalized at the date the
    /// state was).
    pub(in crate::maintain) fn stored_rows(
        &self,
        s: usize,
        g: &GroupState,
    ) -> Result<Vec<Vec<Value>>, MaintainError> {
        match self.output_at(s, g, self.finalized) {
            Ok((rows, _)) => Ok(rows),
            Err(e) => Err(self.err(e)),
        }
    }

    fn output_at(&self, s: usize, g: &GroupState, date: i32) -> Result<Finalized, EvalError> {
        let ctx = EvalCtx {
            today: date,
            tz: &self.tz,
        };
        finalize(&self.plan.stages[s], &self.accumulators[s], g, ctx)
    }
}

/// A group's output rows and its aggregates' results.
pub(super) type Finalized = (Vec<Vec<Value>>, Vec<Value>);

/// A group of `stage` finalized as of `ctx`'s date: its output rows and aggregates.
pub(super) fn finalize(
    stage: &Stage,
    accumulators: &Accumulators,
    g: &GroupState,
    ctx: EvalCtx,
) -> Result<Finalized, EvalError> {
    if g.rows <= 0 && !stage.keys.is_empty() {
        return Ok((vec![], vec![]));
    }
    if let Some(t) = &stage.topk {
        return Ok((g.members.top(t), vec![]));
    }
    let aggs = accumulators.finish(&stage.aggs, &g.accs)?;
    let input = Inputs {
        row: &[],
        keys: &g.key,
        aggs: &aggs,
    };
    if let Some(h) = &stage.having {
        if !h.holds(input, ctx)? {
            return Ok((vec![], aggs));
        }
    }
    let row = stage
        .outputs
        .iter()
        .map(|e| e.eval(input, ctx))
        .collect::<Result<Vec<_>, _>>()?;
    Ok((vec![row], aggs))
}
