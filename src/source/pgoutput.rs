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
//! testable in isolation (property tests below run millions of payloads in
//! seconds) and means a decoding bug can never corrupt replication state:
//! the worst outcome is an `Err` for one payload.
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

use thiserror::Error;

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

macro_rules! be_readers {
    ($($t:ident),*) => {$(
        fn $t(&mut self, what: &'static str) -> Result<$t, DecodeError> {
            self.array(what).map($t::from_be_bytes)
        }
    )*};
}

/// Bounds-checked big-endian reader over the unread part of a payload.
struct Cursor<'a> {
    rest: &'a [u8],
}

impl<'a> Cursor<'a> {
    fn truncated(&self, what: &'static str, needed: usize) -> DecodeError {
        DecodeError::Truncated {
            what,
            needed,
            remaining: self.rest.len(),
        }
    }

    fn take(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], DecodeError> {
        let (head, tail) = self
            .rest
            .split_at_checked(n)
            .ok_or_else(|| self.truncated(what, n))?;
        self.rest = tail;
        Ok(head)
    }

    fn array<const N: usize>(&mut self, what: &'static str) -> Result<[u8; N], DecodeError> {
        let (head, tail) = self
            .rest
            .split_first_chunk::<N>()
            .ok_or_else(|| self.truncated(what, N))?;
        self.rest = tail;
        Ok(*head)
    }

    fn u8(&mut self, what: &'static str) -> Result<u8, DecodeError> {
        let [b] = self.array(what)?;
        Ok(b)
    }

    be_readers!(u16, u32, i32, u64, i64);

    /// A 0/1 flag byte; any other value is rejected.
    fn flag(&mut self, what: &'static str) -> Result<bool, DecodeError> {
        match self.u8(what)? {
            0 => Ok(false),
            1 => Ok(true),
            byte => Err(DecodeError::UnexpectedByte { what, byte }),
        }
    }

    /// A marker byte that must equal `expected`.
    fn expect(&mut self, expected: u8, what: &'static str) -> Result<(), DecodeError> {
        match self.u8(what)? {
            byte if byte == expected => Ok(()),
            byte => Err(DecodeError::UnexpectedByte { what, byte }),
        }
    }

    /// A nul-terminated UTF-8 string (libpq `String`).
    fn string(&mut self, what: &'static str) -> Result<String, DecodeError> {
        let len = self
            .rest
            .iter()
            .position(|&b| b == 0)
            .ok_or(DecodeError::InvalidString {
                what,
                problem: "missing nul terminator",
            })?;
        let raw = self.take(len, what)?;
        self.take(1, what)?;
        std::str::from_utf8(raw)
            .map(str::to_owned)
            .map_err(|_| DecodeError::InvalidString {
                what,
                problem: "not valid UTF-8",
            })
    }

    /// An `Int32` length followed by that many bytes. The length is checked
    /// against the remaining input before anything is allocated.
    fn bytes(&mut self, what: &'static str) -> Result<Vec<u8>, DecodeError> {
        let len = self.u32(what)?;
        let len = usize::try_from(len).unwrap_or(usize::MAX);
        Ok(self.take(len, what)?.to_vec())
    }

    /// `count` items each at least `min_len` bytes long need at least this
    /// much input; reserve no more than what the input can actually hold.
    fn capacity_for(&self, count: usize, min_len: usize) -> usize {
        count.min(self.rest.len() / min_len.max(1))
    }
}

/// Decodes one pgoutput protocol v1 message (tag byte included).
///
/// Never panics; see the module documentation for the contract.
pub fn decode(payload: &[u8]) -> Result<PgOutputMessage, DecodeError> {
    let (&tag, body) = payload.split_first().ok_or(DecodeError::Empty)?;
    let mut c = Cursor { rest: body };
    // Struct literal fields are evaluated in the order written, which is the
    // wire order below.
    let msg = match tag {
        b'B' => PgOutputMessage::Begin {
            final_lsn: c.u64("Begin final LSN")?,
            commit_time_micros: c.i64("Begin commit timestamp")?,
            xid: c.u32("Begin xid")?,
        },
        b'C' => PgOutputMessage::Commit {
            flags: c.u8("Commit flags")?,
            commit_lsn: c.u64("Commit LSN")?,
            end_lsn: c.u64("Commit end LSN")?,
            commit_time_micros: c.i64("Commit timestamp")?,
        },
        b'O' => PgOutputMessage::Origin {
            commit_lsn: c.u64("Origin commit LSN")?,
            name: c.string("Origin name")?,
        },
        b'R' => PgOutputMessage::Relation(decode_relation(&mut c)?),
        b'Y' => PgOutputMessage::Type {
            id: c.u32("Type id")?,
            namespace: c.string("Type namespace")?,
            name: c.string("Type name")?,
        },
        b'I' => {
            let relation_id = c.u32("Insert relation id")?;
            c.expect(b'N', "Insert tuple marker (expected 'N')")?;
            PgOutputMessage::Insert {
                relation_id,
                new: decode_tuple(&mut c)?,
            }
        }
        b'U' => {
            let relation_id = c.u32("Update relation id")?;
            let old = match c.u8("Update tuple marker")? {
                b'N' => None,
                b'K' => Some(OldTuple::Key(decode_tuple(&mut c)?)),
                b'O' => Some(OldTuple::Full(decode_tuple(&mut c)?)),
                byte => return unexpected("Update tuple marker (expected 'K', 'O' or 'N')", byte),
            };
            if old.is_some() {
                c.expect(b'N', "Update new-tuple marker (expected 'N')")?;
            }
            PgOutputMessage::Update {
                relation_id,
                old,
                new: decode_tuple(&mut c)?,
            }
        }
        b'D' => {
            let relation_id = c.u32("Delete relation id")?;
            let old = match c.u8("Delete tuple marker")? {
                b'K' => OldTuple::Key(decode_tuple(&mut c)?),
                b'O' => OldTuple::Full(decode_tuple(&mut c)?),
                byte => return unexpected("Delete tuple marker (expected 'K' or 'O')", byte),
            };
            PgOutputMessage::Delete { relation_id, old }
        }
        b'T' => {
            let count = c.u32("Truncate relation count")?;
            let options = c.u8("Truncate options")?;
            let count = usize::try_from(count).unwrap_or(usize::MAX);
            let needed = count.saturating_mul(4);
            if c.rest.len() < needed {
                return Err(c.truncated("Truncate relation ids", needed));
            }
            let mut relation_ids = Vec::with_capacity(count);
            for _ in 0..count {
                relation_ids.push(c.u32("Truncate relation id")?);
            }
            PgOutputMessage::Truncate {
                options,
                relation_ids,
            }
        }
        b'M' => PgOutputMessage::Message {
            transactional: c.flag("Message flags (expected 0 or 1)")?,
            lsn: c.u64("Message LSN")?,
            prefix: c.string("Message prefix")?,
            content: c.bytes("Message content")?,
        },
        b'S' | b'E' | b'c' | b'A' | b'b' | b'P' | b'K' | b'r' | b'p' => {
            return Err(DecodeError::UnsupportedMessage(char::from(tag)))
        }
        other => return Err(DecodeError::UnknownTag(other)),
    };
    if c.rest.is_empty() {
        Ok(msg)
    } else {
        Err(DecodeError::TrailingBytes {
            message: char::from(tag),
            count: c.rest.len(),
        })
    }
}

fn unexpected<T>(what: &'static str, byte: u8) -> Result<T, DecodeError> {
    Err(DecodeError::UnexpectedByte { what, byte })
}

/// Smallest encoding of one Relation column: flags, empty name, oid, typmod.
const MIN_RELATION_COLUMN_LEN: usize = 1 + 1 + 4 + 4;

fn decode_relation(c: &mut Cursor<'_>) -> Result<Relation, DecodeError> {
    let id = c.u32("Relation id")?;
    let namespace = c.string("Relation namespace")?;
    let name = c.string("Relation name")?;
    let replica_identity = match c.u8("Relation replica identity")? {
        b @ (b'd' | b'n' | b'f' | b'i') => b,
        byte => {
            return unexpected(
                "Relation replica identity (expected 'd', 'n', 'f' or 'i')",
                byte,
            )
        }
    };
    let count = usize::from(c.u16("Relation column count")?);
    let mut columns = Vec::with_capacity(c.capacity_for(count, MIN_RELATION_COLUMN_LEN));
    for _ in 0..count {
        columns.push(RelationColumn {
            is_key: c.flag("Relation column flags (expected 0 or 1)")?,
            name: c.string("Relation column name")?,
            type_oid: c.u32("Relation column type OID")?,
            type_modifier: c.i32("Relation column type modifier")?,
        });
    }
    Ok(Relation {
        id,
        namespace,
        name,
        replica_identity,
        columns,
    })
}

fn decode_tuple(c: &mut Cursor<'_>) -> Result<TupleData, DecodeError> {
    let count = usize::from(c.u16("tuple column count")?);
    let mut columns = Vec::with_capacity(c.capacity_for(count, 1));
    for _ in 0..count {
        columns.push(match c.u8("tuple column kind")? {
            b'n' => TupleColumn::Null,
            b'u' => TupleColumn::UnchangedToast,
            b't' => TupleColumn::Text(c.bytes("text column value")?),
            b'b' => TupleColumn::Binary(c.bytes("binary column value")?),
            byte => return unexpected("tuple column kind (expected 'n', 'u', 't' or 'b')", byte),
        });
    }
    Ok(TupleData { columns })
}

/// Appends each value in big-endian byte order.
macro_rules! be {
    ($out:expr, $($v:expr),+) => { $($out.extend_from_slice(&$v.to_be_bytes());)+ };
}

/// Encodes a message exactly as PostgreSQL's pgoutput (protocol v1) would.
///
/// # Panics
///
/// If the message cannot exist on the wire: a string containing a NUL byte,
/// more than `u16::MAX` columns, more than `u32::MAX` truncated relations, or
/// a value longer than `u32::MAX` bytes. Meant for tests and benchmarks.
pub fn encode(msg: &PgOutputMessage) -> Vec<u8> {
    let mut out = Vec::with_capacity(64);
    out.push(msg.tag());
    match msg {
        PgOutputMessage::Begin {
            final_lsn,
            commit_time_micros,
            xid,
        } => {
            be!(out, final_lsn, commit_time_micros, xid);
        }
        PgOutputMessage::Commit {
            flags,
            commit_lsn,
            end_lsn,
            commit_time_micros,
        } => {
            out.push(*flags);
            be!(out, commit_lsn, end_lsn, commit_time_micros);
        }
        PgOutputMessage::Origin { commit_lsn, name } => {
            be!(out, commit_lsn);
            put_string(&mut out, name);
        }
        PgOutputMessage::Relation(rel) => {
            be!(out, rel.id);
            put_string(&mut out, &rel.namespace);
            put_string(&mut out, &rel.name);
            out.push(rel.replica_identity);
            put_count16(&mut out, rel.columns.len());
            for col in &rel.columns {
                out.push(u8::from(col.is_key));
                put_string(&mut out, &col.name);
                be!(out, col.type_oid, col.type_modifier);
            }
        }
        PgOutputMessage::Type {
            id,
            namespace,
            name,
        } => {
            be!(out, id);
            put_string(&mut out, namespace);
            put_string(&mut out, name);
        }
        PgOutputMessage::Insert { relation_id, new } => {
            be!(out, relation_id);
            out.push(b'N');
            put_tuple(&mut out, new);
        }
        PgOutputMessage::Update {
            relation_id,
            old,
            new,
        } => {
            be!(out, relation_id);
            if let Some(old) = old {
                put_old_tuple(&mut out, old);
            }
            out.push(b'N');
            put_tuple(&mut out, new);
        }
        PgOutputMessage::Delete { relation_id, old } => {
            be!(out, relation_id);
            put_old_tuple(&mut out, old);
        }
        PgOutputMessage::Truncate {
            options,
            relation_ids,
        } => {
            let count = u32::try_from(relation_ids.len()).expect("too many truncated relations");
            be!(out, count);
            out.push(*options);
            for id in relation_ids {
                be!(out, id);
            }
        }
        PgOutputMessage::Message {
            transactional,
            lsn,
            prefix,
            content,
        } => {
            out.push(u8::from(*transactional));
            be!(out, lsn);
            put_string(&mut out, prefix);
            put_bytes(&mut out, content);
        }
    }
    out
}

fn put_string(out: &mut Vec<u8>, s: &str) {
    assert!(!s.contains('\0'), "pgoutput strings cannot contain NUL");
    out.extend_from_slice(s.as_bytes());
    out.push(0);
}

fn put_count16(out: &mut Vec<u8>, n: usize) {
    let n = u16::try_from(n).expect("more than 65535 columns");
    be!(out, n);
}

fn put_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    let len = u32::try_from(bytes.len()).expect("value longer than u32::MAX bytes");
    be!(out, len);
    out.extend_from_slice(bytes);
}

fn put_old_tuple(out: &mut Vec<u8>, old: &OldTuple) {
    out.push(match old {
        OldTuple::Key(_) => b'K',
        OldTuple::Full(_) => b'O',
    });
    put_tuple(out, old.tuple());
}

fn put_tuple(out: &mut Vec<u8>, tuple: &TupleData) {
    put_count16(out, tuple.columns.len());
    for col in &tuple.columns {
        match col {
            TupleColumn::Null => out.push(b'n'),
            TupleColumn::UnchangedToast => out.push(b'u'),
            TupleColumn::Text(v) => {
                out.push(b't');
                put_bytes(out, v);
            }
            TupleColumn::Binary(v) => {
                out.push(b'b');
                put_bytes(out, v);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::collection::vec;
    use proptest::prelude::*;
    use proptest::sample::{select, Index};
    use PgOutputMessage as M;
    use TupleColumn::{Binary, Null, Text, UnchangedToast};

    fn text(s: &str) -> TupleColumn {
        Text(s.as_bytes().to_vec())
    }

    fn tuple(columns: Vec<TupleColumn>) -> TupleData {
        TupleData { columns }
    }

    /// Hand-written wire bytes must decode to `expected`, and `encode` must
    /// reproduce them byte for byte.
    fn check(payload: &[u8], expected: PgOutputMessage) {
        assert_eq!(
            decode(payload).as_ref(),
            Ok(&expected),
            "decoding {payload:x?}"
        );
        assert_eq!(encode(&expected), payload, "encoding {expected:?}");
    }

    fn col(is_key: bool, name: &str, type_oid: u32, type_modifier: i32) -> RelationColumn {
        let name = name.into();
        RelationColumn {
            is_key,
            name,
            type_oid,
            type_modifier,
        }
    }

    #[test]
    fn relation() {
        let p = b"R\0\0\x40\x01public\0orders\0d\0\x02\
                  \x01id\0\0\0\0\x17\xff\xff\xff\xff\
                  \0note\0\0\0\x04\x13\0\0\0\x24";
        let columns = vec![col(true, "id", 23, -1), col(false, "note", 1043, 36)];
        let (namespace, name) = ("public".into(), "orders".into());
        let replica_identity = b'd';
        check(
            p,
            M::Relation(Relation {
                id: 0x4001,
                namespace,
                name,
                replica_identity,
                columns,
            }),
        );
    }

    #[test]
    fn insert_with_all_four_column_kinds() {
        let p = b"I\0\0\x40\x01N\0\x04nut\0\0\0\x03abcb\0\0\0\x02\xde\xad";
        let new = tuple(vec![
            Null,
            UnchangedToast,
            text("abc"),
            Binary(vec![0xde, 0xad]),
        ]);
        check(
            p,
            M::Insert {
                relation_id: 0x4001,
                new,
            },
        );
    }

    #[test]
    fn update_without_old_with_key_and_with_full_old_tuple() {
        let (relation_id, new) = (7, tuple(vec![text("1"), text("b")]));
        let update = |old| M::Update {
            relation_id,
            old,
            new: new.clone(),
        };
        check(b"U\0\0\0\x07N\0\x02t\0\0\0\x011t\0\0\0\x01b", update(None));
        let key = OldTuple::Key(tuple(vec![text("2"), Null]));
        let p = b"U\0\0\0\x07K\0\x02t\0\0\0\x012nN\0\x02t\0\0\0\x011t\0\0\0\x01b";
        check(p, update(Some(key)));
        let full = OldTuple::Full(tuple(vec![text("1"), text("a")]));
        let p = b"U\0\0\0\x07O\0\x02t\0\0\0\x011t\0\0\0\x01aN\0\x02t\0\0\0\x011t\0\0\0\x01b";
        check(p, update(Some(full)));
    }

    #[test]
    fn delete_with_key_and_full_old_tuple() {
        let relation_id = 7;
        let old = OldTuple::Key(tuple(vec![text("1"), Null]));
        check(
            b"D\0\0\0\x07K\0\x02t\0\0\0\x011n",
            M::Delete { relation_id, old },
        );
        let old = OldTuple::Full(tuple(vec![UnchangedToast]));
        check(b"D\0\0\0\x07O\0\x01u", M::Delete { relation_id, old });
    }

    #[test]
    fn truncate_several_relations() {
        let p = b"T\0\0\0\x03\x03\0\0\x40\x01\0\0\x40\x02\0\0\x40\x03";
        let options = TRUNCATE_CASCADE | TRUNCATE_RESTART_IDENTITY;
        let relation_ids = vec![0x4001, 0x4002, 0x4003];
        check(
            p,
            M::Truncate {
                options,
                relation_ids,
            },
        );
    }

    #[test]
    fn transaction_origin_type_and_logical_messages() {
        let lsn: &[u8] = b"\0\0\0\x01\0\0\0\x10";
        let ts: &[u8] = b"\0\x02\0\0\0\0\0\x05";
        let (commit_lsn, commit_time_micros) = (0x1_0000_0010, 0x2_0000_0000_0005);
        let begin = M::Begin {
            final_lsn: commit_lsn,
            commit_time_micros,
            xid: 500,
        };
        check(&[b"B", lsn, ts, b"\0\0\x01\xf4"].concat(), begin);
        let end_lsn = 0x1_0000_0020;
        let commit = M::Commit {
            flags: 0,
            commit_lsn,
            end_lsn,
            commit_time_micros,
        };
        check(&[b"C\0", lsn, b"\0\0\0\x01\0\0\0\x20", ts].concat(), commit);
        let name = "upstream".into();
        check(
            &[b"O", lsn, b"upstream\0"].concat(),
            M::Origin { commit_lsn, name },
        );
        let (namespace, name) = ("app".into(), "mood".into());
        check(
            b"Y\0\0\x50\0app\0mood\0",
            M::Type {
                id: 0x5000,
                namespace,
                name,
            },
        );
        let (prefix, content) = ("dmv".into(), b"hi".to_vec());
        let msg = M::Message {
            transactional: true,
            lsn: commit_lsn,
            prefix,
            content,
        };
        check(&[b"M\x01", lsn, b"dmv\0\0\0\0\x02hi"].concat(), msg);
    }

    #[test]
    fn malformed_payloads_give_typed_errors() {
        use DecodeError::*;
        let trunc = |what, needed, remaining| Truncated {
            what,
            needed,
            remaining,
        };
        let string = |problem| InvalidString {
            what: "Type namespace",
            problem,
        };
        let byte = |what, byte| UnexpectedByte { what, byte };
        #[rustfmt::skip]
        let cases: &[(&[u8], DecodeError)] = &[
            (b"", Empty),
            (b"Z", UnknownTag(b'Z')),
            (b"B\0\0", trunc("Begin final LSN", 8, 2)),
            (b"Y\0\0\0\x01public", string("missing nul terminator")),
            (b"Y\0\0\0\x01\xff\0x\0", string("not valid UTF-8")),
            (b"I\0\0\0\x01X\0\0", byte("Insert tuple marker (expected 'N')", b'X')),
            (b"I\0\0\0\x01N\0\x01x", byte("tuple column kind (expected 'n', 'u', 't' or 'b')", b'x')),
            (b"U\0\0\0\x01K\0\x01nK\0\0", byte("Update new-tuple marker (expected 'N')", b'K')),
            (b"D\0\0\0\x01N\0\0", byte("Delete tuple marker (expected 'K' or 'O')", b'N')),
            (b"R\0\0\0\x01\0t\0x\0\0",
             byte("Relation replica identity (expected 'd', 'n', 'f' or 'i')", b'x')),
            (b"R\0\0\0\x01\0t\0d\0\x01\x02c\0\0\0\0\x17\0\0\0\0",
             byte("Relation column flags (expected 0 or 1)", 2)),
            (b"M\x02\0\0\0\0\0\0\0\0p\0\0\0\0\0", byte("Message flags (expected 0 or 1)", 2)),
            (b"B\0\0\0\0\0\0\0\x01\0\0\0\0\0\0\0\0\0\0\0\x01!", TrailingBytes { message: 'B', count: 1 }),
            // Hostile lengths and counts are rejected before any allocation.
            (b"I\0\0\0\x01N\0\x01t\xff\xff\xff\xff", trunc("text column value", 0xffff_ffff, 0)),
            (b"I\0\0\0\x01N\xff\xff", trunc("tuple column kind", 1, 0)),
            (b"T\xff\xff\xff\xff\0\0\0\0\x01", trunc("Truncate relation ids", 4 * 0xffff_ffff, 4)),
            (b"M\0\0\0\0\0\0\0\0\x01p\0\x7f\xff\xff\xff", trunc("Message content", 0x7fff_ffff, 0)),
        ];
        for (payload, expected) in cases {
            assert_eq!(decode(payload).as_ref(), Err(expected), "{payload:x?}");
        }
        for tag in *b"SEcAbPKrp" {
            let payload = [tag, 0, 0, 0, 1];
            assert_eq!(decode(&payload), Err(UnsupportedMessage(char::from(tag))));
        }
    }

    #[test]
    fn errors_read_well() {
        let msg = |p: &[u8]| decode(p).map_or_else(|e| e.to_string(), |m| format!("{m:?}"));
        let truncated =
            "pgoutput message truncated at text column value: needed 9 bytes, only 3 left";
        assert_eq!(msg(b"I\0\0\0\x01N\0\x01t\0\0\0\x09abc"), truncated);
        assert_eq!(msg(b"\x01"), "unknown pgoutput message tag 0x01");
        let marker = "unexpected byte 'N' (0x4e) in Delete tuple marker (expected 'K' or 'O')";
        assert_eq!(msg(b"D\0\0\0\x01N"), marker);
    }

    fn arb_string() -> impl Strategy<Value = String> {
        "[^\\x00]{0,12}"
    }

    fn arb_tuple() -> impl Strategy<Value = TupleData> {
        let bytes = || vec(any::<u8>(), 0..12);
        let column = prop_oneof![
            Just(Null),
            Just(UnchangedToast),
            bytes().prop_map(Text),
            bytes().prop_map(Binary)
        ];
        vec(column, 0..8).prop_map(tuple)
    }

    fn arb_old() -> impl Strategy<Value = OldTuple> {
        prop_oneof![
            arb_tuple().prop_map(OldTuple::Key),
            arb_tuple().prop_map(OldTuple::Full)
        ]
    }

    fn arb_message() -> impl Strategy<Value = PgOutputMessage> {
        let column = (any::<bool>(), arb_string(), any::<u32>(), any::<i32>()).prop_map(
            |(is_key, name, type_oid, type_modifier)| RelationColumn {
                is_key,
                name,
                type_oid,
                type_modifier,
            },
        );
        let relation = (
            any::<u32>(),
            arb_string(),
            arb_string(),
            select(b"dnfi".to_vec()),
            vec(column, 0..6),
        )
            .prop_map(|(id, namespace, name, replica_identity, columns)| {
                M::Relation(Relation {
                    id,
                    namespace,
                    name,
                    replica_identity,
                    columns,
                })
            });
        prop_oneof![
            any::<(u64, i64, u32)>().prop_map(|(final_lsn, commit_time_micros, xid)| M::Begin {
                final_lsn,
                commit_time_micros,
                xid
            }),
            any::<(u8, u64, u64, i64)>().prop_map(
                |(flags, commit_lsn, end_lsn, commit_time_micros)| {
                    M::Commit {
                        flags,
                        commit_lsn,
                        end_lsn,
                        commit_time_micros,
                    }
                }
            ),
            (any::<u64>(), arb_string())
                .prop_map(|(commit_lsn, name)| M::Origin { commit_lsn, name }),
            relation,
            (any::<u32>(), arb_string(), arb_string()).prop_map(|(id, namespace, name)| M::Type {
                id,
                namespace,
                name
            }),
            (any::<u32>(), arb_tuple())
                .prop_map(|(relation_id, new)| M::Insert { relation_id, new }),
            (any::<u32>(), proptest::option::of(arb_old()), arb_tuple()).prop_map(
                |(relation_id, old, new)| M::Update {
                    relation_id,
                    old,
                    new
                }
            ),
            (any::<u32>(), arb_old()).prop_map(|(relation_id, old)| M::Delete { relation_id, old }),
            (any::<u8>(), vec(any::<u32>(), 0..8)).prop_map(|(options, relation_ids)| {
                M::Truncate {
                    options,
                    relation_ids,
                }
            }),
            (
                any::<bool>(),
                any::<u64>(),
                arb_string(),
                vec(any::<u8>(), 0..16)
            )
                .prop_map(|(transactional, lsn, prefix, content)| M::Message {
                    transactional,
                    lsn,
                    prefix,
                    content
                }),
        ]
    }

    /// The decoder is strict, so whatever it accepts must re-encode to the
    /// exact same bytes.
    fn check_canonical(payload: &[u8]) -> Result<(), TestCaseError> {
        if let Ok(msg) = decode(payload) {
            prop_assert_eq!(encode(&msg), payload);
        }
        Ok(())
    }

    proptest! {
        #![proptest_config(ProptestConfig {
            cases: ProptestConfig::default().cases.max(2048),
            ..ProptestConfig::default()
        })]

        #[test]
        fn encode_decode_round_trip(msg in arb_message()) {
            prop_assert_eq!(decode(&encode(&msg)), Ok(msg));
        }

        #[test]
        fn arbitrary_bytes_never_panic(
            tag in prop_oneof![select(b"BCORYIUDTMSEcAbPKrp".to_vec()), any::<u8>()],
            body in vec(any::<u8>(), 0..64),
        ) {
            check_canonical(&[&[tag][..], &body].concat())?;
        }

        #[test]
        fn mutated_encodings_never_panic(
            msg in arb_message(),
            op in 0..5u8,
            at in any::<Index>(),
            byte in 1..=255u8,
            extra in vec(any::<u8>(), 1..8),
        ) {
            let mut p = encode(&msg);
            let i = at.index(p.len());
            match op {
                0 => p[i] ^= byte,
                1 => {
                    p.truncate(i);
                    prop_assert!(decode(&p).is_err(), "prefix of a valid message decoded");
                }
                2 => {
                    p.extend_from_slice(&extra);
                    let trailing = DecodeError::TrailingBytes { message: char::from(msg.tag()), count: extra.len() };
                    prop_assert_eq!(decode(&p), Err(trailing));
                }
                3 => p.insert(i, byte),
                _ => {
                    p.remove(i);
                }
            }
            check_canonical(&p)?;
        }
    }
}
