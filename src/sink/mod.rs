//! The sink: writing changed groups into the target tables in PostgreSQL.

pub mod target;
