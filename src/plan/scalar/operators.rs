//! Binary operators: comparisons (operand types resolved as PostgreSQL does, ordering checked),
//! AND/OR, arithmetic on numbers, dates, timestamps and intervals, and `IN` lists involving a
//! real, which PostgreSQL parses as `= ANY` plus separate comparisons.

use sqlparser::ast::{self, BinaryOperator};

use super::Builder;
use crate::plan::build::{invalid, unsupported, Res};
use crate::plan::expr::{ArithOp, CmpOp, Expr};
use crate::plan::types::{coerce, common_type_of, operator_type};
use crate::plan::PlanError;
use crate::value::SqlType;

impl Builder<'_> {
    pub(super) fn binary(
        &mut self,
        left: &ast::Expr,
        op: &BinaryOperator,
        right: &ast::Expr,
    ) -> Res<Expr> {
        use BinaryOperator as B;
        let cmp = match op {
            B::Eq => Some(CmpOp::Eq),
            B::NotEq => Some(CmpOp::NotEq),
            B::Lt => Some(CmpOp::Lt),
            B::LtEq => Some(CmpOp::LtEq),
            B::Gt => Some(CmpOp::Gt),
            B::GtEq => Some(CmpOp::GtEq),
            _ => None,
        };
        if let Some(c) = cmp {
            return self.compare(left, c, right);
        }
        match op {
            B::And | B::Or => {
                let l = coerce(self.build(left)?, SqlType::Bool, self.tz)?;
                let r = coerce(self.build(right)?, SqlType::Bool, self.tz)?;
                if l.ty() != SqlType::Bool || r.ty() != SqlType::Bool {
                    return invalid(format!("arguments of {op} must be boolean"));
                }
                Ok(if *op == B::And {
                    Expr::And(vec![l, r])
                } else {
                    Expr::Or(vec![l, r])
                })
            }
            B::Plus => self.arith(left, ArithOp::Add, right),
            B::Minus => self.arith(left, ArithOp::Sub, right),
            B::Multiply => self.arith(left, ArithOp::Mul, right),
            B::Divide => self.arith(left, ArithOp::Div, right),
            other => unsupported(format!("operator {other}")),
        }
    }

    pub(super) fn compare(&mut self, left: &ast::Expr, op: CmpOp, right: &ast::Expr) -> Res<Expr> {
        let l = self.build(left)?;
        let r = self.build(right)?;
        self.compare_exprs(l, op, r)
    }

    fn compare_exprs(&mut self, l: Expr, op: CmpOp, r: Expr) -> Res<Expr> {
        let ty = operator_type(l.ty(), r.ty()).ok_or_else(|| {
            PlanError::Invalid(format!(
                "operator does not exist: {} {:?} {}",
                l.ty().pg_name(),
                op,
                r.ty().pg_name()
            ))
        })?;
        let l = coerce(l, ty, self.tz)?;
        let r = coerce(r, ty, self.tz)?;
        if !matches!(op, CmpOp::Eq | CmpOp::NotEq) {
            let both = Expr::Coalesce {
                args: vec![l.clone(), r.clone()],
                ty,
            };
            self.check_orderable(
                &both,
                &format!(
                    "the comparison {}",
                    Expr::Cmp {
                        op,
                        left: Box::new(l.clone()),
                        right: Box::new(r.clone())
                    }
                ),
            )?;
        }
        Ok(Expr::Cmp {
            op,
            left: Box::new(l),
            right: Box::new(r),
        })
    }

    fn arith(&mut self, left: &ast::Expr, op: ArithOp, right: &ast::Expr) -> Res<Expr> {
        use SqlType as T;
        let l = self.build(left)?;
        let r = self.build(right)?;
        let (lt, rt) = (l.ty(), r.ty());
        let fail = || {
            PlanError::Invalid(format!(
                "operator does not exist: {} {op:?} {}",
                lt.pg_name(),
                rt.pg_name()
            ))
        };
        // Numbers (an untyped literal takes the other side's type): both sides become the wider.
        let numeric_ty = match (lt.numeric_rank(), rt.numeric_rank()) {
            (Some(_), Some(_)) => operator_type(lt, rt),
            (Some(_), None) if rt == T::Unknown => Some(lt),
            (None, Some(_)) if lt == T::Unknown => Some(rt),
            _ => None,
        };
        if numeric_ty.is_none() && (lt == T::Unknown || rt == T::Unknown) {
            return unsupported(format!("untyped literal in arithmetic ({lt:?} {op:?} {rt:?}); write INTERVAL '...' or DATE '...'"));
        }
        if let Some(ty) = numeric_ty {
            let (l, r) = (coerce(l, ty, self.tz)?, coerce(r, ty, self.tz)?);
            return Ok(Expr::Arith {
                op,
                left: Box::new(l),
                right: Box::new(r),
                ty,
            });
        }
        let ty = match (lt, op, rt) {
            (T::Date, ArithOp::Add | ArithOp::Sub, t) if t.is_integer() => T::Date,
            (t, ArithOp::Add, T::Date) if t.is_integer() => T::Date,
            (T::Date, ArithOp::Sub, T::Date) => T::Int4,
            (T::Date, ArithOp::Add | ArithOp::Sub, T::Interval)
            | (T::Interval, ArithOp::Add, T::Date) => T::Timestamp,
            (T::Timestamp, ArithOp::Add | ArithOp::Sub, T::Interval) => T::Timestamp,
            (T::TimestampTz, ArithOp::Add | ArithOp::Sub, T::Interval) => T::TimestampTz,
            (T::Timestamp | T::TimestampTz, ArithOp::Sub, T::Timestamp | T::TimestampTz) => {
                return unsupported(format!(
                    "{} - {} (interval results are not maintained)",
                    lt.pg_name(),
                    rt.pg_name()
                ))
            }
            _ => return Err(fail()),
        };
        let (l, r) = match (lt, rt) {
            (T::Date, t) | (t, T::Date) if t.is_integer() && t != T::Int8 => (l, r),
            (T::Date, T::Int8) | (T::Int8, T::Date) => return Err(fail()),
            _ => (l, r),
        };
        Ok(Expr::Arith {
            op,
            left: Box::new(l),
            right: Box::new(r),
            ty,
        })
    }

    /// `x IN (...)` as PostgreSQL parses it, which matters when a real is involved: several
    /// constants become one `= ANY` of their common type, while a single constant and every
    /// item that reads a column are separate `=` operators (resolved like any comparison).
    pub(super) fn in_list_with_real(&mut self, mut all: Vec<Expr>, negated: bool) -> Res<Expr> {
        let head = all.remove(0);
        let (consts, mut vars): (Vec<Expr>, Vec<Expr>) =
            all.into_iter().partition(|e| !e.reads_input());
        let mut parts = Vec::new();
        if consts.len() > 1 {
            let mut array = vec![head.clone()];
            array.extend(consts);
            let ty = common_type_of(&array, "IN")?;
            let mut array = array
                .into_iter()
                .map(|x| coerce(x, ty, self.tz))
                .collect::<Res<Vec<_>>>()?;
            let lhs = array.remove(0);
            parts.push(Expr::InList {
                expr: Box::new(lhs),
                list: array,
                negated: false,
            });
        } else {
            vars.extend(consts);
        }
        for v in vars {
            parts.push(self.compare_exprs(head.clone(), CmpOp::Eq, v)?);
        }
        let any = if parts.len() == 1 {
            parts.remove(0)
        } else {
            Expr::Or(parts)
        };
        Ok(if negated {
            Expr::Not(Box::new(any))
        } else {
            any
        })
    }
}
