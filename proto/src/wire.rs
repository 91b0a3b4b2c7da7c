//! The data path's messages as chains of `Bytes`, for the broker and the client to
//! send and read without copying record bytes: a `ProduceRequest`'s batches and a
//! `FetchResponse`'s records each travel as their own chunk, from the producer's batch
//! to the broker's log and from the log's mapping to the consumer's records.
//!
//! tonic encodes a message into one buffer (a copy of every record byte) and gathers a
//! message's HTTP/2 DATA frames into one buffer before decoding (another). Here an
//! encoder writes the few protobuf bytes around each record field into small buffers
//! and hands the field itself on as a chunk (HTTP/2 sends chunks over 256 bytes as their
//! own iovecs), and [`Chunks`] decodes a message where its DATA frames lie, a record
//! field that arrived in one frame becoming a slice of it. The bytes on the wire are
//! plain protobuf-over-gRPC, so peers using tonic's codec read and write them as before.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Buf, BufMut, Bytes, BytesMut};
use prost::encoding::{encode_varint, encoded_len_varint};
use prost::Message;

use crate::v1;

/// The largest HTTP/2 frame (the protocol's maximum), for connections that carry
/// records: a field of up to 16 MiB arrives in one DATA frame.
pub const MAX_FRAME: u32 = (1 << 24) - 1;

/// Protobuf's length-delimited wire type.
const LEN: u64 = 2;

/// A message's bytes as they arrived: a queue of chunks, read front to back.
#[derive(Debug, Default)]
pub struct Chunks {
    queue: VecDeque<Bytes>,
    len: usize,
}

impl Chunks {
    /// Appends a chunk.
    pub fn push(&mut self, chunk: Bytes) {
        if !chunk.is_empty() {
            self.len += chunk.len();
            self.queue.push_back(chunk);
        }
    }

    /// Bytes not read yet.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether everything was read.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The one uncompressed gRPC message these chunks frame (5-byte header, then the
    /// message); the chunks are left at the message's start.
    pub fn unframe(&mut self) -> Result<(), String> {
        if self.len < 5 {
            return Err("shorter than a gRPC frame header".into());
        }
        if self.u8()? != 0 {
            return Err("compressed messages are not accepted".into());
        }
        let mut len = 0usize;
        for _ in 0..4 {
            len = len << 8 | self.u8()? as usize;
        }
        if len != self.len {
            return Err(format!(
                "a gRPC frame of {len} bytes holding {} bytes",
                self.len
            ));
        }
        Ok(())
    }

    /// Everything left, in one buffer (a copy unless it is one chunk already).
    pub fn contiguous(mut self) -> Bytes {
        if self.queue.len() == 1 {
            return self.queue.pop_front().unwrap_or_default();
        }
        let mut out = BytesMut::with_capacity(self.len);
        for c in self.queue {
            out.put_slice(&c);
        }
        out.freeze()
    }

    fn u8(&mut self) -> Result<u8, String> {
        let front = self.queue.front_mut().ok_or("the message ends early")?;
        let b = front.get_u8();
        if front.is_empty() {
            self.queue.pop_front();
        }
        self.len -= 1;
        Ok(b)
    }

    fn varint(&mut self) -> Result<u64, String> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let b = self.u8()?;
            v |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err("a varint over 10 bytes".into())
    }

    /// The next `n` bytes: a slice of the chunk holding them all, else a copy.
    fn take(&mut self, n: usize) -> Result<Bytes, String> {
        if n > self.len {
            return Err(format!("a field of {n} bytes past the message's end"));
        }
        self.len -= n;
        if n == 0 {
            return Ok(Bytes::new());
        }
        let front = self.queue.front_mut().ok_or("the message ends early")?;
        if front.len() >= n {
            let out = front.split_to(n);
            if front.is_empty() {
                self.queue.pop_front();
            }
            return Ok(out);
        }
        let mut out = BytesMut::with_capacity(n);
        while out.len() < n {
            let front = self.queue.front_mut().ok_or("the message ends early")?;
            let k = front.len().min(n - out.len());
            out.put_slice(&front[..k]);
            front.advance(k);
            if front.is_empty() {
                self.queue.pop_front();
            }
        }
        Ok(out.freeze())
    }

    fn string(&mut self) -> Result<String, String> {
        let n = self.varint()? as usize;
        String::from_utf8(self.take(n)?.to_vec()).map_err(|_| "a string that is not UTF-8".into())
    }

    /// Skips a field of wire type `wire`.
    fn skip(&mut self, wire: u64) -> Result<(), String> {
        match wire {
            0 => self.varint().map(drop),
            1 => self.take(8).map(drop),
            LEN => {
                let n = self.varint()? as usize;
                self.take(n).map(drop)
            }
            5 => self.take(4).map(drop),
            w => Err(format!("unknown wire type {w}")),
        }
    }

    /// Reads fields until `end` bytes are left, handing each (number, wire type) to `f`.
    fn fields(
        &mut self,
        end: usize,
        mut f: impl FnMut(&mut Self, u64, u64) -> Result<(), String>,
    ) -> Result<(), String> {
        while self.len > end {
            let key = self.varint()?;
            f(self, key >> 3, key & 7)?;
        }
        if self.len != end {
            return Err("an embedded message's fields overrun it".into());
        }
        Ok(())
    }

    /// The length of an embedded message, checked against what is left; returns the
    /// `len` mark where it ends.
    fn embedded(&mut self) -> Result<usize, String> {
        let n = self.varint()? as usize;
        self.len
            .checked_sub(n)
            .ok_or_else(|| "an embedded message past the end".into())
    }
}

/// A `FetchResponse` from its message bytes; records that lie in one chunk are not
/// copied.
pub fn decode_fetch_response(c: &mut Chunks) -> Result<v1::FetchResponse, String> {
    let mut answer = v1::FetchResponse::default();
    c.fields(0, |c, field, wire| match (field, wire) {
        (1, LEN) => {
            let end = c.embedded()?;
            let mut p = v1::PartitionData::default();
            c.fields(end, |c, field, wire| {
                match (field, wire) {
                    (1, LEN) => p.topic = c.string()?,
                    (2, 0) => p.partition = c.varint()? as u32,
                    (3, LEN) => {
                        let n = c.varint()? as usize;
                        p.records = c.take(n)?;
                    }
                    (4, 0) => p.high_watermark = c.varint()?,
                    (5, 0) => p.log_start_offset = c.varint()?,
                    (_, wire) => c.skip(wire)?,
                }
                Ok(())
            })?;
            answer.partitions.push(p);
            Ok(())
        }
        (_, wire) => c.skip(wire),
    })?;
    Ok(answer)
}

/// A `ProduceRequest` from its message bytes; batches that lie in one chunk are not
/// copied.
pub fn decode_produce_request(c: &mut Chunks) -> Result<v1::ProduceRequest, String> {
    let mut request = v1::ProduceRequest::default();
    c.fields(0, |c, field, wire| {
        match (field, wire) {
            (1, LEN) => request.topic = c.string()?,
            (2, LEN) => {
                let end = c.embedded()?;
                let mut p = v1::PartitionRecords::default();
                c.fields(end, |c, field, wire| {
                    match (field, wire) {
                        (1, 0) => p.partition = c.varint()? as u32,
                        (2, LEN) => {
                            let n = c.varint()? as usize;
                            p.records = c.take(n)?;
                        }
                        (_, wire) => c.skip(wire)?,
                    }
                    Ok(())
                })?;
                request.partitions.push(p);
            }
            (3, 0) => request.acks = c.varint()? as i32,
            (_, wire) => c.skip(wire)?,
        }
        Ok(())
    })?;
    Ok(request)
}

/// A message as gRPC frame chunks: `head` (the message's other fields, encoded), then
/// per item an embedded message in field `field`: its other fields encoded, and its
/// bytes field `bytes_field` as a chunk of its own.
fn chunked(head: &[u8], field: u32, items: Vec<(Vec<u8>, u32, Bytes)>) -> VecDeque<Bytes> {
    let key_len = |f: u32| encoded_len_varint(u64::from(f << 3) | LEN);
    let inner: Vec<usize> = items
        .iter()
        .map(|(h, f, b)| {
            h.len()
                + if b.is_empty() {
                    0
                } else {
                    key_len(*f) + encoded_len_varint(b.len() as u64) + b.len()
                }
        })
        .collect();
    let total = head.len()
        + inner
            .iter()
            .map(|n| key_len(field) + encoded_len_varint(*n as u64) + n)
            .sum::<usize>();
    let mut chunks = VecDeque::with_capacity(2 * items.len() + 1);
    let mut buf = BytesMut::with_capacity(64 + head.len());
    buf.put_u8(0);
    buf.put_u32(total as u32);
    buf.put_slice(head);
    for ((h, f, b), n) in items.into_iter().zip(inner) {
        encode_varint(u64::from(field << 3) | LEN, &mut buf);
        encode_varint(n as u64, &mut buf);
        buf.put_slice(&h);
        if !b.is_empty() {
            encode_varint(u64::from(f << 3) | LEN, &mut buf);
            encode_varint(b.len() as u64, &mut buf);
            chunks.push_back(buf.split().freeze());
            chunks.push_back(b);
        }
    }
    if !buf.is_empty() {
        chunks.push_back(buf.freeze());
    }
    chunks
}

/// A `FetchResponse` as gRPC frame chunks, each partition's records their own chunk.
pub fn fetch_response(answer: &v1::FetchResponse) -> VecDeque<Bytes> {
    let items = answer
        .partitions
        .iter()
        .map(|p| {
            let head = v1::PartitionData {
                records: Bytes::new(),
                ..p.clone()
            }
            .encode_to_vec();
            (head, 3, p.records.clone())
        })
        .collect();
    chunked(&[], 1, items)
}

/// A `ProduceRequest` as gRPC frame chunks, each partition's batches their own chunk.
pub fn produce_request(request: &v1::ProduceRequest) -> VecDeque<Bytes> {
    let head = v1::ProduceRequest {
        partitions: Vec::new(),
        ..request.clone()
    }
    .encode_to_vec();
    let items = request
        .partitions
        .iter()
        .map(|p| {
            let h = v1::PartitionRecords {
                partition: p.partition,
                records: Bytes::new(),
            }
            .encode_to_vec();
            (h, 2, p.records.clone())
        })
        .collect();
    chunked(&head, 2, items)
}

/// A message encoded by prost as one gRPC frame chunk.
pub fn framed(message: &impl Message) -> VecDeque<Bytes> {
    let len = message.encoded_len();
    let mut buf = BytesMut::with_capacity(5 + len);
    buf.put_u8(0);
    buf.put_u32(len as u32);
    // Writing into a buffer reserved for it cannot fail.
    let _ = message.encode(&mut buf);
    VecDeque::from([buf.freeze()])
}

/// An HTTP body of ready chunks, then (for a server's answer) trailers.
pub struct ChunkBody {
    chunks: VecDeque<Bytes>,
    trailers: Option<http::HeaderMap>,
}

impl ChunkBody {
    /// A request body.
    pub fn request(chunks: VecDeque<Bytes>) -> Self {
        Self {
            chunks,
            trailers: None,
        }
    }

    /// A successful answer's body: the chunks, then `grpc-status: 0`.
    pub fn answer(chunks: VecDeque<Bytes>) -> Self {
        let mut trailers = http::HeaderMap::new();
        trailers.insert("grpc-status", http::HeaderValue::from_static("0"));
        Self {
            chunks,
            trailers: Some(trailers),
        }
    }
}

impl http_body::Body for ChunkBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, Infallible>>> {
        if let Some(c) = self.chunks.pop_front() {
            return Poll::Ready(Some(Ok(http_body::Frame::data(c))));
        }
        Poll::Ready(
            self.trailers
                .take()
                .map(|t| Ok(http_body::Frame::trailers(t))),
        )
    }

    fn is_end_stream(&self) -> bool {
        self.chunks.is_empty() && self.trailers.is_none()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        let n: usize = self.chunks.iter().map(Bytes::len).sum();
        let mut hint = http_body::SizeHint::new();
        hint.set_lower(n as u64);
        if self.trailers.is_none() {
            hint.set_upper(n as u64);
        }
        hint
    }
}

#[cfg(test)]
mod tests;
