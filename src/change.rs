//! What flows between the pipeline's stages: a source row's [`Change`] from the stream (or the
//! initial snapshot) to the maintainer, and a view's [`TargetChange`] from the maintainer to the
//! sink. Neither end owns them, so neither imports the other.

use crate::value::Value;

/// One change of a source row, columns in the table's attribute order.
#[derive(Clone, Debug)]
pub enum Change {
    /// A row of the initial snapshot: every key appears once and the state starts empty, so
    /// no lookup of a previous image is needed.
    Load {
        table: usize,
        row: Vec<Value>,
    },
    Insert {
        table: usize,
        row: Vec<Value>,
    },
    /// `old_key` is present when the key changed; `unchanged` lists TOASTed columns not sent.
    Update {
        table: usize,
        old_key: Option<Vec<Value>>,
        row: Vec<Value>,
        unchanged: Vec<usize>,
    },
    Delete {
        table: usize,
        key: Vec<Value>,
    },
    Truncate {
        table: usize,
    },
}

/// A changed group of a view's last stage: its key (in key order) and its rows now.
#[derive(Clone, Debug, PartialEq)]
pub struct TargetChange {
    pub key: Vec<Value>,
    /// The group's rows now: none (gone), one (an aggregate group) or up to k (a top-k partition).
    pub rows: Vec<Vec<Value>>,
}
