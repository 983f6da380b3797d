//! Typed scalar expressions and their evaluation with PostgreSQL semantics.
//!
//! The planner resolves every implicit coercion PostgreSQL would apply (integer to numeric, date
//! to timestamptz at local midnight, an untyped literal to its context's type) into explicit
//! [`Expr::Cast`] nodes, so evaluation never guesses: each operator sees operands of the types it
//! was planned for. Three-valued logic, integer truncation, numeric scales and time-zone rules
//! follow PostgreSQL; errors PostgreSQL would raise (division by zero, out of range) are errors
//! here too.
//!
//! The tree and its walks live here; [`Expr::eval`] in `eval`, the operators it applies in
//! `operators`, conversions in `cast`, the printed form in `display`.

mod cast;
mod display;
mod eval;
mod operators;

pub use cast::cast;
pub use operators::{compare, holds};

use std::fmt;

use thiserror::Error;

use crate::pgtime::PgTimeZone;
use crate::value::{SqlType, Value};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ArithOp {
    Add,
    Sub,
    Mul,
    Div,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CmpOp {
    Eq,
    NotEq,
    Lt,
    LtEq,
    Gt,
    GtEq,
}

/// A typed expression. `Column` reads the stage's input row, `GroupKey` and `Agg` read a group's
/// key and finalized aggregates (only after aggregation).
#[derive(Clone, Debug, PartialEq)]
pub enum Expr {
    Column {
        index: usize,
        name: String,
        ty: SqlType,
    },
    GroupKey {
        index: usize,
        ty: SqlType,
    },
    Agg {
        index: usize,
        ty: SqlType,
    },
    Literal {
        value: Value,
        ty: SqlType,
    },
    CurrentDate,
    Arith {
        op: ArithOp,
        left: Box<Expr>,
        right: Box<Expr>,
        ty: SqlType,
    },
    Neg {
        expr: Box<Expr>,
        ty: SqlType,
    },
    Cmp {
        op: CmpOp,
        left: Box<Expr>,
        right: Box<Expr>,
    },
    And(Vec<Expr>),
    Or(Vec<Expr>),
    Not(Box<Expr>),
    IsNull {
        expr: Box<Expr>,
        negated: bool,
    },
    InList {
        expr: Box<Expr>,
        list: Vec<Expr>,
        negated: bool,
    },
    Case {
        whens: Vec<(Expr, Expr)>,
        otherwise: Option<Box<Expr>>,
        ty: SqlType,
    },
    Coalesce {
        args: Vec<Expr>,
        ty: SqlType,
    },
    /// A conversion; `scale` is the typmod scale of `numeric(p, s)`.
    Cast {
        expr: Box<Expr>,
        to: SqlType,
        scale: Option<u32>,
    },
    DateTrunc {
        unit: String,
        expr: Box<Expr>,
        ty: SqlType,
    },
}

/// What evaluation needs besides the row: the date CURRENT_DATE stands for and the server's zone.
#[derive(Clone, Copy)]
pub struct EvalCtx<'a> {
    pub today: i32,
    pub tz: &'a PgTimeZone,
}

/// The inputs an expression reads.
#[derive(Clone, Copy)]
pub struct Inputs<'a> {
    pub row: &'a [Value],
    pub keys: &'a [Value],
    pub aggs: &'a [Value],
}

impl<'a> Inputs<'a> {
    pub fn row(row: &'a [Value]) -> Self {
        Inputs {
            row,
            keys: &[],
            aggs: &[],
        }
    }
}

/// An error PostgreSQL would also raise while computing the view.
#[derive(Debug, Error, Clone, PartialEq)]
pub enum EvalError {
    #[error("division by zero")]
    DivisionByZero,
    #[error("{0} out of range")]
    OutOfRange(&'static str),
    #[error("{0}")]
    Numeric(String),
    #[error("{0}")]
    Time(String),
    #[error("internal: {0}")]
    Internal(String),
}

type R = Result<Value, EvalError>;

fn time_err(e: impl fmt::Display) -> EvalError {
    EvalError::Time(e.to_string())
}

fn num_err(e: impl fmt::Display) -> EvalError {
    EvalError::Numeric(e.to_string())
}

impl Expr {
    pub fn ty(&self) -> SqlType {
        match self {
            Expr::Column { ty, .. }
            | Expr::GroupKey { ty, .. }
            | Expr::Agg { ty, .. }
            | Expr::Literal { ty, .. }
            | Expr::Arith { ty, .. }
            | Expr::Neg { ty, .. }
            | Expr::Case { ty, .. }
            | Expr::Coalesce { ty, .. }
            | Expr::DateTrunc { ty, .. } => *ty,
            Expr::CurrentDate => SqlType::Date,
            Expr::Cmp { .. }
            | Expr::And(_)
            | Expr::Or(_)
            | Expr::Not(_)
            | Expr::IsNull { .. }
            | Expr::InList { .. } => SqlType::Bool,
            Expr::Cast { to, .. } => *to,
        }
    }

    /// Direct children, for generic walks.
    pub fn children(&self) -> Vec<&Expr> {
        match self {
            Expr::Column { .. }
            | Expr::GroupKey { .. }
            | Expr::Agg { .. }
            | Expr::Literal { .. }
            | Expr::CurrentDate => {
                vec![]
            }
            Expr::Arith { left, right, .. } | Expr::Cmp { left, right, .. } => vec![left, right],
            Expr::Neg { expr, .. }
            | Expr::Not(expr)
            | Expr::IsNull { expr, .. }
            | Expr::Cast { expr, .. }
            | Expr::DateTrunc { expr, .. } => vec![expr],
            Expr::And(v) | Expr::Or(v) | Expr::Coalesce { args: v, .. } => v.iter().collect(),
            Expr::InList { expr, list, .. } => std::iter::once(&**expr).chain(list).collect(),
            Expr::Case {
                whens, otherwise, ..
            } => whens
                .iter()
                .flat_map(|(c, r)| [c, r])
                .chain(otherwise.as_deref())
                .collect(),
        }
    }

    /// Direct children, mutably (the same order as [`Self::children`]).
    fn children_mut(&mut self) -> Vec<&mut Expr> {
        match self {
            Expr::Column { .. }
            | Expr::GroupKey { .. }
            | Expr::Agg { .. }
            | Expr::Literal { .. }
            | Expr::CurrentDate => vec![],
            Expr::Arith { left, right, .. } | Expr::Cmp { left, right, .. } => {
                vec![&mut **left, &mut **right]
            }
            Expr::Neg { expr, .. }
            | Expr::Not(expr)
            | Expr::IsNull { expr, .. }
            | Expr::Cast { expr, .. }
            | Expr::DateTrunc { expr, .. } => vec![&mut **expr],
            Expr::And(v) | Expr::Or(v) | Expr::Coalesce { args: v, .. } => v.iter_mut().collect(),
            Expr::InList { expr, list, .. } => std::iter::once(&mut **expr)
                .chain(list.iter_mut())
                .collect(),
            Expr::Case {
                whens, otherwise, ..
            } => whens
                .iter_mut()
                .flat_map(|(c, r)| [c, r])
                .chain(otherwise.as_deref_mut())
                .collect(),
        }
    }

    /// This expression for one day: every subexpression that reads CURRENT_DATE but no input
    /// (`CURRENT_DATE - INTERVAL '30 days'`, cast to timestamptz in the server's zone) becomes
    /// its value, computed once instead of once per row. A subexpression whose evaluation fails
    /// is kept, so the row's evaluation raises the error as before.
    pub fn bind_today(&self, ctx: EvalCtx<'_>) -> Expr {
        let mut bound = self.clone();
        bound.fold_today(ctx);
        bound
    }

    fn fold_today(&mut self, ctx: EvalCtx<'_>) {
        if !self.uses_current_date() {
            return;
        }
        if !self.reads_input() {
            if let Ok(value) = self.eval(Inputs::row(&[]), ctx) {
                *self = Expr::Literal {
                    value,
                    ty: self.ty(),
                };
                return;
            }
        }
        for c in self.children_mut() {
            c.fold_today(ctx);
        }
    }

    /// Whether the value depends on the row, group key or aggregates (not only on the day).
    pub fn reads_input(&self) -> bool {
        self.any(&|e| {
            matches!(
                e,
                Expr::Column { .. } | Expr::GroupKey { .. } | Expr::Agg { .. }
            )
        })
    }

    pub fn any(&self, pred: &dyn Fn(&Expr) -> bool) -> bool {
        pred(self) || self.children().into_iter().any(|c| c.any(pred))
    }

    pub fn uses_current_date(&self) -> bool {
        self.any(&|e| matches!(e, Expr::CurrentDate))
    }

    /// Collects the comparisons whose truth depends on CURRENT_DATE (the planner guarantees that
    /// CURRENT_DATE appears only inside such comparisons, on one side, monotonically).
    pub fn temporal_atoms<'e>(&'e self, out: &mut Vec<&'e Expr>) {
        if let Expr::Cmp { .. } = self {
            if self.uses_current_date() {
                out.push(self);
                return;
            }
        }
        for c in self.children() {
            c.temporal_atoms(out);
        }
    }
}
