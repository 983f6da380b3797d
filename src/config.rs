//! Engine configuration: one struct, defaults in one place, validated once at start.

use std::path::PathBuf;

use thiserror::Error;

/// Everything the engine needs to know, with units in the field names.
#[derive(Clone, Debug)]
pub struct Config {
    pub database_url: String,
    pub state_dir: PathBuf,
    pub views_dir: PathBuf,
    pub slot: String,
    pub publication: String,
    /// When set, "now" is read from this file (one RFC 3339 timestamp) instead of the system clock.
    pub clock_file: Option<PathBuf>,
    /// A batch closes after this many source row changes...
    pub batch_max_rows: usize,
    /// ...or this long after its first transaction arrived.
    pub batch_max_ms: u64,
    /// How often the state written since the last checkpoint is flushed to disk (and the slot
    /// acknowledged up to it): the most a crash makes the engine replay.
    pub checkpoint_ms: u64,
    /// How long a reconcile's snapshot may wait for write transactions open since before it
    /// (the engine applies on meanwhile); past it the request fails, naming the oldest one.
    pub reconcile_wait_ms: u64,
    /// How many threads fold the views of a batch (`init` and `run`); each view is folded by
    /// one thread, so more threads than views are idle.
    pub fold_threads: usize,
    /// How large a target (its table on disk, in MB) `init --resync` compares with the new
    /// rows in the engine's memory; a larger one is compared in PostgreSQL
    /// ([`crate::sink::fill`]).
    pub resync_memory_mb: u64,
}

pub const DEFAULT_SLOT: &str = "deltamv";
pub const DEFAULT_PUBLICATION: &str = "deltamv_pub";
pub const DEFAULT_BATCH_MAX_ROWS: usize = 20_000;
pub const DEFAULT_BATCH_MAX_MS: u64 = 100;
pub const DEFAULT_CHECKPOINT_MS: u64 = 1_000;
pub const DEFAULT_RECONCILE_WAIT_MS: u64 = 30_000;
pub const DEFAULT_RESYNC_MEMORY_MB: u64 = 256;

/// The machine's cores (1 when it cannot tell): the default of [`Config::fold_threads`].
pub fn machine_cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

#[derive(Debug, Error)]
pub enum ConfigError {
    #[error("no database URL: pass --database-url or set DATABASE_URL (e.g. postgresql://user@localhost:5432/app)")]
    NoDatabase,
    #[error("{what} {name:?} is not a valid name: use 1 to 63 lowercase letters, digits and underscores")]
    BadName { what: &'static str, name: String },
    #[error("{0} must be greater than zero")]
    Zero(&'static str),
}

impl Config {
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.database_url.trim().is_empty() {
            return Err(ConfigError::NoDatabase);
        }
        for (what, name) in [("slot", &self.slot), ("publication", &self.publication)] {
            let ok = !name.is_empty()
                && name.len() <= 63
                && name
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
            if !ok {
                return Err(ConfigError::BadName {
                    what,
                    name: name.clone(),
                });
            }
        }
        if self.batch_max_rows == 0 {
            return Err(ConfigError::Zero("batch_max_rows"));
        }
        if self.batch_max_ms == 0 {
            return Err(ConfigError::Zero("batch_max_ms"));
        }
        if self.checkpoint_ms == 0 {
            return Err(ConfigError::Zero("checkpoint_ms"));
        }
        if self.fold_threads == 0 {
            return Err(ConfigError::Zero("fold_threads"));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> Config {
        Config {
            database_url: "postgresql://x@localhost/db".into(),
            state_dir: "state".into(),
            views_dir: "schema/views".into(),
            slot: DEFAULT_SLOT.into(),
            publication: DEFAULT_PUBLICATION.into(),
            clock_file: None,
            batch_max_rows: DEFAULT_BATCH_MAX_ROWS,
            batch_max_ms: DEFAULT_BATCH_MAX_MS,
            checkpoint_ms: DEFAULT_CHECKPOINT_MS,
            reconcile_wait_ms: DEFAULT_RECONCILE_WAIT_MS,
            fold_threads: 2,
            resync_memory_mb: DEFAULT_RESYNC_MEMORY_MB,
        }
    }

    #[test]
    fn validation_names_the_problem() {
        assert!(config().validate().is_ok());
        let mut c = config();
        c.slot = "Bad-Slot".into();
        assert!(c
            .validate()
            .expect_err("bad slot")
            .to_string()
            .contains("Bad-Slot"));
        let mut c = config();
        c.database_url = String::new();
        assert!(c
            .validate()
            .expect_err("no url")
            .to_string()
            .contains("DATABASE_URL"));
    }
}
