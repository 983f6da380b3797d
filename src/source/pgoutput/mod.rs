//! Decoder (and matching encoder) for PostgreSQL's `pgoutput` logical
//! replication messages, protocol version 1.
//!
//! The transport (`pgwire-replication`) hands us the payload of each
//! `XLogData` copy message: one pgoutput message, starting with its tag byte
//! (`'B'`, `'R'`, `'I'`, ...). [`decode`] turns exactly one such payload into a
//! [`PgOutputMessage`]; [`encode`] is its inverse and exists so tests and
//! benchmarks can build payloads without a server. Field layouts follow the
//! PostgreSQL documentation ("Logical Replication Message Formats") and the
//! `logicalrep_read_*` functions of `src/backend/replication/logical/proto.c`.
//!
//! # Why a pure function
//!
//! `decode` takes a byte slice and returns a value: no I/O, no clock, no
//! relation cache, no state carried between messages. Interpreting a tuple
//! against its relation's schema is the caller's job, done with the
//! [`Relation`] messages this module returns. That keeps the wire format
//! testable in isolation (property tests in `tests.rs` run millions of
//! payloads in seconds) and means a decoding bug can never corrupt
//! replication state: the worst outcome is an `Err` for one payload.
//!
//! # The never-panic contract
//!
//! The payload comes from the network, so `decode` must be total: for *every*
//! byte sequence it returns `Ok` or a [`DecodeError`] that names the field
//! that was wrong, and it never panics. Concretely, all reads go through
//! a small `Cursor` that uses only checked slicing (`split_at_checked`,
//! `split_first_chunk`); there is no indexing, no `unwrap`, no unchecked
//! arithmetic; and no length or count read from the wire is used to allocate
//! before the remaining input has been checked to be large enough, so a
//! hostile `0xFFFFFFFF` length costs nothing. The decoder is also strict:
//! it rejects trailing bytes, unknown column kinds and flag bits, so every
//! accepted payload is the canonical encoding of its result
//! (`encode(&decode(p)?) == p`), which the property tests check.
//!
//! Protocol version 2+ messages (streaming `'S' 'E' 'c' 'A'`, two-phase
//! `'b' 'P' 'K' 'r' 'p'`) are rejected as [`DecodeError::UnsupportedMessage`]
//! rather than misparsed: their layouts differ (extra xid fields).

mod decoder;
mod encoder;

#[cfg(test)]
mod tests;

use thiserror::Error;

pub use decoder::decode;
pub use encoder::encode;

/// [`PgOutputMessage::Truncate`] option bit: `TRUNCATE ... CASCADE`.
pub const TRUNCATE_CASCADE: u8 = 1;
/// [`PgOutputMessage::Truncate`] option bit: `TRUNCATE ... RESTART IDENTITY`.
pub const TRUNCATE_RESTART_IDENTITY: u8 = 2;

/// One decoded pgoutput (protocol v1) message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PgOutputMessage {
    /// `'B'`: start of a transaction.
    Begin {
        final_lsn: u64,
        /// Microseconds since the PostgreSQL epoch (2000-01-01 UTC).
        commit_time_micros: i64,
        xid: u32,
    },
    /// `'C'`: end of a transaction. `flags` is currently always 0.
    Commit {
        flags: u8,
        commit_lsn: u64,
        end_lsn: u64,
        /// Microseconds since the PostgreSQL epoch (2000-01-01 UTC).
        commit_time_micros: i64,
    },
    /// `'O'`: the transaction was replicated from another origin.
    Origin { commit_lsn: u64, name: String },
    /// `'R'`: schema of a relation, sent before its first change in a session
    /// and again after its schema changes.
    Relation(Relation),
    /// `'Y'`: name of a non-builtin type referenced by a relation.
    Type {
        id: u32,
        namespace: String,
        name: String,
    },
    /// `'I'`
    Insert { relation_id: u32, new: TupleData },
    /// `'U'`: `old` is present only when the key changed or the replica
    /// identity is FULL.
    Update {
        relation_id: u32,
        old: Option<OldTuple>,
        new: TupleData,
    },
    /// `'D'`
    Delete { relation_id: u32, old: OldTuple },
    /// `'T'`: `options` is a bit set of [`TRUNCATE_CASCADE`] and
    /// [`TRUNCATE_RESTART_IDENTITY`].
    Truncate { options: u8, relation_ids: Vec<u32> },
    /// `'M'`: a `pg_logical_emit_message` payload.
    Message {
        transactional: bool,
        lsn: u64,
        prefix: String,
        content: Vec<u8>,
    },
}

/// Body of a `'R'` (Relation) message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Relation {
    /// The relation's OID, used as `relation_id` by change messages.
    pub id: u32,
    /// Schema name; the empty string stands for `pg_catalog`.
    pub namespace: String,
    pub name: String,
    /// `relreplident`: `b'd'` default, `b'n'` nothing, `b'f'` full, `b'i'` index.
    pub replica_identity: u8,
    /// Published columns in attribute order (dropped columns are omitted).
    pub columns: Vec<RelationColumn>,
}

/// One column of a [`Relation`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RelationColumn {
    /// Part of the replica identity (key sent in Update/Delete `'K'` tuples).
    pub is_key: bool,
    pub name: String,
    pub type_oid: u32,
    /// `atttypmod`; -1 when the type has no modifier.
    pub type_modifier: i32,
}

/// Column values of one row, in the order of the relation's columns.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TupleData {
    pub columns: Vec<TupleColumn>,
}

/// One column value inside [`TupleData`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TupleColumn {
    /// `'n'`: SQL NULL.
    Null,
    /// `'u'`: TOASTed value that did not change; its bytes are not sent.
    UnchangedToast,
    /// `'t'`: value in the type's text output format.
    Text(Vec<u8>),
    /// `'b'`: value in the type's binary send format (`binary = true`).
    Binary(Vec<u8>),
}

/// The old row carried by Update and Delete.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OldTuple {
    /// `'K'`: only the replica identity columns are meaningful; the others are
    /// sent as [`TupleColumn::Null`].
    Key(TupleData),
    /// `'O'`: the whole old row (`REPLICA IDENTITY FULL`).
    Full(TupleData),
}

impl OldTuple {
    /// The tuple, whichever kind it is.
    pub fn tuple(&self) -> &TupleData {
        match self {
            OldTuple::Key(t) | OldTuple::Full(t) => t,
        }
    }
}

impl PgOutputMessage {
    /// The wire tag byte of this message kind.
    pub fn tag(&self) -> u8 {
        match self {
            PgOutputMessage::Begin { .. } => b'B',
            PgOutputMessage::Commit { .. } => b'C',
            PgOutputMessage::Origin { .. } => b'O',
            PgOutputMessage::Relation(_) => b'R',
            PgOutputMessage::Type { .. } => b'Y',
            PgOutputMessage::Insert { .. } => b'I',
            PgOutputMessage::Update { .. } => b'U',
            PgOutputMessage::Delete { .. } => b'D',
            PgOutputMessage::Truncate { .. } => b'T',
            PgOutputMessage::Message { .. } => b'M',
        }
    }
}

/// Why a payload is not a valid pgoutput v1 message.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum DecodeError {
    #[error("empty pgoutput payload: expected at least a message tag byte")]
    Empty,
    #[error("unknown pgoutput message tag {}", show_byte(.0))]
    UnknownTag(u8),
    #[error("pgoutput message truncated at {what}: needed {needed} bytes, only {remaining} left")]
    Truncated {
        what: &'static str,
        needed: usize,
        remaining: usize,
    },
    #[error("invalid string in {what}: {problem}")]
    InvalidString {
        what: &'static str,
        /// `"missing nul terminator"` or `"not valid UTF-8"`.
        problem: &'static str,
    },
    #[error("unexpected byte {} in {what}", show_byte(.byte))]
    UnexpectedByte { what: &'static str, byte: u8 },
    #[error("{count} trailing byte(s) after a complete '{message}' message")]
    TrailingBytes { message: char, count: usize },
    #[error(
        "unsupported pgoutput message '{0}': streaming and two-phase messages \
         need protocol version 2 or later, this decoder speaks version 1"
    )]
    UnsupportedMessage(char),
}

fn show_byte(b: &u8) -> String {
    if b.is_ascii_graphic() {
        format!("'{}' (0x{b:02x})", char::from(*b))
    } else {
        format!("0x{b:02x}")
    }
}
