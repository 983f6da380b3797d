//! The `deltamv.*` bookkeeping schema, owned here: its DDL (`schema/deltamv.sql`) and the typed
//! operations on its tables. The engine, setup, the sink and the request server call these
//! instead of holding SQL strings of their own, so a column is renamed in one place and the
//! schema's shape can be read in one file.
//!
//! What lives where: [`views`] (state, errors and row counts per view), [`progress`] (the LSN
//! the targets reflect), [`history`] (one row per load, recompute, reconcile or repair),
//! [`requests`] (refresh and reconcile requests and their results). The partition records are
//! the exception: they belong to [`crate::source::partitions`], whose triggers keep them, and
//! are created only when a source is partitioned.

pub mod history;
pub mod progress;
pub mod requests;
pub mod views;

use tokio_postgres::GenericClient;

use crate::pg::{sql_err, SqlError};

/// The schema's DDL; every statement is idempotent.
pub const DDL: &str = include_str!("../../schema/deltamv.sql");

/// Creates the schema, or brings an older one up to date.
pub async fn install<C: GenericClient>(client: &C) -> Result<(), SqlError> {
    client
        .batch_execute(DDL)
        .await
        .map_err(sql_err("creating or updating the deltamv schema"))
}
