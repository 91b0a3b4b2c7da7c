use proptest::prelude::*;

use super::*;

fn fetch_sample() -> v1::FetchResponse {
    v1::FetchResponse {
        partitions: vec![
            v1::PartitionData {
                topic: "t".into(),
                partition: 7,
                records: Bytes::from(vec![9u8; 70_000]),
                high_watermark: 1 << 50,
                log_start_offset: 3,
            },
            v1::PartitionData {
                topic: "ü".into(),
                partition: 0,
                records: Bytes::new(),
                high_watermark: 0,
                log_start_offset: 0,
            },
            v1::PartitionData {
                topic: "u".into(),
                partition: 1,
                records: Bytes::from_static(b"abc"),
                high_watermark: 9,
                log_start_offset: 0,
            },
        ],
    }
}

fn produce_sample() -> v1::ProduceRequest {
    v1::ProduceRequest {
        topic: "orders".into(),
        acks: 2,
        partitions: vec![
            v1::PartitionRecords {
                partition: 0,
                records: Bytes::from(vec![5u8; 300_000]),
            },
            v1::PartitionRecords {
                partition: 4,
                records: Bytes::new(),
            },
            v1::PartitionRecords {
                partition: 9,
                records: Bytes::from_static(b"xyz"),
            },
        ],
    }
}

/// `wire` split into chunks of the given sizes, in turn.
fn split(wire: &[u8], sizes: &[usize]) -> Chunks {
    let mut c = Chunks::default();
    let mut rest = wire;
    let mut i = 0;
    while !rest.is_empty() {
        let k = sizes[i % sizes.len()].clamp(1, rest.len());
        c.push(Bytes::copy_from_slice(&rest[..k]));
        rest = &rest[k..];
        i += 1;
    }
    c
}

fn joined(chunks: &VecDeque<Bytes>) -> Vec<u8> {
    chunks.iter().flat_map(|c| c.iter().copied()).collect()
}

fn as_chunks(chunks: VecDeque<Bytes>) -> Chunks {
    let mut c = Chunks::default();
    for b in chunks {
        c.push(b);
    }
    c
}

#[test]
fn the_encoders_write_what_prost_decodes() {
    let f = fetch_sample();
    let wire = joined(&fetch_response(&f));
    assert_eq!(wire[0], 0);
    assert_eq!(
        u32::from_be_bytes(wire[1..5].try_into().unwrap()) as usize,
        wire.len() - 5
    );
    assert_eq!(v1::FetchResponse::decode(&wire[5..]).unwrap(), f);
    let p = produce_sample();
    let wire = joined(&produce_request(&p));
    assert_eq!(v1::ProduceRequest::decode(&wire[5..]).unwrap(), p);
    assert_eq!(
        joined(&fetch_response(&v1::FetchResponse::default())),
        [0; 5]
    );
}

#[test]
fn record_fields_travel_and_arrive_uncopied() {
    let f = fetch_sample();
    let chunks = fetch_response(&f);
    assert!(chunks
        .iter()
        .any(|c| c.as_ptr() == f.partitions[0].records.as_ptr()));
    let mut c = as_chunks(chunks);
    c.unframe().unwrap();
    let decoded = decode_fetch_response(&mut c).unwrap();
    assert_eq!(decoded, f);
    assert_eq!(
        decoded.partitions[0].records.as_ptr(),
        f.partitions[0].records.as_ptr()
    );
    let p = produce_sample();
    let mut c = as_chunks(produce_request(&p));
    c.unframe().unwrap();
    let decoded = decode_produce_request(&mut c).unwrap();
    assert_eq!(decoded, p);
    assert_eq!(
        decoded.partitions[0].records.as_ptr(),
        p.partitions[0].records.as_ptr()
    );
}

#[test]
fn prost_encodings_decode_in_place_too() {
    for sizes in [&[1usize][..], &[5, 3, 16_384], &[7, 100_000], &[1 << 30]] {
        let f = fetch_sample();
        let mut c = split(&joined(&framed(&f)), sizes);
        c.unframe().unwrap();
        assert_eq!(decode_fetch_response(&mut c).unwrap(), f, "{sizes:?}");
        let p = produce_sample();
        let mut c = split(&joined(&framed(&p)), sizes);
        c.unframe().unwrap();
        assert_eq!(decode_produce_request(&mut c).unwrap(), p, "{sizes:?}");
    }
}

#[test]
fn bad_messages_are_errors() {
    let wire = joined(&fetch_response(&fetch_sample()));
    for cut in [0, 3, 5, 9, wire.len() - 1] {
        let mut c = split(&wire[..cut], &[4]);
        let r = c.unframe().and_then(|()| decode_fetch_response(&mut c));
        assert!(r.is_err(), "{cut}");
    }
    let mut compressed = wire.clone();
    compressed[0] = 1;
    assert!(split(&compressed, &[64]).unframe().is_err());
    // An embedded message claiming more than there is.
    let mut c = split(&[0x0a, 0x7f, 0x10, 0x01], &[2]);
    assert!(decode_fetch_response(&mut c).is_err());
    // A topic that is not UTF-8.
    let mut c = split(&[0x0a, 0x04, 0x0a, 0x02, 0xff, 0xfe], &[3]);
    assert!(decode_fetch_response(&mut c).is_err());
    // An unknown wire type.
    let mut c = split(&[0x0f], &[1]);
    assert!(decode_produce_request(&mut c).is_err());
}

proptest! {
    #[test]
    fn any_bytes_decode_or_fail_cleanly(bytes in proptest::collection::vec(any::<u8>(), 0..200), cut in 1usize..16) {
        let mut c = split(&bytes, &[cut]);
        let _ = decode_produce_request(&mut c);
        let mut c = split(&bytes, &[cut]);
        let _ = decode_fetch_response(&mut c);
    }

    #[test]
    fn any_chunking_decodes_the_same(sizes in proptest::collection::vec(1usize..5000, 1..8)) {
        let p = produce_sample();
        let mut c = split(&joined(&produce_request(&p)), &sizes);
        c.unframe().unwrap();
        prop_assert_eq!(decode_produce_request(&mut c).unwrap(), p);
    }
}
