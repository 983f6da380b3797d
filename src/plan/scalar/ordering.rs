//! Orders the engine does not share with PostgreSQL, refused at planning: enum values (ordered by
//! their declaration, not their labels) and text under a collation that is not byte order. Its
//! own room: ORDER-sensitive places (comparisons, MIN/MAX, percentile_disc, later stages) all ask
//! here.

use super::Builder;
use crate::plan::build::{unsupported, Res};
use crate::plan::expr::Expr;
use crate::value::SqlType;

/// Text types (their order depends on the collation).
fn is_text(ty: SqlType) -> bool {
    matches!(ty, SqlType::Text | SqlType::Unknown | SqlType::Bpchar)
}

impl Builder<'_> {
    /// What an enum-typed expression reads, for messages: "column status (type run_status)".
    fn enum_source(&self, e: &Expr) -> String {
        let mut found = None;
        let mut walk = vec![e.clone()];
        while let Some(x) = walk.pop() {
            match &x {
                Expr::Column { index, .. } => {
                    if let Some(c) = self.columns.get(*index) {
                        if c.ty == Some(SqlType::Enum) {
                            found = Some(format!(
                                "column \"{}\" of {} (enum type {})",
                                c.name, self.source, c.type_name
                            ));
                            break;
                        }
                    }
                }
                Expr::GroupKey { index, .. } => walk.extend(self.keys.get(*index).cloned()),
                Expr::Agg { index, .. } => {
                    walk.extend(self.aggs.get(*index).and_then(|a| a.arg.clone()))
                }
                other => walk.extend(other.children().into_iter().cloned()),
            }
        }
        found.unwrap_or_else(|| format!("{e} (an enum type)"))
    }

    /// Refuses ordering `e` where the engine's order is not PostgreSQL's: enum values (ordered by
    /// their declaration, not their labels) and text under a collation that is not byte order.
    pub(in crate::plan) fn check_orderable(&self, e: &Expr, what: &str) -> Res<()> {
        if e.ty() == SqlType::Enum {
            return unsupported(format!(
                "{what} orders {}: PostgreSQL orders an enum by its declared order, which deltamv does not maintain (equality, IN and GROUP BY on it are maintained; cast it ::text to order the labels as text)",
                self.enum_source(e),
            ));
        }
        if let Some(collation) = self.order_collation(e) {
            return unsupported(format!(
                "{what} orders text under {collation}, which deltamv does not implement (it orders text by bytes, as the C collation does)"
            ));
        }
        Ok(())
    }

    /// The collation that orders `e` when it is text not ordered by bytes: a column's own
    /// (PostgreSQL's implicit derivation beats the default), else the database default.
    pub(in crate::plan) fn order_collation(&self, e: &Expr) -> Option<String> {
        if !is_text(e.ty()) {
            return None;
        }
        let mut found = Vec::new();
        self.implicit_collations(e, &mut found);
        if found.is_empty() {
            self.default_collation.clone()
        } else {
            found.into_iter().flatten().next()
        }
    }

    fn implicit_collations(&self, e: &Expr, out: &mut Vec<Option<String>>) {
        if !is_text(e.ty()) {
            return;
        }
        match e {
            Expr::Column { index, .. } => {
                out.push(self.columns.get(*index).and_then(|c| c.collation.clone()))
            }
            Expr::GroupKey { index, .. } => {
                if let Some(k) = self.keys.get(*index) {
                    self.implicit_collations(k, out);
                }
            }
            Expr::Agg { index, .. } => {
                if let Some(arg) = self.aggs.get(*index).and_then(|a| a.arg.as_ref()) {
                    self.implicit_collations(arg, out);
                }
            }
            Expr::Case {
                whens, otherwise, ..
            } => {
                for (_, r) in whens {
                    self.implicit_collations(r, out);
                }
                if let Some(o) = otherwise {
                    self.implicit_collations(o, out);
                }
            }
            Expr::Coalesce { args, .. } => {
                for a in args {
                    self.implicit_collations(a, out);
                }
            }
            Expr::Cast { expr, .. } => self.implicit_collations(expr, out),
            _ => {}
        }
    }
}
