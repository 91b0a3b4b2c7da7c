//! Kafka's record batches and rafka's: the same layout (docs/format.md) but for the
//! checksum, CRC-32C in Kafka's, CRC-32 (IEEE) in rafka's. A produced batch's CRC-32C
//! is verified and replaced; a fetched batch gets its CRC-32C back. Each costs a copy
//! and one checksum pass over the batch.

use bytes::{Bytes, BytesMut};
use rafka_proto::batch::{field, BatchError, HEADER_LEN, LOG_OVERHEAD, MAGIC};

/// The first byte the checksum covers.
const CHECKED_FROM: usize = field::ATTRIBUTES;

/// Each batch's byte range in `records`, checking only what the walk needs (its
/// length); `(index, error)` for the first batch that does not fit.
fn spans(records: &[u8]) -> Result<Vec<std::ops::Range<usize>>, (usize, BatchError)> {
    let mut out = Vec::new();
    let mut pos = 0;
    while pos < records.len() {
        let rest = &records[pos..];
        let index = out.len();
        if rest.len() < HEADER_LEN {
            return Err((index, BatchError::TooShort { len: rest.len() }));
        }
        let declared = i32::from_be_bytes(
            rest[field::BATCH_LENGTH..field::BATCH_LENGTH + 4]
                .try_into()
                .expect("four bytes"),
        );
        let total = usize::try_from(declared)
            .ok()
            .and_then(|n| n.checked_add(LOG_OVERHEAD))
            .filter(|&n| n >= HEADER_LEN && n <= rest.len())
            .ok_or((
                index,
                BatchError::BadLength {
                    declared: declared as i64,
                    actual: rest.len() - LOG_OVERHEAD,
                },
            ))?;
        if rest[field::MAGIC] != MAGIC {
            return Err((index, BatchError::BadMagic(rest[field::MAGIC])));
        }
        out.push(pos..pos + total);
        pos += total;
    }
    Ok(out)
}

fn stored_crc(batch: &[u8]) -> u32 {
    u32::from_be_bytes(
        batch[field::CRC..field::CRC + 4]
            .try_into()
            .expect("four bytes"),
    )
}

fn set_crc(batch: &mut [u8], crc: u32) {
    batch[field::CRC..field::CRC + 4].copy_from_slice(&crc.to_be_bytes());
}

/// A produce request's records in rafka's form: every batch's CRC-32C verified, then
/// its checksum rewritten as CRC-32. The rest of the checks are the engine's.
pub(super) fn from_kafka(records: &[u8]) -> Result<Bytes, (usize, BatchError)> {
    let spans = spans(records)?;
    for (index, span) in spans.iter().enumerate() {
        let batch = &records[span.clone()];
        let actual = crc32c::crc32c(&batch[CHECKED_FROM..]);
        let expected = stored_crc(batch);
        if actual != expected {
            return Err((index, BatchError::CrcMismatch { expected, actual }));
        }
    }
    let mut out = BytesMut::from(records);
    for span in spans {
        let batch = &mut out[span];
        let crc = crc32fast::hash(&batch[CHECKED_FROM..]);
        set_crc(batch, crc);
    }
    Ok(out.freeze())
}

/// Whether `records` are whole batches, every one an idempotent producer's (a producer
/// id set): batches the partition's sequencer orders by their sequence numbers.
pub(super) fn idempotent(records: &[u8]) -> bool {
    spans(records).is_ok_and(|spans| {
        !spans.is_empty()
            && spans.into_iter().all(|span| {
                let id = &records[span.start + field::PRODUCER_ID..][..8];
                i64::from_be_bytes(id.try_into().expect("eight bytes")) >= 0
            })
    })
}

/// Stored batches (verified as they were read) in Kafka's form, CRC-32C.
pub(super) fn to_kafka(records: Bytes) -> Bytes {
    if records.is_empty() {
        return records;
    }
    let Ok(spans) = spans(&records) else {
        // Never so for what the log returns; sent as it is, a client would refuse it.
        tracing::error!("a read returned records that are not whole batches");
        return records;
    };
    let mut out = BytesMut::from(&records[..]);
    for span in spans {
        let batch = &mut out[span];
        let crc = crc32c::crc32c(&batch[CHECKED_FROM..]);
        set_crc(batch, crc);
    }
    out.freeze()
}

#[cfg(test)]
mod tests {
    use super::*;
    use rafka_proto::batch::{BatchBuilder, Record, RecordBatch};

    fn stored_batches() -> Vec<u8> {
        let mut all = Vec::new();
        for n in 0..3 {
            let mut b = BatchBuilder::new();
            let value = format!("value {n}");
            b.append(&Record {
                timestamp: 1_700_000_000_000 + n,
                key: Some(b"key"),
                value: Some(value.as_bytes()),
                headers: &[],
            });
            all.extend_from_slice(&b.seal());
        }
        all
    }

    #[test]
    fn checksums_round_trip_and_a_damaged_batch_is_refused() {
        let stored = stored_batches();
        let kafka = to_kafka(Bytes::from(stored.clone()));
        assert_ne!(&kafka[..], &stored[..], "the checksums differ");
        let back = from_kafka(&kafka).unwrap();
        assert_eq!(&back[..], &stored[..]);
        for b in spans(&back).unwrap() {
            RecordBatch::parse(&back[b]).unwrap();
        }
        // One flipped bit in the second batch's value.
        let mut damaged = kafka.to_vec();
        let second = spans(&damaged).unwrap()[1].clone();
        damaged[second.end - 3] ^= 1;
        assert!(matches!(
            from_kafka(&damaged),
            Err((1, BatchError::CrcMismatch { .. }))
        ));
        // rafka's own checksum is not Kafka's.
        assert!(matches!(
            from_kafka(&stored),
            Err((0, BatchError::CrcMismatch { .. }))
        ));
    }

    #[test]
    fn lengths_and_magic_are_checked_before_anything_is_read() {
        let kafka = to_kafka(Bytes::from(stored_batches()));
        assert!(matches!(
            from_kafka(&kafka[..40]),
            Err((0, BatchError::TooShort { .. }))
        ));
        let cut = spans(&kafka).unwrap()[0].end + 70;
        assert!(matches!(
            from_kafka(&kafka[..cut]),
            Err((1, BatchError::BadLength { .. }))
        ));
        let mut old = kafka.to_vec();
        old[field::MAGIC] = 1;
        assert!(matches!(
            from_kafka(&old),
            Err((0, BatchError::BadMagic(1)))
        ));
        let mut negative = kafka.to_vec();
        negative[field::BATCH_LENGTH..field::BATCH_LENGTH + 4]
            .copy_from_slice(&(-5i32).to_be_bytes());
        assert!(matches!(
            from_kafka(&negative),
            Err((0, BatchError::BadLength { .. }))
        ));
    }
}
