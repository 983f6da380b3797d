//! One error type for a failed SQL statement, and the one place that decides what a failure
//! means for the engine.
//!
//! [`SqlError`] keeps the tokio-postgres error itself (not its text), so the SQLSTATE survives to
//! where the decision is made. [`ErrorKind`] is that decision, made from the SQLSTATE class alone
//! (the split Materialize calls transient versus definite):
//! - **transient**: the connection or the server's resources went away, or the server chose
//!   this transaction to abort (serialization failure, deadlock). Reconnecting and retrying the
//!   same work succeeds once the cause passes, and nothing is lost by waiting: the slot keeps
//!   every change.
//! - **definite**: the statement itself cannot succeed as things stand (a privilege revoked, a
//!   table dropped, a value out of range, a constraint violated). Retrying would loop forever;
//!   an operator has to act, and the error must say on what.

use std::fmt;

/// A failed statement: what was being done, and the client's error with its SQLSTATE.
#[derive(Debug)]
pub struct SqlError {
    pub context: String,
    pub source: tokio_postgres::Error,
}

impl SqlError {
    pub fn new(context: impl Into<String>, source: tokio_postgres::Error) -> Self {
        SqlError {
            context: context.into(),
            source,
        }
    }

    pub fn kind(&self) -> ErrorKind {
        ErrorKind::of(&self.source)
    }
}

impl fmt::Display for SqlError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.context, describe(&self.source))
    }
}

impl std::error::Error for SqlError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.source)
    }
}

/// Wraps a tokio-postgres error with what was being done: `.map_err(sql_err("reading X"))?`,
/// in any function whose error type converts from [`SqlError`].
pub fn sql_err(context: impl Into<String>) -> impl FnOnce(tokio_postgres::Error) -> SqlError {
    let context = context.into();
    move |source| SqlError { context, source }
}

/// The server's message (and SQLSTATE) if there is one, else the client's with its causes.
pub fn describe(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!("{} (SQLSTATE {})", db.message(), db.code().code()),
        None => {
            let mut s = e.to_string();
            let mut src = std::error::Error::source(e);
            while let Some(inner) = src {
                s.push_str(&format!(": {inner}"));
                src = inner.source();
            }
            s
        }
    }
}

/// The SQLSTATE when the server answered with an error.
pub fn sqlstate(e: &tokio_postgres::Error) -> Option<&str> {
    e.as_db_error().map(|d| d.code().code())
}

/// Whether retrying can help (see the module doc).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorKind {
    Transient,
    Definite,
}

impl ErrorKind {
    /// Decides by SQLSTATE class; an error without one (the connection closed, an I/O error,
    /// a timeout) is transient.
    pub fn of(e: &tokio_postgres::Error) -> ErrorKind {
        match sqlstate(e) {
            None => ErrorKind::Transient,
            Some(code) => ErrorKind::of_sqlstate(code),
        }
    }

    pub fn of_sqlstate(code: &str) -> ErrorKind {
        match code.get(..2) {
            // 08 connection exception, 40 transaction rollback (serialization failure,
            // deadlock), 53 insufficient resources (disk full, out of memory, too many
            // connections), 55 object not in prerequisite state (lock not available), 57
            // operator intervention (shutdown, cancel), 58 system error (I/O), XX internal.
            Some("08" | "40" | "53" | "55" | "57" | "58" | "XX") => ErrorKind::Transient,
            _ => ErrorKind::Definite,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sqlstate_classes_decide_the_kind() {
        for transient in [
            "08006", "40001", "40P01", "53100", "53300", "55P03", "57P01", "57014", "58030",
            "XX000",
        ] {
            assert_eq!(
                ErrorKind::of_sqlstate(transient),
                ErrorKind::Transient,
                "{transient}"
            );
        }
        // Privilege revoked, table dropped, column dropped, out of range, unique violation,
        // read-only transaction.
        for definite in ["42501", "42P01", "42703", "22003", "23505", "25006"] {
            assert_eq!(
                ErrorKind::of_sqlstate(definite),
                ErrorKind::Definite,
                "{definite}"
            );
        }
    }
}
