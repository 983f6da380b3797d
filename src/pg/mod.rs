//! PostgreSQL's vocabulary, shared by every stage and owned by none: names and quoting, the
//! catalog's description of a table, connecting (with TLS), one SQL error type that keeps the
//! SQLSTATE and says whether retrying can help, and WAL positions and times.
//!
//! Nothing here knows about views, state or the `deltamv.*` schema. That is what lets the
//! source, the planner and the sink all speak it without importing one another: before this
//! module existed, the source imported the sink for LSN text and the planner for table names.

pub mod catalog;
pub mod connect;
pub mod error;
pub mod names;
pub mod tls;
pub mod wal;

pub use catalog::{Catalog, ColumnInfo, TableInfo};
pub use connect::{ConnectError, DbTarget};
pub use error::{describe, sql_err, ErrorKind, SqlError};
pub use names::{quote_ident, quote_literal, QualifiedName};
pub use wal::Lsn;
