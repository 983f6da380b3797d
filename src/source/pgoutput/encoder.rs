//! [`encode`]: the exact inverse of `decode`, producing the bytes PostgreSQL
//! would send; for tests and benchmarks that need payloads without a server.

use super::{OldTuple, PgOutputMessage, TupleColumn, TupleData};

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
