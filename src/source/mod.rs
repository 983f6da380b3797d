//! The source: PostgreSQL's control plane (checks, catalog, publication, slot), the initial
//! snapshot, and the logical replication stream with its pgoutput decoder.

pub mod control;
pub mod copy_binary;
pub mod partitions;
pub mod pgoutput;
mod relation;
pub mod snapshot;
pub mod stream;
