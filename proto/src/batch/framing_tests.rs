//! One definition of a well-framed records section: what the append-time validator
//! accepts is exactly what the record parser (every reader) decodes.

use proptest::prelude::*;

use super::view::validate_records;
use super::Records;

/// A zig-zag varint of `v`, padded with `extra` redundant continuation bytes (an
/// overlong encoding of the same value; `extra = 0` is the shortest form).
fn put_padded(out: &mut Vec<u8>, v: i64, extra: usize) {
    let mut z = ((v << 1) ^ (v >> 63)) as u64;
    let mut groups = Vec::new();
    loop {
        groups.push((z & 0x7f) as u8);
        z >>= 7;
        if z == 0 {
            break;
        }
    }
    groups.extend(std::iter::repeat_n(0, extra));
    let last = groups.len() - 1;
    for (i, g) in groups.into_iter().enumerate() {
        out.push(if i < last { g | 0x80 } else { g });
    }
}

/// A byte string (`None`: null) and the padding of its length varint.
type Padded = (Option<Vec<u8>>, usize);

/// One record to encode, every varint with its own padding.
#[derive(Debug, Clone)]
struct Spec {
    length_pad: usize,
    timestamp_delta: (i64, usize),
    offset_delta: (i64, usize),
    key: Padded,
    value: Padded,
    header_count_pad: usize,
    headers: Vec<((Vec<u8>, usize), Padded)>,
}

fn put_bytes(out: &mut Vec<u8>, (b, pad): &Padded) {
    match b {
        None => put_padded(out, -1, *pad),
        Some(b) => {
            put_padded(out, b.len() as i64, *pad);
            out.extend_from_slice(b);
        }
    }
}

fn encode(specs: &[Spec]) -> Vec<u8> {
    let mut out = Vec::new();
    for s in specs {
        let mut body = vec![0u8]; // attributes
        put_padded(&mut body, s.timestamp_delta.0, s.timestamp_delta.1);
        put_padded(&mut body, s.offset_delta.0, s.offset_delta.1);
        put_bytes(&mut body, &s.key);
        put_bytes(&mut body, &s.value);
        put_padded(&mut body, s.headers.len() as i64, s.header_count_pad);
        for ((k, kpad), v) in &s.headers {
            put_bytes(&mut body, &(Some(k.clone()), *kpad));
            put_bytes(&mut body, v);
        }
        put_padded(&mut out, body.len() as i64, s.length_pad);
        out.extend_from_slice(&body);
    }
    out
}

/// Mostly short forms, sometimes padded to the edge of a varint's width and past it.
fn pad() -> impl Strategy<Value = usize> {
    prop_oneof![6 => Just(0usize), 1 => 1usize..=3, 2 => 3usize..=6, 1 => 7usize..=10]
}

fn bytes(max: usize) -> impl Strategy<Value = Padded> {
    (
        proptest::option::weighted(0.9, proptest::collection::vec(any::<u8>(), 0..max)),
        pad(),
    )
}

fn spec(index: i64) -> impl Strategy<Value = Spec> {
    (
        pad(),
        (prop_oneof![Just(0i64), -1000i64..1000, any::<i64>()], pad()),
        (
            // Mostly the right delta; sometimes a wrong one or one outside i32.
            prop_oneof![8 => Just(index), 1 => 0i64..4, 1 => Just(i32::MAX as i64 + 1 + index)],
            pad(),
        ),
        bytes(12),
        bytes(40),
        pad(),
        proptest::collection::vec(
            (
                (proptest::collection::vec(any::<u8>(), 0..6), pad()),
                bytes(6),
            ),
            0..3,
        ),
    )
        .prop_map(
            |(length_pad, timestamp_delta, offset_delta, key, value, header_count_pad, headers)| {
                Spec {
                    length_pad,
                    timestamp_delta,
                    offset_delta,
                    key,
                    value,
                    header_count_pad,
                    headers,
                }
            },
        )
}

/// Sections of 1 to 4 records, each with its own index as the expected offset delta.
fn specs() -> impl Strategy<Value = Vec<Spec>> {
    (1usize..=4).prop_flat_map(|n| (0..n as i64).map(spec).collect::<Vec<_>>())
}

#[derive(Debug, Clone)]
enum Mutation {
    None,
    Set(usize, u8),
    Insert(usize, u8),
    Remove(usize),
    Truncate(usize),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        4 => Just(Mutation::None),
        2 => (any::<usize>(), any::<u8>()).prop_map(|(i, b)| Mutation::Set(i, b)),
        1 => (any::<usize>(), any::<u8>()).prop_map(|(i, b)| Mutation::Insert(i, b)),
        1 => any::<usize>().prop_map(Mutation::Remove),
        1 => any::<usize>().prop_map(Mutation::Truncate),
    ]
}

fn mutate(mut s: Vec<u8>, m: &Mutation) -> Vec<u8> {
    let at = |i: usize, len: usize| if len == 0 { 0 } else { i % len };
    match *m {
        Mutation::None => {}
        Mutation::Set(i, b) if !s.is_empty() => {
            let i = at(i, s.len());
            s[i] = b;
        }
        Mutation::Insert(i, b) => {
            let i = at(i, s.len() + 1);
            s.insert(i, b);
        }
        Mutation::Remove(i) if !s.is_empty() => {
            s.remove(at(i, s.len()));
        }
        Mutation::Truncate(i) => s.truncate(at(i, s.len() + 1)),
        _ => {}
    }
    s
}

/// What a reader gets: exactly `count` records, each decoded, with offset deltas
/// 0, 1, 2, ... and nothing left over.
fn decodes(section: &[u8], count: usize) -> bool {
    let mut records = Records::new(section, count);
    let mut n = 0;
    for (i, r) in records.by_ref().enumerate() {
        match r {
            Ok(r) if r.offset_delta as usize == i => n += 1,
            _ => return false,
        }
    }
    n == count && records.rest_len() == 0
}

fn check(section: &[u8], count: usize) -> Result<(), TestCaseError> {
    let validated = validate_records(section, count);
    prop_assert_eq!(
        validated.is_ok(),
        decodes(section, count),
        "validator said {:?} for {} records in {:02x?}",
        validated,
        count,
        section
    );
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(4096))]

    /// Encoded records (overlong varints included), possibly damaged, with the right
    /// record count or one off.
    #[test]
    fn the_validator_accepts_exactly_what_readers_decode(
        specs in specs(),
        m in mutation(),
        count_off in prop_oneof![8 => Just(0i64), 1 => Just(-1i64), 1 => Just(1i64)],
    ) {
        let section = mutate(encode(&specs), &m);
        let count = (specs.len() as i64 + count_off).max(0) as usize;
        check(&section, count)?;
    }

    /// Random bytes.
    #[test]
    fn random_sections_are_judged_alike(
        section in proptest::collection::vec(any::<u8>(), 0..64),
        count in 0usize..4,
    ) {
        check(&section, count)?;
    }
}

#[test]
fn varint_widths_are_those_of_the_format() {
    let record = |offset_pad: usize, ts_pad: usize| {
        let spec = Spec {
            length_pad: 0,
            timestamp_delta: (7, ts_pad),
            offset_delta: (0, offset_pad),
            key: (Some(b"k".to_vec()), 0),
            value: (None, 0),
            header_count_pad: 0,
            headers: vec![],
        };
        encode(&[spec])
    };
    // A varint field may take up to 5 bytes, a varlong up to 10 (as Kafka's
    // ByteUtils.readVarint / readVarlong).
    assert!(validate_records(&record(4, 0), 1).is_ok());
    assert!(validate_records(&record(5, 0), 1).is_err(), "6-byte varint");
    assert!(validate_records(&record(0, 9), 1).is_ok());
    assert!(
        validate_records(&record(0, 10), 1).is_err(),
        "11-byte varlong"
    );
    for pad in 0..12 {
        assert_eq!(
            validate_records(&record(pad, 0), 1).is_ok(),
            decodes(&record(pad, 0), 1),
            "offset delta padded by {pad}"
        );
    }
}
