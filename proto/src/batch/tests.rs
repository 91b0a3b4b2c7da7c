use super::compression::{self, CompressionError};
use super::*;
use proptest::prelude::*;

fn sample() -> Vec<u8> {
    let mut b = BatchBuilder::new();
    let hs = [
        Header {
            key: b"trace",
            value: Some(b"abc"),
        },
        Header {
            key: b"empty",
            value: None,
        },
    ];
    b.append(&Record {
        timestamp: 1000,
        key: Some(b"k1"),
        value: Some(b"hello"),
        headers: &hs,
    });
    b.append(&Record {
        timestamp: 990,
        key: None,
        value: None,
        headers: &[],
    });
    b.append(&Record {
        timestamp: 1005,
        key: Some(b""),
        value: Some(&[7u8; 300]),
        headers: &[],
    });
    b.seal().to_vec()
}

fn refresh_crc(buf: &mut [u8]) {
    let crc = crc32fast::hash(&buf[field::ATTRIBUTES..]);
    buf[field::CRC..field::CRC + 4].copy_from_slice(&crc.to_be_bytes());
}

#[test]
fn round_trip() {
    let buf = sample();
    let batch = RecordBatch::parse(&buf).unwrap();
    let h = batch.header();
    assert_eq!(h.magic, 2);
    assert_eq!(h.record_count, 3);
    assert_eq!(h.last_offset_delta, 2);
    assert_eq!(h.base_timestamp, 1000);
    assert_eq!(h.max_timestamp, 1005);
    assert_eq!(h.total_len(), buf.len());
    assert_eq!(batch_len_at(&buf), Some(buf.len()));
    let recs: Vec<_> = batch.records().map(Result::unwrap).collect();
    assert_eq!(recs.len(), 3);
    assert_eq!(recs[0].key, Some(&b"k1"[..]));
    assert_eq!(recs[0].value, Some(&b"hello"[..]));
    let hs: Vec<_> = recs[0].headers.clone().collect();
    assert_eq!(
        hs,
        vec![(&b"trace"[..], Some(&b"abc"[..])), (&b"empty"[..], None)]
    );
    assert_eq!(recs[1].timestamp_delta, -10);
    assert_eq!(recs[1].key, None);
    assert_eq!(recs[1].value, None);
    assert_eq!(recs[2].key, Some(&b""[..]));
    assert_eq!(recs[2].value.unwrap().len(), 300);
    assert_eq!(recs[2].offset_delta, 2);
}

#[test]
fn base_offset_and_epoch_are_outside_the_checksum() {
    let mut buf = sample();
    buf[..8].copy_from_slice(&12345i64.to_be_bytes());
    buf[field::LEADER_EPOCH..field::LEADER_EPOCH + 4].copy_from_slice(&7i32.to_be_bytes());
    let b = RecordBatch::parse(&buf).unwrap();
    assert_eq!(b.header().base_offset, 12345);
    assert_eq!(b.header().last_offset(), 12347);
    assert_eq!(b.header().partition_leader_epoch, 7);
}

#[test]
fn rejects_bad_crc() {
    let mut buf = sample();
    let last = buf.len() - 1;
    buf[last] ^= 0x40;
    assert!(matches!(
        RecordBatch::parse(&buf),
        Err(BatchError::CrcMismatch { .. })
    ));
}

#[test]
fn rejects_bad_length() {
    let buf = sample();
    assert!(matches!(
        RecordBatch::parse(&buf[..buf.len() - 1]),
        Err(BatchError::BadLength { .. })
    ));
    assert_eq!(
        RecordBatch::parse(&buf[..20]).unwrap_err(),
        BatchError::TooShort { len: 20 }
    );
    let mut neg = buf.clone();
    neg[8..12].copy_from_slice(&(-5i32).to_be_bytes());
    assert!(matches!(
        RecordBatch::parse_prefix(&neg),
        Err(BatchError::BadLength { .. })
    ));
    assert_eq!(batch_len_at(&neg), None);
}

#[test]
fn rejects_bad_magic() {
    let mut buf = sample();
    buf[field::MAGIC] = 1;
    assert_eq!(
        RecordBatch::parse(&buf).unwrap_err(),
        BatchError::BadMagic(1)
    );
}

#[test]
fn rejects_bad_varint() {
    // One record whose length varint never terminates.
    let mut b = BatchBuilder::new();
    b.append(&Record {
        timestamp: 1,
        value: Some(b"x"),
        ..Default::default()
    });
    let mut buf = b.seal().to_vec();
    for byte in &mut buf[HEADER_LEN..] {
        *byte = 0xff;
    }
    refresh_crc(&mut buf);
    let err = RecordBatch::parse(&buf).unwrap_err();
    assert!(
        matches!(
            err,
            BatchError::BadVarint {
                record: 0,
                what: "record length",
                ..
            }
        ),
        "{err}"
    );
}

#[test]
fn rejects_bad_framing() {
    let mut buf = sample();
    // Claim one record more than there is.
    buf[field::RECORD_COUNT..field::RECORD_COUNT + 4].copy_from_slice(&4i32.to_be_bytes());
    buf[field::LAST_OFFSET_DELTA..field::LAST_OFFSET_DELTA + 4]
        .copy_from_slice(&3i32.to_be_bytes());
    refresh_crc(&mut buf);
    let err = RecordBatch::parse(&buf).unwrap_err();
    assert!(
        matches!(err, BatchError::BadVarint { record: 3, .. }),
        "{err}"
    );

    let mut buf = sample();
    buf[field::RECORD_COUNT..field::RECORD_COUNT + 4].copy_from_slice(&2i32.to_be_bytes());
    buf[field::LAST_OFFSET_DELTA..field::LAST_OFFSET_DELTA + 4]
        .copy_from_slice(&1i32.to_be_bytes());
    refresh_crc(&mut buf);
    let err = RecordBatch::parse(&buf).unwrap_err();
    assert!(
        matches!(err, BatchError::BadRecord { record: 2, .. }),
        "{err}"
    );

    let mut buf = sample();
    buf[field::LAST_OFFSET_DELTA..field::LAST_OFFSET_DELTA + 4]
        .copy_from_slice(&9i32.to_be_bytes());
    refresh_crc(&mut buf);
    assert!(matches!(
        RecordBatch::parse(&buf),
        Err(BatchError::BadHeader(_))
    ));
}

#[test]
fn control_batches_may_be_empty_data_batches_may_not() {
    let ctl = BatchBuilder::new().control().seal();
    let b = RecordBatch::parse(&ctl).unwrap();
    assert!(b.header().is_control());
    assert_eq!(b.header().last_offset_delta, -1);
    assert_eq!(b.header().next_offset(), 0);
    let data = BatchBuilder::new().seal();
    assert_eq!(
        RecordBatch::parse(&data).unwrap_err(),
        BatchError::BadHeader("a data batch holds no records")
    );
}

#[test]
fn compressed_section_is_kept_and_flagged() {
    let mut b = BatchBuilder::new();
    b.append(&Record {
        timestamp: 5,
        value: Some(&[1u8; 100]),
        ..Default::default()
    });
    let sealed = b.seal_compressed(Compression::Lz4, |s| {
        compression::compress(Compression::Lz4, s).ok()
    });
    let batch = RecordBatch::parse(&sealed).unwrap();
    assert_eq!(batch.header().compression(), Some(Compression::Lz4));
    let mut unknown = sealed.to_vec();
    unknown[field::ATTRIBUTES + 1] |= 0x07;
    refresh_crc(&mut unknown);
    assert_eq!(
        RecordBatch::parse(&unknown).unwrap_err(),
        BatchError::UnknownCompression(7)
    );
}

/// A one-record batch whose records section is `section`, flagged with `codec`.
fn batch_with_section(codec: Compression, count: i32, section: &[u8]) -> Vec<u8> {
    let mut b = BatchBuilder::new();
    b.append(&Record {
        timestamp: 5,
        value: Some(b"v"),
        ..Default::default()
    });
    let mut buf = b.seal().to_vec();
    buf.truncate(HEADER_LEN);
    buf.extend_from_slice(section);
    let len = (buf.len() - LOG_OVERHEAD) as i32;
    buf[field::BATCH_LENGTH..field::BATCH_LENGTH + 4].copy_from_slice(&len.to_be_bytes());
    buf[field::ATTRIBUTES..field::ATTRIBUTES + 2].copy_from_slice(&codec.bits().to_be_bytes());
    buf[field::LAST_OFFSET_DELTA..field::LAST_OFFSET_DELTA + 4]
        .copy_from_slice(&(count - 1).to_be_bytes());
    buf[field::RECORD_COUNT..field::RECORD_COUNT + 4].copy_from_slice(&count.to_be_bytes());
    refresh_crc(&mut buf);
    buf
}

#[test]
fn compressed_batches_are_decompressed_and_their_records_checked_on_append() {
    let records = &sample()[HEADER_LEN..];
    for codec in [
        Compression::Gzip,
        Compression::Snappy,
        Compression::Lz4,
        Compression::Zstd,
    ] {
        let packed = compression::compress(codec, records).unwrap();
        let good = batch_with_section(codec, 3, &packed);
        RecordBatch::parse(&good).unwrap_or_else(|e| panic!("{codec:?}: {e}"));
        // Bytes that are not the codec's stream.
        let garbage = batch_with_section(codec, 3, b"not a compressed stream at all");
        assert!(
            matches!(
                RecordBatch::parse(&garbage),
                Err(BatchError::Compression(CompressionError::Corrupt { .. }))
            ),
            "{codec:?}"
        );
        // A valid stream of records that do not match the header's count.
        let short = batch_with_section(codec, 4, &packed);
        assert!(
            matches!(
                RecordBatch::parse(&short),
                Err(BatchError::BadRecord { record: 3, .. }
                    | BatchError::BadVarint { record: 3, .. })
            ),
            "{codec:?}: {:?}",
            RecordBatch::parse(&short)
        );
        // A valid stream of bytes that are not records.
        let junk = compression::compress(codec, &[0xff; 64]).unwrap();
        assert!(
            RecordBatch::parse(&batch_with_section(codec, 1, &junk)).is_err(),
            "{codec:?}"
        );
        // A Raft follower trusts what its leader validated.
        assert!(RecordBatch::parse_trusted(&garbage).is_ok());
    }
}

#[test]
fn a_compressed_batch_may_not_expand_past_the_limit() {
    let mut b = BatchBuilder::new();
    let value = vec![0u8; 1 << 20];
    for _ in 0..65 {
        b.append(&Record {
            timestamp: 5,
            value: Some(&value),
            ..Default::default()
        });
    }
    let sealed = b.seal_compressed(Compression::Zstd, |s| {
        compression::compress(Compression::Zstd, s).ok()
    });
    assert!(sealed.len() < 1 << 20, "{} bytes", sealed.len());
    assert_eq!(
        RecordBatch::parse(&sealed).unwrap_err(),
        BatchError::Compression(CompressionError::TooLarge {
            codec: Compression::Zstd,
            limit: MAX_DECOMPRESSED_LEN
        })
    );
}

type Rec = (
    i64,
    Option<Vec<u8>>,
    Option<Vec<u8>>,
    Vec<(Vec<u8>, Option<Vec<u8>>)>,
);

fn rec() -> impl Strategy<Value = Rec> {
    (
        0i64..1 << 42,
        proptest::option::of(proptest::collection::vec(any::<u8>(), 0..40)),
        proptest::option::of(proptest::collection::vec(any::<u8>(), 0..200)),
        proptest::collection::vec(
            (
                proptest::collection::vec(any::<u8>(), 0..8),
                proptest::option::of(proptest::collection::vec(any::<u8>(), 0..8)),
            ),
            0..3,
        ),
    )
}

proptest! {
    #[test]
    fn any_records_round_trip(recs in proptest::collection::vec(rec(), 1..20)) {
        let mut b = BatchBuilder::new();
        for (ts, k, v, hs) in &recs {
            let hs: Vec<Header> = hs.iter().map(|(k, v)| Header { key: k, value: v.as_deref() }).collect();
            let r = Record { timestamp: *ts, key: k.as_deref(), value: v.as_deref(), headers: &hs };
            let predicted = b.len() + b.record_size(&r);
            b.append(&r);
            prop_assert_eq!(b.len(), predicted);
        }
        let buf = b.seal();
        let batch = RecordBatch::parse(&buf).unwrap();
        let base = batch.header().base_timestamp;
        for (got, (ts, k, v, hs)) in batch.records().zip(&recs) {
            let got = got.unwrap();
            prop_assert_eq!(base + got.timestamp_delta, *ts);
            prop_assert_eq!(got.key, k.as_deref());
            prop_assert_eq!(got.value, v.as_deref());
            let ghs: Vec<_> = got.headers.map(|(k, v)| (k.to_vec(), v.map(<[u8]>::to_vec))).collect();
            prop_assert_eq!(&ghs, hs);
        }
    }

    #[test]
    fn corruption_never_panics(flip in 0usize..400, bit in 0u8..8) {
        let mut buf = sample();
        let i = flip % buf.len();
        buf[i] ^= 1 << bit;
        // Any outcome but a panic is fine; outside the checksum only the offset/epoch may change.
        let _ = RecordBatch::parse(&buf);
    }
}

proptest! {
    /// The fast framing check and the full record parser agree on damaged record sections.
    #[test]
    fn fast_and_full_framing_checks_agree(flip in HEADER_LEN..400usize, byte in any::<u8>()) {
        let mut buf = sample();
        let i = HEADER_LEN + (flip - HEADER_LEN) % (buf.len() - HEADER_LEN);
        buf[i] = byte;
        refresh_crc(&mut buf);
        let count = 3;
        let fast = view::frame_ok_for_tests(&buf[HEADER_LEN..], count);
        let full = Records::new(&buf[HEADER_LEN..], count)
            .enumerate()
            .all(|(i, r)| r.is_ok_and(|r| r.offset_delta as usize == i));
        let consumed_all = full && {
            let mut rs = Records::new(&buf[HEADER_LEN..], count);
            for _ in rs.by_ref() {}
            rs.rest_len() == 0
        };
        prop_assert_eq!(fast, consumed_all);
        prop_assert_eq!(RecordBatch::parse(&buf).is_ok(), fast);
    }
}

#[test]
fn control_payload_batches_carry_bytes_and_take_no_offset() {
    let b = BatchBuilder::control_payload(77, b"membership:1,2,3");
    let batch = RecordBatch::parse(&b).unwrap();
    assert!(batch.header().is_control());
    assert_eq!(batch.header().record_count, 0);
    assert_eq!(batch.header().next_offset(), 0);
    assert_eq!(batch.records_section(), b"membership:1,2,3");
    // A data batch may not smuggle bytes the same way.
    let mut data = BatchBuilder::new();
    data.append(&Record {
        timestamp: 1,
        value: Some(b"x"),
        ..Default::default()
    });
    let mut bytes = data.seal().to_vec();
    bytes.extend_from_slice(b"junk");
    let len = (bytes.len() - LOG_OVERHEAD) as i32;
    bytes[8..12].copy_from_slice(&len.to_be_bytes());
    refresh_crc(&mut bytes);
    assert!(matches!(
        RecordBatch::parse(&bytes),
        Err(BatchError::BadRecord { .. })
    ));
}

#[test]
fn restamping_sets_the_producer_fields_and_keeps_the_batch_valid() {
    let buf = sample();
    let out = restamp_producer(&buf, 77, 3, 1_000).unwrap();
    let batch = RecordBatch::parse(&out).expect("the checksum was recomputed");
    let h = batch.header();
    assert_eq!(
        (h.producer_id, h.producer_epoch, h.base_sequence),
        (77, 3, 1_000)
    );
    assert_eq!(&out[field::RECORD_COUNT..], &buf[field::RECORD_COUNT..]);
    assert!(restamp_producer(&buf[..HEADER_LEN - 1], 1, 0, 0).is_none());
}
