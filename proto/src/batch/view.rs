//! Reading and validating record batches in place, without copying.

use super::compression::decompress;
use super::varint::{self, VarintError};
use super::{
    attr, field, BatchError, Compression, HEADER_LEN, LOG_OVERHEAD, MAGIC, MAX_DECOMPRESSED_LEN,
};

#[inline]
fn be_i16(b: &[u8], at: usize) -> i16 {
    i16::from_be_bytes([b[at], b[at + 1]])
}
#[inline]
fn be_i32(b: &[u8], at: usize) -> i32 {
    i32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}
#[inline]
fn be_i64(b: &[u8], at: usize) -> i64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    i64::from_be_bytes(a)
}

/// Total size (header and records) of the batch starting at `buf`, read from its length
/// field; `None` if fewer than [`LOG_OVERHEAD`] bytes are present or the length is below a
/// header's size. The bytes are not otherwise checked.
#[inline]
pub fn batch_len_at(buf: &[u8]) -> Option<usize> {
    if buf.len() < LOG_OVERHEAD {
        return None;
    }
    let declared = be_i32(buf, field::BATCH_LENGTH);
    let total = LOG_OVERHEAD as i64 + declared as i64;
    (total >= HEADER_LEN as i64).then_some(total as usize)
}

/// Checks the batch at the start of `buf` as it was stored: its length fits in `buf`, its
/// magic and its checksum. Record framing is not re-checked (the batch was fully validated
/// when it was appended). Returns the header and the batch size.
pub fn verify_stored(buf: &[u8]) -> Result<(BatchHeader, usize), BatchError> {
    let header = BatchHeader::parse(buf)?;
    let total = prefix_len(buf, &header)?;
    if header.magic != MAGIC {
        return Err(BatchError::BadMagic(header.magic));
    }
    let actual = crc32fast::hash(&buf[field::ATTRIBUTES..total]);
    if actual != header.crc {
        return Err(BatchError::CrcMismatch {
            expected: header.crc,
            actual,
        });
    }
    Ok((header, total))
}

/// Size of the batch `header` heads at the start of `buf`, checked to fit in `buf`.
fn prefix_len(buf: &[u8], header: &BatchHeader) -> Result<usize, BatchError> {
    let total = LOG_OVERHEAD as i64 + header.batch_length as i64;
    if total < HEADER_LEN as i64 || total > buf.len() as i64 {
        return Err(BatchError::BadLength {
            declared: header.batch_length as i64,
            actual: buf.len() - LOG_OVERHEAD,
        });
    }
    Ok(total as usize)
}

/// The decoded fixed header of a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchHeader {
    /// Offset of the first record.
    pub base_offset: i64,
    /// Bytes after the length field.
    pub batch_length: i32,
    /// Leader epoch (Raft term) stamped by the broker.
    pub partition_leader_epoch: i32,
    /// Format version.
    pub magic: u8,
    /// Stored checksum.
    pub crc: u32,
    /// Attribute bits (see [`attr`](super::attr)).
    pub attributes: i16,
    /// Offset of the last record relative to `base_offset`.
    pub last_offset_delta: i32,
    /// Timestamp of the first record.
    pub base_timestamp: i64,
    /// Largest record timestamp.
    pub max_timestamp: i64,
    /// Idempotent producer id, -1 if none.
    pub producer_id: i64,
    /// Idempotent producer epoch.
    pub producer_epoch: i16,
    /// Sequence number of the first record.
    pub base_sequence: i32,
    /// Number of records.
    pub record_count: i32,
}

impl BatchHeader {
    /// Decodes the header fields at the start of `buf` without checking anything else.
    pub fn parse(buf: &[u8]) -> Result<Self, BatchError> {
        if buf.len() < HEADER_LEN {
            return Err(BatchError::TooShort { len: buf.len() });
        }
        Ok(Self {
            base_offset: be_i64(buf, field::BASE_OFFSET),
            batch_length: be_i32(buf, field::BATCH_LENGTH),
            partition_leader_epoch: be_i32(buf, field::LEADER_EPOCH),
            magic: buf[field::MAGIC],
            crc: be_i32(buf, field::CRC) as u32,
            attributes: be_i16(buf, field::ATTRIBUTES),
            last_offset_delta: be_i32(buf, field::LAST_OFFSET_DELTA),
            base_timestamp: be_i64(buf, field::BASE_TIMESTAMP),
            max_timestamp: be_i64(buf, field::MAX_TIMESTAMP),
            producer_id: be_i64(buf, field::PRODUCER_ID),
            producer_epoch: be_i16(buf, field::PRODUCER_EPOCH),
            base_sequence: be_i32(buf, field::BASE_SEQUENCE),
            record_count: be_i32(buf, field::RECORD_COUNT),
        })
    }

    /// Offset of the last record (`base_offset - 1` for a batch without records).
    pub fn last_offset(&self) -> i64 {
        self.base_offset + self.last_offset_delta as i64
    }

    /// Offset after the batch: where the next batch starts.
    pub fn next_offset(&self) -> i64 {
        self.last_offset() + 1
    }

    /// Size of the whole batch in bytes.
    pub fn total_len(&self) -> usize {
        LOG_OVERHEAD + self.batch_length as usize
    }

    /// Codec of the records section (`None` for unknown bits).
    pub fn compression(&self) -> Option<Compression> {
        Compression::from_attributes(self.attributes)
    }

    /// True for control batches.
    pub fn is_control(&self) -> bool {
        self.attributes & attr::CONTROL != 0
    }
}

/// A batch whose length, magic, checksum, header and record framing (after decompressing,
/// for a compressed batch) were checked. It borrows its bytes.
#[derive(Debug, Clone, Copy)]
pub struct RecordBatch<'a> {
    buf: &'a [u8],
    header: BatchHeader,
}

impl<'a> RecordBatch<'a> {
    /// Validates `buf` as exactly one batch.
    pub fn parse(buf: &'a [u8]) -> Result<Self, BatchError> {
        Self::exactly_one(buf, true)
    }

    /// Validates `buf` as exactly one batch whose records were already validated where
    /// it entered the system (a Raft entry from the leader that accepted it): length,
    /// magic, checksum and header, without walking the record framing again; the checksum
    /// has guarded the records since.
    pub fn parse_trusted(buf: &'a [u8]) -> Result<Self, BatchError> {
        Self::exactly_one(buf, false)
    }

    /// Takes `buf` as exactly one batch of this format version, checking only its length
    /// field and magic: for bytes already checked in this process (a Raft leader's own
    /// proposal, validated at the edge; a follower's entry, whose checksum the peer
    /// service verified on arrival).
    pub fn framed(buf: &'a [u8]) -> Result<Self, BatchError> {
        let header = BatchHeader::parse(buf)?;
        let actual = buf.len() - LOG_OVERHEAD;
        if header.batch_length as i64 != actual as i64 {
            return Err(BatchError::BadLength {
                declared: header.batch_length as i64,
                actual,
            });
        }
        if header.magic != MAGIC {
            return Err(BatchError::BadMagic(header.magic));
        }
        Ok(Self { buf, header })
    }

    fn exactly_one(buf: &'a [u8], records: bool) -> Result<Self, BatchError> {
        let header = BatchHeader::parse(buf)?;
        let actual = buf.len() - LOG_OVERHEAD;
        if header.batch_length as i64 != actual as i64 {
            return Err(BatchError::BadLength {
                declared: header.batch_length as i64,
                actual,
            });
        }
        Self::check(buf, header, records)
    }

    /// Validates the batch at the start of `buf` (which may hold more after it); returns it
    /// and its size.
    pub fn parse_prefix(buf: &'a [u8]) -> Result<(Self, usize), BatchError> {
        let header = BatchHeader::parse(buf)?;
        let total = prefix_len(buf, &header)?;
        Ok((Self::check(&buf[..total], header, true)?, total))
    }

    fn check(buf: &'a [u8], header: BatchHeader, records: bool) -> Result<Self, BatchError> {
        if header.magic != MAGIC {
            return Err(BatchError::BadMagic(header.magic));
        }
        let actual = crc32fast::hash(&buf[field::ATTRIBUTES..]);
        if actual != header.crc {
            return Err(BatchError::CrcMismatch {
                expected: header.crc,
                actual,
            });
        }
        let codec = header.compression().ok_or(BatchError::UnknownCompression(
            header.attributes & attr::COMPRESSION_MASK,
        ))?;
        if header.record_count < 0 {
            return Err(BatchError::BadHeader("record_count is negative"));
        }
        if header.record_count == 0 && !header.is_control() {
            return Err(BatchError::BadHeader("a data batch holds no records"));
        }
        if header.last_offset_delta as i64 != header.record_count as i64 - 1 {
            return Err(BatchError::BadHeader(
                "last_offset_delta does not match record_count",
            ));
        }
        let batch = Self { buf, header };
        if header.is_control() && header.record_count == 0 {
            // A control batch without records carries an opaque, checksummed payload
            // (Raft blank and membership entries) and takes no offset.
        } else if codec == Compression::None {
            if records {
                validate_records(batch.records_section(), header.record_count as usize)?;
            }
        } else if batch.records_section().is_empty() {
            return Err(BatchError::BadHeader("compressed records section is empty"));
        } else if records {
            // As Kafka does: a compressed batch is decompressed and its records checked
            // once, where it enters, so no reader meets a section it cannot decode.
            let section = decompress(codec, batch.records_section(), MAX_DECOMPRESSED_LEN)?;
            validate_records(&section, header.record_count as usize)?;
        }
        Ok(batch)
    }

    /// The decoded header.
    pub fn header(&self) -> &BatchHeader {
        &self.header
    }

    /// The whole batch as stored.
    pub fn as_bytes(&self) -> &'a [u8] {
        self.buf
    }

    /// The records section (compressed if the header says so).
    pub fn records_section(&self) -> &'a [u8] {
        &self.buf[HEADER_LEN..]
    }

    /// The records of an uncompressed batch. For a compressed one, decompress
    /// [`records_section`](Self::records_section) and use [`Records::new`].
    pub fn records(&self) -> Records<'a> {
        Records::new(self.records_section(), self.header.record_count as usize)
    }
}

/// An owned batch that passed [`RecordBatch::parse`]: validated once where it entered
/// (a request handler) and handed on without being checked again.
#[derive(Debug, Clone)]
pub struct ValidatedBatch {
    bytes: bytes::Bytes,
    header: BatchHeader,
}

impl ValidatedBatch {
    /// Validates `bytes` as exactly one batch.
    pub fn parse(bytes: bytes::Bytes) -> Result<Self, BatchError> {
        let header = *RecordBatch::parse(&bytes)?.header();
        Ok(Self { bytes, header })
    }

    /// Splits `bytes` (batches back to back) into validated batches; fails on the first
    /// invalid one, naming its index.
    pub fn parse_all(bytes: &bytes::Bytes) -> Result<Vec<Self>, (usize, BatchError)> {
        let mut out = Vec::new();
        let mut pos = 0;
        while pos < bytes.len() {
            let (batch, len) =
                RecordBatch::parse_prefix(&bytes[pos..]).map_err(|e| (out.len(), e))?;
            let header = *batch.header();
            out.push(Self {
                bytes: bytes.slice(pos..pos + len),
                header,
            });
            pos += len;
        }
        Ok(out)
    }

    /// The batch as a borrowed view (no re-validation).
    pub fn view(&self) -> RecordBatch<'_> {
        RecordBatch {
            buf: &self.bytes,
            header: self.header,
        }
    }

    /// The batch bytes.
    pub fn bytes(&self) -> &bytes::Bytes {
        &self.bytes
    }

    /// The decoded header.
    pub fn header(&self) -> &BatchHeader {
        &self.header
    }
}

/// Checks that `section` holds exactly `count` well-framed records with offset deltas
/// 0, 1, 2, ...
///
/// This runs on every append, so it is a tight loop over the varints that skips the values;
/// only when it finds a problem does the full parser run again to name it.
pub(crate) fn validate_records(section: &[u8], count: usize) -> Result<(), BatchError> {
    if frame_ok(section, count) {
        return Ok(());
    }
    let mut records = Records::new(section, count);
    for i in 0..count {
        match records.next() {
            Some(Ok(r)) if r.offset_delta as usize == i => {}
            Some(Ok(r)) => {
                return Err(BatchError::BadRecord {
                    record: i,
                    what: format!("offset delta {} where {i} was expected", r.offset_delta),
                })
            }
            Some(Err(e)) => return Err(e),
            None => break,
        }
    }
    Err(BatchError::BadRecord {
        record: count,
        what: format!("{} bytes follow the last record", records.rest.len()),
    })
}

/// Decodes a zig-zag varint at `*pos`, advancing it: a varlong (at most 10 bytes) when
/// `LONG`, else a varint (at most 5 bytes, within `i32`). These are the limits of
/// [`varint::get_i64`] and [`varint::get_i32`], which the record parser uses: what the
/// validator accepts, every reader decodes. Varints of up to three bytes (every length
/// and offset delta below 1 MiB) take the inline path.
#[inline(always)]
fn fast_varint<const LONG: bool>(buf: &[u8], pos: &mut usize) -> Option<i64> {
    let p = *pos;
    let Some(&[b0, b1, b2]) = buf.get(p..p + 3) else {
        return slow_varint::<LONG>(buf, pos);
    };
    let (z, n) = if b0 < 0x80 {
        (b0 as u64, 1)
    } else if b1 < 0x80 {
        ((b0 & 0x7f) as u64 | (b1 as u64) << 7, 2)
    } else if b2 < 0x80 {
        (
            (b0 & 0x7f) as u64 | ((b1 & 0x7f) as u64) << 7 | (b2 as u64) << 14,
            3,
        )
    } else {
        return slow_varint::<LONG>(buf, pos);
    };
    *pos = p + n;
    Some(((z >> 1) as i64) ^ -((z & 1) as i64))
}

#[inline(never)]
fn slow_varint<const LONG: bool>(buf: &[u8], pos: &mut usize) -> Option<i64> {
    let rest = buf.get(*pos..)?;
    let (v, n) = if LONG {
        varint::get_i64(rest).ok()?
    } else {
        varint::get_i32(rest).map(|(v, n)| (v as i64, n)).ok()?
    };
    *pos += n;
    Some(v)
}

/// A varint field (record length, offset delta, lengths, header count).
#[inline(always)]
fn varint32(buf: &[u8], pos: &mut usize) -> Option<i64> {
    fast_varint::<false>(buf, pos)
}

/// Skips a length-prefixed byte string (-1 is null) ending at or before `end`.
#[inline(always)]
fn skip_bytes(buf: &[u8], pos: &mut usize, end: usize, nullable: bool) -> Option<()> {
    let len = varint32(buf, pos)?;
    if *pos > end {
        return None;
    }
    if len == -1 && nullable {
        return Some(());
    }
    if len < 0 || len as u64 > (end - *pos) as u64 {
        return None;
    }
    *pos += len as usize;
    Some(())
}

#[cfg(test)]
pub(crate) fn frame_ok_for_tests(section: &[u8], count: usize) -> bool {
    frame_ok(section, count)
}

/// True when `section` is exactly `count` well-framed records with sequential offset deltas.
fn frame_ok(section: &[u8], count: usize) -> bool {
    let mut pos = 0;
    for i in 0..count {
        if !record_ok(section, &mut pos, i as i64) {
            return false;
        }
    }
    pos == section.len()
}

/// Checks the record at `*pos` (with offset delta `delta`) and moves past it. Varints are
/// decoded from the whole section (so the inline path applies to a record's last bytes
/// too) and checked against the record's end afterwards.
#[inline(always)]
fn record_ok(section: &[u8], pos: &mut usize, delta: i64) -> bool {
    let Some(len) = varint32(section, pos) else {
        return false;
    };
    if len < 1 || len as u64 > (section.len() - *pos) as u64 {
        return false;
    }
    let end = *pos + len as usize;
    *pos += 1; // attributes
    let ok = fast_varint::<true>(section, pos).is_some() // timestamp delta
        && varint32(section, pos) == Some(delta)
        && skip_bytes(section, pos, end, true).is_some() // key
        && skip_bytes(section, pos, end, true).is_some(); // value
    if !ok || *pos > end {
        return false;
    }
    let Some(headers) = varint32(section, pos) else {
        return false;
    };
    if headers < 0 || *pos > end {
        return false;
    }
    for _ in 0..headers {
        if skip_bytes(section, pos, end, false).is_none()
            || skip_bytes(section, pos, end, true).is_none()
        {
            return false;
        }
    }
    *pos == end
}

/// Iterator over the records of a records section.
#[derive(Debug, Clone)]
pub struct Records<'a> {
    rest: &'a [u8],
    index: usize,
    count: usize,
}

impl<'a> Records<'a> {
    /// Bytes not consumed by the records yielded so far.
    pub fn rest_len(&self) -> usize {
        self.rest.len()
    }

    /// Iterates `count` records from an (uncompressed) records section.
    pub fn new(section: &'a [u8], count: usize) -> Self {
        Self {
            rest: section,
            index: 0,
            count,
        }
    }
}

impl<'a> Iterator for Records<'a> {
    type Item = Result<RecordView<'a>, BatchError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.index >= self.count {
            return None;
        }
        let i = self.index;
        self.index += 1;
        match parse_record(self.rest, i) {
            Ok((r, n)) => {
                self.rest = &self.rest[n..];
                Some(Ok(r))
            }
            Err(e) => {
                self.index = self.count; // stop after the first error
                Some(Err(e))
            }
        }
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let n = self.count - self.index;
        (0, Some(n))
    }
}

/// One record, borrowed from its batch.
#[derive(Debug, Clone)]
pub struct RecordView<'a> {
    /// Record attributes (unused in v2).
    pub attributes: i8,
    /// Timestamp relative to the batch's base timestamp.
    pub timestamp_delta: i64,
    /// Offset relative to the batch's base offset.
    pub offset_delta: i32,
    /// Key, `None` if null.
    pub key: Option<&'a [u8]>,
    /// Value, `None` if null.
    pub value: Option<&'a [u8]>,
    /// Headers, in order.
    pub headers: RecordHeaders<'a>,
}

/// Iterator over a record's headers as `(key, value)` pairs.
#[derive(Debug, Clone)]
pub struct RecordHeaders<'a> {
    rest: &'a [u8],
    remaining: usize,
}

impl<'a> RecordHeaders<'a> {
    /// Number of headers not yet yielded.
    pub fn len(&self) -> usize {
        self.remaining
    }

    /// True when there are no more headers.
    pub fn is_empty(&self) -> bool {
        self.remaining == 0
    }
}

impl<'a> Iterator for RecordHeaders<'a> {
    type Item = (&'a [u8], Option<&'a [u8]>);

    fn next(&mut self) -> Option<Self::Item> {
        if self.remaining == 0 {
            return None;
        }
        // Framing was validated when the record was parsed.
        let mut c = Cursor {
            buf: self.rest,
            pos: 0,
            record: 0,
        };
        let key = c.bytes("header key").ok()??;
        let value = c.bytes("header value").ok()?;
        self.rest = &self.rest[c.pos..];
        self.remaining -= 1;
        Some((key, value))
    }
}

struct Cursor<'a> {
    buf: &'a [u8],
    pos: usize,
    record: usize,
}

impl<'a> Cursor<'a> {
    fn varint_err(&self, what: &'static str, e: VarintError) -> BatchError {
        BatchError::BadVarint {
            record: self.record,
            what,
            kind: match e {
                VarintError::Truncated => "truncated",
                VarintError::Overflow => "too long",
            },
        }
    }

    fn i32(&mut self, what: &'static str) -> Result<i32, BatchError> {
        let (v, n) =
            varint::get_i32(&self.buf[self.pos..]).map_err(|e| self.varint_err(what, e))?;
        self.pos += n;
        Ok(v)
    }

    fn i64(&mut self, what: &'static str) -> Result<i64, BatchError> {
        let (v, n) =
            varint::get_i64(&self.buf[self.pos..]).map_err(|e| self.varint_err(what, e))?;
        self.pos += n;
        Ok(v)
    }

    /// A length-prefixed byte string; length -1 is null.
    fn bytes(&mut self, what: &'static str) -> Result<Option<&'a [u8]>, BatchError> {
        let len = self.i32(what)?;
        if len == -1 {
            return Ok(None);
        }
        let bad = |detail: String| BatchError::BadRecord {
            record: self.record,
            what: format!("{what} {detail}"),
        };
        if len < 0 {
            return Err(bad(format!("has negative length {len}")));
        }
        let end = self.pos + len as usize;
        if end > self.buf.len() {
            return Err(bad(format!(
                "of {len} bytes overruns the record ({} left)",
                self.buf.len() - self.pos
            )));
        }
        let s = &self.buf[self.pos..end];
        self.pos = end;
        Ok(Some(s))
    }
}

/// Parses the record at the start of `buf`; returns it and its encoded size.
fn parse_record(buf: &[u8], record: usize) -> Result<(RecordView<'_>, usize), BatchError> {
    let (len, n) = varint::get_i32(buf).map_err(|e| {
        Cursor {
            buf,
            pos: 0,
            record,
        }
        .varint_err("record length", e)
    })?;
    if len < 1 || n + len as usize > buf.len() {
        return Err(BatchError::BadRecord {
            record,
            what: format!(
                "length {len} does not fit the {} bytes left in the batch",
                buf.len() - n
            ),
        });
    }
    let body = &buf[n..n + len as usize];
    let mut c = Cursor {
        buf: body,
        pos: 1,
        record,
    };
    let attributes = body[0] as i8;
    let timestamp_delta = c.i64("timestamp delta")?;
    let offset_delta = c.i32("offset delta")?;
    let key = c.bytes("key")?;
    let value = c.bytes("value")?;
    let header_count = c.i32("header count")?;
    if header_count < 0 {
        return Err(BatchError::BadRecord {
            record,
            what: format!("negative header count {header_count}"),
        });
    }
    let headers_start = c.pos;
    for _ in 0..header_count {
        if c.bytes("header key")?.is_none() {
            return Err(BatchError::BadRecord {
                record,
                what: "null header key".into(),
            });
        }
        c.bytes("header value")?;
    }
    if c.pos != body.len() {
        return Err(BatchError::BadRecord {
            record,
            what: format!("{} bytes left over inside the record", body.len() - c.pos),
        });
    }
    let headers = RecordHeaders {
        rest: &body[headers_start..],
        remaining: header_count as usize,
    };
    Ok((
        RecordView {
            attributes,
            timestamp_delta,
            offset_delta,
            key,
            value,
            headers,
        },
        n + len as usize,
    ))
}
