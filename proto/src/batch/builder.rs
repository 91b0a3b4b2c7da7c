//! Building record batches.

use bytes::Bytes;

use super::{attr, field, varint, Compression, HEADER_LEN, LOG_OVERHEAD, MAGIC};

/// A record header: a key and an optional value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header<'a> {
    /// Header key (Kafka requires UTF-8; rafka stores bytes as given).
    pub key: &'a [u8],
    /// Header value; `None` is a null value.
    pub value: Option<&'a [u8]>,
}

/// One record to append to a batch.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Record<'a> {
    /// Create time in milliseconds since the Unix epoch.
    pub timestamp: i64,
    /// Record key; `None` is a null key.
    pub key: Option<&'a [u8]>,
    /// Record value; `None` is a null value (a tombstone).
    pub value: Option<&'a [u8]>,
    /// Record headers.
    pub headers: &'a [Header<'a>],
}

/// Appends records and seals them into one checksummed batch.
///
/// ```
/// use rafka_proto::batch::{BatchBuilder, Record, RecordBatch};
///
/// let mut b = BatchBuilder::new();
/// b.append(&Record { timestamp: 1_700_000_000_000, key: Some(b"k"), value: Some(b"v"), headers: &[] });
/// let bytes = b.seal();
/// let batch = RecordBatch::parse(&bytes).unwrap();
/// assert_eq!(batch.header().record_count, 1);
/// ```
#[derive(Debug, Clone)]
pub struct BatchBuilder {
    buf: Vec<u8>,
    base_timestamp: Option<i64>,
    max_timestamp: i64,
    count: i32,
    attributes: i16,
    producer_id: i64,
    producer_epoch: i16,
    base_sequence: i32,
}

impl Default for BatchBuilder {
    fn default() -> Self {
        Self::new()
    }
}

impl BatchBuilder {
    /// An empty data batch.
    pub fn new() -> Self {
        Self::with_capacity(HEADER_LEN + 1024)
    }

    /// An empty data batch whose buffer can hold `capacity` bytes before growing.
    pub fn with_capacity(capacity: usize) -> Self {
        let mut buf = Vec::with_capacity(capacity.max(HEADER_LEN));
        buf.resize(HEADER_LEN, 0);
        Self {
            buf,
            base_timestamp: None,
            max_timestamp: -1,
            count: 0,
            attributes: 0,
            producer_id: -1,
            producer_epoch: -1,
            base_sequence: -1,
        }
    }

    /// Marks the batch as a control batch (it may then hold no records).
    pub fn control(mut self) -> Self {
        self.attributes |= attr::CONTROL;
        self
    }

    /// Sets the idempotent producer identity and the sequence of the first record.
    pub fn producer(mut self, producer_id: i64, producer_epoch: i16, base_sequence: i32) -> Self {
        self.producer_id = producer_id;
        self.producer_epoch = producer_epoch;
        self.base_sequence = base_sequence;
        self
    }

    /// Sets the idempotent producer identity in place (when the sequence is known only
    /// as the batch is sealed).
    pub fn set_producer(&mut self, producer_id: i64, producer_epoch: i16, base_sequence: i32) {
        self.producer_id = producer_id;
        self.producer_epoch = producer_epoch;
        self.base_sequence = base_sequence;
    }

    /// Number of records appended so far.
    pub fn record_count(&self) -> usize {
        self.count as usize
    }

    /// True when no record has been appended.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Size in bytes of the batch if it were sealed now, uncompressed.
    pub fn len(&self) -> usize {
        self.buf.len()
    }

    /// Encoded size of `record` if it were appended now (for batch-size decisions).
    pub fn record_size(&self, record: &Record<'_>) -> usize {
        let body = self.body_len(record);
        varint::size_i32(body as i32) + body
    }

    fn body_len(&self, r: &Record<'_>) -> usize {
        let ts_delta = r.timestamp - self.base_timestamp.unwrap_or(r.timestamp);
        1 + varint::size_i64(ts_delta) + varint::size_i32(self.count) + fields_len(r)
    }

    /// The most bytes `record` can take in any batch (worst-case timestamp and offset
    /// deltas), without a builder at hand.
    pub fn max_record_size(record: &Record<'_>) -> usize {
        let body = 1 + 10 + 5 + fields_len(record);
        varint::size_i32(body as i32) + body
    }

    /// Appends a record; returns its offset delta within the batch.
    pub fn append(&mut self, r: &Record<'_>) -> i32 {
        let base = *self.base_timestamp.get_or_insert(r.timestamp);
        let body = self.body_len(r);
        self.buf.reserve(body + 5);
        varint::put_i32(&mut self.buf, body as i32);
        self.buf.push(0); // record attributes: unused in v2
        varint::put_i64(&mut self.buf, r.timestamp - base);
        varint::put_i32(&mut self.buf, self.count);
        put_bytes(&mut self.buf, r.key);
        put_bytes(&mut self.buf, r.value);
        varint::put_i32(&mut self.buf, r.headers.len() as i32);
        for h in r.headers {
            put_bytes(&mut self.buf, Some(h.key));
            put_bytes(&mut self.buf, h.value);
        }
        self.max_timestamp = self.max_timestamp.max(r.timestamp);
        self.count += 1;
        self.count - 1
    }

    /// A control batch without records whose records section is `payload`: it takes no
    /// offset in the log (Raft uses these for blank and membership entries).
    pub fn control_payload(timestamp: i64, payload: &[u8]) -> Bytes {
        let mut b = Self::with_capacity(HEADER_LEN + payload.len()).control();
        b.base_timestamp = Some(timestamp);
        b.max_timestamp = timestamp;
        b.buf.extend_from_slice(payload);
        b.seal()
    }

    /// Seals the batch uncompressed: writes the header and the checksum.
    pub fn seal(self) -> Bytes {
        self.finish(Compression::None, |_| None)
    }

    /// Seals the batch with its records section compressed by `compress`.
    ///
    /// `compress` gets the uncompressed records section and returns the compressed bytes;
    /// if it returns `None` (say the data did not shrink), the batch is sealed uncompressed.
    pub fn seal_compressed(
        self,
        codec: Compression,
        compress: impl FnOnce(&[u8]) -> Option<Vec<u8>>,
    ) -> Bytes {
        self.finish(codec, compress)
    }

    fn finish(
        mut self,
        codec: Compression,
        compress: impl FnOnce(&[u8]) -> Option<Vec<u8>>,
    ) -> Bytes {
        if codec != Compression::None && self.count > 0 {
            if let Some(packed) = compress(&self.buf[HEADER_LEN..]) {
                self.buf.truncate(HEADER_LEN);
                self.buf.extend_from_slice(&packed);
                self.attributes |= codec.bits();
            }
        }
        let base_ts = self.base_timestamp.unwrap_or(-1);
        let batch_length = (self.buf.len() - LOG_OVERHEAD) as i32;
        let b = &mut self.buf;
        put(b, field::BASE_OFFSET, &0i64.to_be_bytes());
        put(b, field::BATCH_LENGTH, &batch_length.to_be_bytes());
        put(b, field::LEADER_EPOCH, &(-1i32).to_be_bytes());
        b[field::MAGIC] = MAGIC;
        put(b, field::ATTRIBUTES, &self.attributes.to_be_bytes());
        put(b, field::LAST_OFFSET_DELTA, &(self.count - 1).to_be_bytes());
        put(b, field::BASE_TIMESTAMP, &base_ts.to_be_bytes());
        put(b, field::MAX_TIMESTAMP, &self.max_timestamp.to_be_bytes());
        put(b, field::PRODUCER_ID, &self.producer_id.to_be_bytes());
        put(b, field::PRODUCER_EPOCH, &self.producer_epoch.to_be_bytes());
        put(b, field::BASE_SEQUENCE, &self.base_sequence.to_be_bytes());
        put(b, field::RECORD_COUNT, &self.count.to_be_bytes());
        let crc = crc32fast::hash(&b[field::ATTRIBUTES..]);
        put(b, field::CRC, &crc.to_be_bytes());
        Bytes::from(self.buf)
    }
}

/// A copy of the sealed batch `batch` with its producer fields set anew and its checksum
/// recomputed (an idempotent producer moving batches it has not sent yet to a new
/// producer id). `None` when `batch` is shorter than a header.
pub fn restamp_producer(
    batch: &[u8],
    producer_id: i64,
    producer_epoch: i16,
    base_sequence: i32,
) -> Option<Bytes> {
    if batch.len() < HEADER_LEN {
        return None;
    }
    let mut b = batch.to_vec();
    put(&mut b, field::PRODUCER_ID, &producer_id.to_be_bytes());
    put(&mut b, field::PRODUCER_EPOCH, &producer_epoch.to_be_bytes());
    put(&mut b, field::BASE_SEQUENCE, &base_sequence.to_be_bytes());
    let crc = crc32fast::hash(&b[field::ATTRIBUTES..]);
    put(&mut b, field::CRC, &crc.to_be_bytes());
    Some(Bytes::from(b))
}

/// Encoded size of a record's key, value and headers.
fn fields_len(r: &Record<'_>) -> usize {
    let mut n = bytes_len(r.key) + bytes_len(r.value);
    n += varint::size_i32(r.headers.len() as i32);
    for h in r.headers {
        n += bytes_len(Some(h.key)) + bytes_len(h.value);
    }
    n
}

fn put(buf: &mut [u8], at: usize, bytes: &[u8]) {
    buf[at..at + bytes.len()].copy_from_slice(bytes);
}

fn bytes_len(b: Option<&[u8]>) -> usize {
    match b {
        None => varint::size_i32(-1),
        Some(b) => varint::size_i32(b.len() as i32) + b.len(),
    }
}

fn put_bytes(out: &mut Vec<u8>, b: Option<&[u8]>) {
    match b {
        None => varint::put_i32(out, -1),
        Some(b) => {
            varint::put_i32(out, b.len() as i32);
            out.extend_from_slice(b);
        }
    }
}
