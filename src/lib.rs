//! deltamv: incremental view maintenance for PostgreSQL summary tables over logical replication.
//!
//! Data flow: [`source`] (slot, snapshot, pgoutput stream) -> [`maintain`] (planner-built
//! operators over [`state`] in RocksDB) -> [`sink`] (changed groups into the target tables, with
//! the applied LSN) -> slot acknowledgement. [`engine`] runs that loop and states why it is
//! crash-safe (and serves refresh and reconcile requests between batches); [`plan`] compiles view
//! SQL; [`reconcile`] proves targets against PostgreSQL; [`submit`] asks a running engine.

pub mod access;
pub mod bookkeeping;
pub mod change;
pub mod cli;
pub mod clock;
pub mod config;
pub mod engine;
pub mod exact_float;
pub mod failpoint;
pub mod maintain;
pub mod monitor;
pub mod numeric;
pub mod ops;
pub mod pg;
pub mod pgtime;
pub mod plan;
pub mod reconcile;
pub mod refresher;
pub mod settings;
pub mod setup;
pub mod sink;
pub mod source;
pub mod state;
pub mod status;
pub mod submit;
pub mod value;
