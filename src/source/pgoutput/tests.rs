//! Unit tests: hand-written wire bytes in both directions, typed errors for
//! malformed payloads, and property tests of the never-panic contract.

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
    let truncated = "pgoutput message truncated at text column value: needed 9 bytes, only 3 left";
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
        (any::<u64>(), arb_string()).prop_map(|(commit_lsn, name)| M::Origin { commit_lsn, name }),
        relation,
        (any::<u32>(), arb_string(), arb_string()).prop_map(|(id, namespace, name)| M::Type {
            id,
            namespace,
            name
        }),
        (any::<u32>(), arb_tuple()).prop_map(|(relation_id, new)| M::Insert { relation_id, new }),
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
