//! Column references of a stage: a column read by name (refused with the reason when its type or
//! kind cannot be maintained), and stored generated columns, which PostgreSQL 15 does not publish
//! and which are therefore computed from their expression. Its own room: the only place the
//! builder parses SQL text of its own (the generation expression and the declared type).

use super::Builder;
use crate::plan::build::{invalid, unsupported, Res};
use crate::plan::expr::Expr;
use crate::plan::types::{explicit_cast, sql_type};
use crate::plan::PlanError;
use crate::value::SqlType;

impl Builder<'_> {
    pub(super) fn column_ref(&mut self, name: &str) -> Res<Expr> {
        let Some(i) = self.column(name) else {
            return invalid(format!("column \"{name}\" does not exist"));
        };
        if self.post {
            return invalid(format!("column \"{name}\" must appear in the GROUP BY clause or be used in an aggregate function"));
        }
        let col = &self.columns[i];
        let n = &col.name;
        if let Some(why) = &col.refusal {
            return unsupported(format!("column \"{n}\" of {}: {why}", self.source));
        }
        if let Some(expression) = col.generated.clone() {
            return self.generated(i, &expression);
        }
        match col.ty {
            Some(ty) => Ok(Expr::Column {
                index: i,
                name: n.clone(),
                ty,
            }),
            None => unsupported(format!(
                "column \"{n}\" of {} has type {}, which deltamv does not maintain",
                self.source, col.type_name
            )),
        }
    }

    /// A stored generated column, computed from its expression over the row's other columns
    /// (PostgreSQL 15 does not publish generated columns, so their values never arrive), then
    /// assigned to the column's type as PostgreSQL stores it.
    fn generated(&mut self, i: usize, expression: &str) -> Res<Expr> {
        let col = self.columns[i].clone();
        let source = self.source.clone();
        let refuse = |why: String| {
            PlanError::Unsupported(format!(
                "column \"{}\" of {source} is a generated column (GENERATED ALWAYS AS ({expression}) STORED), which PostgreSQL 15 does not publish to logical replication, and deltamv cannot compute it from its expression: {why}",
                col.name
            ))
        };
        let dialect = sqlparser::dialect::PostgreSqlDialect {};
        let parsed = sqlparser::parser::Parser::new(&dialect)
            .try_with_sql(expression)
            .and_then(|mut p| p.parse_expr())
            .map_err(|e| refuse(e.to_string()))?;
        let Some(ty) = col.ty else {
            return Err(refuse(format!(
                "its type {} is not supported",
                col.type_name
            )));
        };
        // The column's declared type decides the stored value (numeric(p, s) rounds).
        let declared = sqlparser::parser::Parser::new(&dialect)
            .try_with_sql(&col.type_name)
            .and_then(|mut p| p.parse_data_type())
            .ok()
            .and_then(|dt| sql_type(&dt).ok());
        let scale = match declared {
            Some((t, scale)) if t == ty => scale,
            _ if ty == SqlType::Numeric => {
                return Err(refuse(format!(
                    "its type {} (a domain) may round it",
                    col.type_name
                )))
            }
            _ => None,
        };
        // Its expression reads only ordinary columns (PostgreSQL forbids generated ones there).
        self.columns[i].generated = None;
        self.columns[i].refusal = Some("a generated column's expression may not read it".into());
        let built = self.build(&parsed);
        self.columns[i].generated = col.generated.clone();
        self.columns[i].refusal = col.refusal.clone();
        let built = built.map_err(|e| refuse(e.to_string()))?;
        explicit_cast(built, ty, scale, self.tz).map_err(|e| refuse(e.to_string()))
    }
}
