//! The printed form of an [`Expr`] (SQL-like, used by `deltamv explain` and in messages). Its own
//! room: printing is independent of evaluation.

use std::fmt;

use super::{ArithOp, CmpOp, Expr};

impl fmt::Display for Expr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let list = |f: &mut fmt::Formatter<'_>, items: &[Expr], sep: &str| -> fmt::Result {
            for (i, e) in items.iter().enumerate() {
                if i > 0 {
                    write!(f, "{sep}")?;
                }
                write!(f, "{e}")?;
            }
            Ok(())
        };
        match self {
            Expr::Column { name, .. } => write!(f, "{name}"),
            Expr::GroupKey { index, .. } => write!(f, "#key{index}"),
            Expr::Agg { index, .. } => write!(f, "#agg{index}"),
            Expr::Literal { value, .. } => write!(f, "{}", value.to_sql_text()),
            Expr::CurrentDate => write!(f, "CURRENT_DATE"),
            Expr::Arith {
                op, left, right, ..
            } => {
                let o = match op {
                    ArithOp::Add => "+",
                    ArithOp::Sub => "-",
                    ArithOp::Mul => "*",
                    ArithOp::Div => "/",
                };
                write!(f, "({left} {o} {right})")
            }
            Expr::Neg { expr, .. } => write!(f, "-{expr}"),
            Expr::Cmp { op, left, right } => {
                let o = match op {
                    CmpOp::Eq => "=",
                    CmpOp::NotEq => "<>",
                    CmpOp::Lt => "<",
                    CmpOp::LtEq => "<=",
                    CmpOp::Gt => ">",
                    CmpOp::GtEq => ">=",
                };
                write!(f, "{left} {o} {right}")
            }
            Expr::And(v) => {
                write!(f, "(")?;
                list(f, v, " AND ")?;
                write!(f, ")")
            }
            Expr::Or(v) => {
                write!(f, "(")?;
                list(f, v, " OR ")?;
                write!(f, ")")
            }
            Expr::Not(e) => write!(f, "NOT {e}"),
            Expr::IsNull { expr, negated } => {
                write!(f, "{expr} IS {}NULL", if *negated { "NOT " } else { "" })
            }
            Expr::InList {
                expr,
                list: l,
                negated,
            } => {
                write!(f, "{expr} {}IN (", if *negated { "NOT " } else { "" })?;
                list(f, l, ", ")?;
                write!(f, ")")
            }
            Expr::Case {
                whens, otherwise, ..
            } => {
                write!(f, "CASE")?;
                for (c, r) in whens {
                    write!(f, " WHEN {c} THEN {r}")?;
                }
                if let Some(e) = otherwise {
                    write!(f, " ELSE {e}")?;
                }
                write!(f, " END")
            }
            Expr::Coalesce { args, .. } => {
                write!(f, "COALESCE(")?;
                list(f, args, ", ")?;
                write!(f, ")")
            }
            Expr::Cast { expr, to, .. } => write!(f, "{expr}::{}", to.pg_name()),
            Expr::DateTrunc { unit, expr, .. } => write!(f, "date_trunc('{unit}', {expr})"),
        }
    }
}
