//! [`decode`]: a total, strict reader of one pgoutput v1 payload, built on
//! a bounds-checked `Cursor` (the never-panic contract in the module doc).

use super::{
    DecodeError, OldTuple, PgOutputMessage, Relation, RelationColumn, TupleColumn, TupleData,
};

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
