//! Key layout of the state store.
//!
//! Keys start with the owner (table or view id) so that one table's row images, one view's groups
//! and one table's or view's time index are contiguous ranges: a TRUNCATE or a rebuild scans a
//! prefix, and a later split of views or group ranges across engines moves whole ranges.
//! Time-index keys put the date right after the owner, big-endian with the sign bit flipped, so a
//! prefix scan visits due entries in date order and stops at the first one not yet due. Source
//! rows are filed under their table id with bit 14 set ([`row_time_key`]), once per row whatever
//! the number of its views; groups of a view's stages under the view id with bit 15 set
//! ([`group_time_key`]).

use std::cell::RefCell;

use serde::{de::DeserializeOwned, Serialize};

use crate::value::Value;

/// Column families: one per kind of state.
pub const CF_META: &str = "meta";
pub const CF_ROWS: &str = "rows";
pub const CF_GROUPS: &str = "groups";
pub const CF_TIME: &str = "time_index";
pub const ALL_CFS: [&str; 4] = [CF_META, CF_ROWS, CF_GROUPS, CF_TIME];

thread_local! {
    /// Where values are encoded before being copied out at their exact size: bincode's own
    /// `serialize` walks a value twice, once only to size its output (a group's multisets and
    /// rows twice over: 4.4% of a catch-up's samples, 2026-12-05), `serialize_into` once.
    static SCRATCH: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// Encodes into the thread's scratch buffer (a buffer of its own when re-entered from inside a
/// value's own serializer), then copies the bytes out at their exact size.
fn with_scratch(write: impl Fn(&mut Vec<u8>) -> bincode::Result<()>) -> Vec<u8> {
    SCRATCH.with(|cell| match cell.try_borrow_mut() {
        Ok(mut buf) => {
            buf.clear();
            match write(&mut buf) {
                Ok(()) => buf.to_vec(),
                Err(_) => Vec::new(),
            }
        }
        Err(_) => {
            let mut own = Vec::new();
            match write(&mut own) {
                Ok(()) => own,
                Err(_) => Vec::new(),
            }
        }
    })
}

/// A compact, deterministic encoding of values (used for keys and meta entries): bincode with
/// fixed-width integers, as `bincode::serialize` writes it. Keys keep it: their bytes order the
/// store, and existing keys must keep their place.
pub fn encode<T: Serialize>(v: &T) -> Vec<u8> {
    with_scratch(|buf| bincode::serialize_into(buf, v))
}

/// The version of [`encode_record`]'s format, part of the state's fingerprint
/// (`setup::prepare`): a state written in another format is rebuilt from a fresh snapshot,
/// never misread. 2: records in variable-length integers (before: fixed-width). 3: a float
/// sum's exact integer without its zero low bits (`exact_float`). 4: aggregates of the same
/// state and input share one accumulator (`ops::Accumulators`). 5: a group's output rows are
/// not stored (computed again from its state when read). 6: one time-index entry per source
/// row, under its table ([`row_time_key`]; before: one per view). 7: groups, not rows, are
/// filed for windows their day key decides (`maintain::view::window`). 8: large groups are
/// stored as a base and journal entries (`maintain::journal`).
pub const RECORD_FORMAT: u32 = 8;

/// The encoding of records (group states and row images, the bulk of what every checkpoint
/// flushes and every compaction rewrites): bincode with variable-length integers, so enum tags,
/// lengths and small counts take a byte instead of four or eight. A seed view's group record
/// takes about half the bytes (`maintain::groups` tests): the engine's CPU per change in
/// catch-up fell 8%, as flushes and compactions write less (bench/results, step 10).
pub fn encode_record<T: Serialize>(v: &T) -> Vec<u8> {
    use bincode::Options;
    with_scratch(|buf| bincode::DefaultOptions::new().serialize_into(buf, v))
}

/// Reads what [`encode_record`] wrote (trailing bytes are an error).
pub fn decode_record<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, bincode::Error> {
    use bincode::Options;
    bincode::DefaultOptions::new().deserialize(bytes)
}

pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, bincode::Error> {
    bincode::deserialize(bytes)
}

/// Encodes a group key after normalising it as PostgreSQL groups (-0 with 0, NaNs together).
pub fn group_key_bytes(values: &[Value]) -> Vec<u8> {
    let normalized: Vec<Value> = values.iter().cloned().map(Value::group_identity).collect();
    encode(&normalized)
}

/// Appends [`group_key`] of [`group_key_bytes`] to `buf`, without the two intermediate vectors
/// (two allocations and copies per input): a view's pending inputs keep their keys in one
/// buffer.
pub fn push_group_key(buf: &mut Vec<u8>, view: u16, stage: u8, values: &[Value]) {
    let start = buf.len();
    buf.extend_from_slice(&view.to_be_bytes());
    buf.push(stage);
    // A sequence in bincode's default encoding: its length as a little-endian u64, then the
    // elements, as `group_key_bytes` writes the normalized vector.
    buf.extend_from_slice(&(values.len() as u64).to_le_bytes());
    for v in values {
        if bincode::serialize_into(&mut *buf, &*v.group_identity_ref()).is_err() {
            // Writing a value into a vector does not fail; were it to, the slow path says the same.
            buf.truncate(start);
            buf.extend(group_key(view, stage, &group_key_bytes(values)));
            return;
        }
    }
}

/// The length of the prefix all `keys` share (0 for none).
pub fn shared_prefix<'a>(mut keys: impl Iterator<Item = &'a [u8]>) -> usize {
    let Some(first) = keys.next() else {
        return 0;
    };
    keys.fold(first.len(), |n, k| {
        n.min(
            first
                .iter()
                .zip(k)
                .take(n)
                .take_while(|(a, b)| a == b)
                .count(),
        )
    })
}

/// The eight bytes of `key` after its first `shared`, big-endian and zero-padded: keys that
/// share those bytes are in byte order when ordered by this, then by their rest.
pub fn head_after(key: &[u8], shared: usize) -> u64 {
    let mut bytes = [0u8; 8];
    let rest = &key[shared.min(key.len())..];
    let n = rest.len().min(8);
    bytes[..n].copy_from_slice(&rest[..n]);
    u64::from_be_bytes(bytes)
}

/// The positions of `keys` in the order of their bytes, equal keys in their own order (a
/// stable sort). Keys of one view or table begin alike (owner, stage, bincode's lengths and
/// tags: twenty bytes or more), and a plain sort spent most of its time comparing those again;
/// this sorts each key's next eight bytes and position, sixteen bytes an item, and compares
/// the rest only where those eight bytes are equal.
pub fn byte_order(keys: &[&[u8]]) -> Vec<usize> {
    let shared = shared_prefix(keys.iter().copied());
    let mut order: Vec<(u64, usize)> = (keys.iter().enumerate())
        .map(|(i, k)| (head_after(k, shared), i))
        .collect();
    order.sort_unstable_by(|(ha, a), (hb, b)| {
        (ha.cmp(hb))
            .then_with(|| keys[*a][shared..].cmp(&keys[*b][shared..]))
            .then(a.cmp(b))
    });
    order.into_iter().map(|(_, i)| i).collect()
}

pub fn row_key(table: u16, pk: &[Value]) -> Vec<u8> {
    let mut k = table.to_be_bytes().to_vec();
    k.extend(encode(&pk.to_vec()));
    k
}

pub fn table_prefix(table: u16) -> Vec<u8> {
    table.to_be_bytes().to_vec()
}

pub fn group_prefix(view: u16, stage: u8) -> Vec<u8> {
    let mut k = view.to_be_bytes().to_vec();
    k.push(stage);
    k
}

pub fn group_key(view: u16, stage: u8, key_bytes: &[u8]) -> Vec<u8> {
    let mut k = group_prefix(view, stage);
    k.extend_from_slice(key_bytes);
    k
}

/// The stage a [`group_key`] belongs to.
pub fn group_key_stage(key: &[u8]) -> Option<u8> {
    key.get(2).copied()
}

fn time_prefix(owner: u16) -> Vec<u8> {
    owner.to_be_bytes().to_vec()
}

fn date_bytes(date: i32) -> [u8; 4] {
    ((date as u32) ^ 0x8000_0000).to_be_bytes()
}

/// Marks the row time index of a table (table ids stay below it: [`MAX_TABLES`]).
const ROW_TIME_BIT: u16 = 0x4000;

/// How many source tables and views one state can hold: their ids, with the marks of the two
/// time indexes, must not collide (`setup::prepare` refuses more).
pub const MAX_TABLES: usize = ROW_TIME_BIT as usize;
pub const MAX_VIEWS: usize = GROUP_TIME_BIT as usize;

/// The range of table `table`'s rows in the time index.
pub fn row_time_prefix(table: u16) -> Vec<u8> {
    time_prefix(table | ROW_TIME_BIT)
}

/// The time-index key of row `row_key` of table `table`, filed at `date`: a row has one entry,
/// at the earliest date one of its views must revisit it (its record lists each view's date).
pub fn row_time_key(table: u16, date: i32, row_key: &[u8]) -> Vec<u8> {
    let mut k = row_time_prefix(table);
    k.extend_from_slice(&date_bytes(date));
    k.extend_from_slice(row_key);
    k
}

/// Marks the group time index of a view (view ids stay below it: [`MAX_VIEWS`]).
const GROUP_TIME_BIT: u16 = 0x8000;

pub fn group_time_prefix(view: u16) -> Vec<u8> {
    time_prefix(view | GROUP_TIME_BIT)
}

/// The time-index key of group `key_bytes` of stage `stage`: [`split_time_key`] gives back the
/// date and `stage` followed by the key bytes.
pub fn group_time_key(view: u16, date: i32, stage: u8, key_bytes: &[u8]) -> Vec<u8> {
    let mut k = group_time_prefix(view);
    k.extend_from_slice(&date_bytes(date));
    k.push(stage);
    k.extend_from_slice(key_bytes);
    k
}

/// Splits a time-index key into its date and the rest (a row key, or a stage and group key).
pub fn split_time_key(key: &[u8]) -> Option<(i32, &[u8])> {
    let date = key.get(2..6)?;
    let raw = u32::from_be_bytes([date[0], date[1], date[2], date[3]]) ^ 0x8000_0000;
    Some((raw as i32, key.get(6..)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A group's key written in one buffer is the key the two-step form writes: every stored
    /// group is found by it.
    #[test]
    fn group_keys_in_one_buffer_are_the_same_bytes() {
        let numeric =
            |t: &str| Value::Numeric(crate::numeric::Numeric::parse(t).expect("a numeric literal"));
        let keys: Vec<Vec<Value>> = vec![
            vec![],
            vec![
                Value::Uuid([7; 16]),
                Value::Uuid([9; 16]),
                Value::Date(20_400),
            ],
            vec![Value::Float(-0.0), Value::Float(f64::NAN), Value::Null],
            vec![numeric("1.50"), numeric("-0.000"), numeric("NaN")],
            vec![
                numeric("10"),
                numeric("1.05"),
                numeric("-2.500"),
                numeric("0.10"),
            ],
            vec![Value::Text("é".into()), Value::Int(-3), Value::Bool(true)],
            vec![Value::TimestampTz(-1), Value::Timestamp(i64::MAX)],
        ];
        let mut buffer = Vec::new();
        let mut each = Vec::new();
        for key in keys {
            let mut alone = Vec::new();
            push_group_key(&mut alone, 3, 1, &key);
            assert_eq!(alone, group_key(3, 1, &group_key_bytes(&key)), "{key:?}");
            push_group_key(&mut buffer, 3, 1, &key);
            each.extend(alone);
        }
        assert_eq!(
            buffer, each,
            "keys pushed into one buffer follow each other"
        );
    }

    /// The scratch-buffer encoding writes exactly what `bincode::serialize` writes (what
    /// every stored group, row and meta value was written with), nested and reused alike.
    #[test]
    fn encode_writes_bincodes_bytes() {
        let numeric = |t: &str| Value::Numeric(t.parse().unwrap_or_else(|e| panic!("{e}")));
        let values = vec![
            Value::Null,
            Value::Bool(true),
            Value::Int(-42),
            Value::Float(-0.0),
            Value::Float(f64::NAN),
            numeric("1.50"),
            numeric("-123456789012345678901234567890.000001"),
            numeric("NaN"),
            Value::Text("ünïcode and a long enough text to grow the buffer".repeat(40)),
            Value::Uuid([7; 16]),
            Value::Date(-5),
            Value::Timestamp(i64::MIN),
            Value::TimestampTz(1_700_000_000_000_000),
        ];
        let nested: Vec<(Vec<Value>, Option<i64>)> =
            vec![(values.clone(), Some(3)), (vec![], None)];
        for _ in 0..2 {
            assert_eq!(
                encode(&values),
                bincode::serialize(&values).unwrap_or_default()
            );
            assert_eq!(
                encode(&nested),
                bincode::serialize(&nested).unwrap_or_default()
            );
            assert_eq!(encode(&7u8), vec![7]);
        }
    }

    #[test]
    fn time_keys_sort_by_date_including_negative_dates() {
        let a = row_time_key(1, -5, b"x");
        let b = row_time_key(1, 3, b"a");
        let c = row_time_key(1, 40000, b"a");
        assert!(a < b && b < c);
        assert_eq!(split_time_key(&a), Some((-5, &b"x"[..])));
    }

    #[test]
    fn row_and_group_time_keys_are_ranges_apart_from_each_other_and_from_rows() {
        let g = group_time_key(1, 3, 2, b"k");
        let r = row_time_key(1, 3, b"k");
        for (key, own, others) in [
            (
                &g,
                group_time_prefix(1),
                [row_time_prefix(1), table_prefix(1)],
            ),
            (
                &r,
                row_time_prefix(1),
                [group_time_prefix(1), table_prefix(1)],
            ),
        ] {
            assert!(key.starts_with(&own));
            assert!(others.iter().all(|p| !key.starts_with(p)));
        }
        assert_eq!(split_time_key(&g), Some((3, &b"\x02k"[..])));
    }

    proptest::proptest! {
        /// `byte_order` is a stable sort by bytes, whatever the keys share.
        #[test]
        fn byte_order_is_a_stable_sort_by_bytes(
            shared in 0usize..24,
            tails in proptest::collection::vec(proptest::collection::vec(0u8..3, 0..12), 0..40),
        ) {
            let keys: Vec<Vec<u8>> = (tails.into_iter())
                .map(|tail| [vec![7u8; shared], tail].concat())
                .collect();
            let refs: Vec<&[u8]> = keys.iter().map(Vec::as_slice).collect();
            let mut stable: Vec<usize> = (0..keys.len()).collect();
            stable.sort_by(|a, b| keys[*a].cmp(&keys[*b]));
            proptest::prop_assert_eq!(byte_order(&refs), stable);
        }
    }

    #[test]
    fn group_keys_normalise_negative_zero_and_numeric_scale() {
        assert_eq!(
            group_key_bytes(&[Value::Float(-0.0)]),
            group_key_bytes(&[Value::Float(0.0)])
        );
        let num = |s: &str| Value::Numeric(crate::numeric::Numeric::parse(s).expect("numeric"));
        assert_eq!(
            group_key_bytes(&[num("1.50")]),
            group_key_bytes(&[num("1.5")])
        );
        assert_ne!(
            group_key_bytes(&[num("1.05")]),
            group_key_bytes(&[num("1.5")])
        );
        for (a, b) in [("-2.500", "-2.5"), ("0.000", "0"), ("100.00", "100")] {
            assert_eq!(
                group_key_bytes(&[num(a)]),
                group_key_bytes(&[num(b)]),
                "{a}"
            );
        }
        assert_ne!(group_key_bytes(&[num("10")]), group_key_bytes(&[num("1")]));
        assert_eq!(
            group_key_bytes(&[Value::Float(-f64::NAN)]),
            group_key_bytes(&[Value::Float(f64::NAN)])
        );
    }
}
