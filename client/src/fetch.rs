//! Fetch over the gRPC channel without tonic's message buffer: the request goes out as
//! one gRPC frame, and the answer's HTTP/2 DATA chunks are decoded in place. tonic
//! copies every chunk of a response into one buffer before decoding it; here a
//! partition's records stay the `Bytes` they arrived in when they arrived in one chunk
//! (the broker sends each partition's records as their own chunk, and the connection
//! takes frames up to [`MAX_FRAME`]), and are copied once only when a frame boundary
//! splits them. The wire format is plain protobuf-over-gRPC: a broker answering with
//! prost's encoding is decoded the same way.

use std::collections::VecDeque;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use http_body_util::BodyExt;
use prost::Message;
use rafka_proto::v1;
use tonic::transport::Channel;
use tonic::Status;
use tower_service::Service;

/// The largest HTTP/2 frame a client connection accepts (the protocol's maximum): a
/// partition's records of up to 16 MiB arrive in one DATA frame, as one `Bytes`.
pub const MAX_FRAME: u32 = (1 << 24) - 1;
/// Largest answer accepted (a fetch's `max_bytes` is bounded well below it).
const MAX_ANSWER: usize = 1 << 30;

/// `rafka.v1.Broker/Fetch` on `channel`.
pub async fn fetch(
    mut channel: Channel,
    request: v1::FetchRequest,
) -> Result<tonic::Response<v1::FetchResponse>, Status> {
    let encoded = request.encode_to_vec();
    let mut body = BytesMut::with_capacity(5 + encoded.len());
    body.put_u8(0);
    body.put_u32(encoded.len() as u32);
    body.put_slice(&encoded);
    let http_request = http::Request::builder()
        .method(http::Method::POST)
        .uri("/rafka.v1.Broker/Fetch")
        .header(http::header::CONTENT_TYPE, "application/grpc")
        .header(http::header::TE, "trailers")
        .body(tonic::body::Body::new(http_body_util::Full::new(
            body.freeze(),
        )))
        .map_err(|e| Status::internal(format!("building the fetch request: {e}")))?;
    std::future::poll_fn(|cx| channel.poll_ready(cx))
        .await
        .map_err(|e| Status::unavailable(format!("connection: {e}")))?;
    let response = channel
        .call(http_request)
        .await
        .map_err(|e| Status::unavailable(format!("fetch: {e}")))?;
    let (parts, mut body) = response.into_parts();
    if let Some(status) = Status::from_header_map(&parts.headers) {
        if status.code() != tonic::Code::Ok {
            return Err(status);
        }
    }
    if parts.status != http::StatusCode::OK {
        return Err(Status::unknown(format!("HTTP status {}", parts.status)));
    }
    let mut chunks = Chunks::default();
    let mut trailers = None;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| Status::unavailable(format!("fetch answer: {e}")))?;
        match frame.into_data() {
            Ok(data) => {
                chunks.len += data.len();
                if chunks.len > MAX_ANSWER {
                    return Err(Status::resource_exhausted("fetch answer over 1 GiB"));
                }
                if !data.is_empty() {
                    chunks.queue.push_back(data);
                }
            }
            Err(frame) => {
                if let Ok(t) = frame.into_trailers() {
                    trailers = Some(t);
                }
            }
        }
    }
    match trailers.as_ref().and_then(Status::from_header_map) {
        Some(s) if s.code() != tonic::Code::Ok => return Err(s),
        Some(_) => {}
        None => return Err(Status::unknown("fetch answer without a gRPC status")),
    }
    let answer =
        decode_answer(chunks).map_err(|e| Status::internal(format!("fetch answer: {e}")))?;
    Ok(tonic::Response::new(answer))
}

/// The DATA chunks of an answer, read front to back.
#[derive(Default)]
struct Chunks {
    queue: VecDeque<Bytes>,
    len: usize,
}

impl Chunks {
    fn u8(&mut self) -> Result<u8, String> {
        let front = self.queue.front_mut().ok_or("ends early")?;
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
        Err("varint too long".into())
    }

    /// The next `n` bytes: a slice of the chunk holding them all, else a copy.
    fn take(&mut self, n: usize) -> Result<Bytes, String> {
        if n > self.len {
            return Err(format!("a field of {n} bytes past the end"));
        }
        self.len -= n;
        if n == 0 {
            return Ok(Bytes::new());
        }
        let front = self.queue.front_mut().ok_or("ends early")?;
        if front.len() >= n {
            let out = front.split_to(n);
            if front.is_empty() {
                self.queue.pop_front();
            }
            return Ok(out);
        }
        let mut out = BytesMut::with_capacity(n);
        while out.len() < n {
            let front = self.queue.front_mut().ok_or("ends early")?;
            let k = front.len().min(n - out.len());
            out.put_slice(&front[..k]);
            front.advance(k);
            if front.is_empty() {
                self.queue.pop_front();
            }
        }
        Ok(out.freeze())
    }

    /// Skips a field of wire type `wire`.
    fn skip(&mut self, wire: u64) -> Result<(), String> {
        match wire {
            0 => self.varint().map(drop),
            1 => self.take(8).map(drop),
            2 => {
                let n = self.varint()? as usize;
                self.take(n).map(drop)
            }
            5 => self.take(4).map(drop),
            w => Err(format!("unknown wire type {w}")),
        }
    }
}

/// The gRPC frame and the `FetchResponse` in it.
fn decode_answer(mut c: Chunks) -> Result<v1::FetchResponse, String> {
    if c.u8()? != 0 {
        return Err("compressed answers are not accepted".into());
    }
    let mut len = 0usize;
    for _ in 0..4 {
        len = len << 8 | c.u8()? as usize;
    }
    if len != c.len {
        return Err(format!("a message of {len} bytes in a frame of {}", c.len));
    }
    let mut answer = v1::FetchResponse::default();
    while c.len > 0 {
        let key = c.varint()?;
        if key == (1 << 3 | 2) {
            let n = c.varint()? as usize;
            answer.partitions.push(decode_partition(&mut c, n)?);
        } else {
            c.skip(key & 7)?;
        }
    }
    Ok(answer)
}

/// One `PartitionData` of `n` bytes; its records without a copy where they lie in one
/// chunk.
fn decode_partition(c: &mut Chunks, n: usize) -> Result<v1::PartitionData, String> {
    if n > c.len {
        return Err("a partition past the end".into());
    }
    let end = c.len - n;
    let mut p = v1::PartitionData::default();
    while c.len > end {
        let key = c.varint()?;
        match (key >> 3, key & 7) {
            (1, 2) => {
                let n = c.varint()? as usize;
                p.topic = String::from_utf8(c.take(n)?.to_vec())
                    .map_err(|_| "a topic name that is not UTF-8")?;
            }
            (2, 0) => p.partition = c.varint()? as u32,
            (3, 2) => {
                let n = c.varint()? as usize;
                p.records = c.take(n)?;
            }
            (4, 0) => p.high_watermark = c.varint()?,
            (5, 0) => p.log_start_offset = c.varint()?,
            (_, wire) => c.skip(wire)?,
        }
    }
    if c.len != end {
        return Err("a partition's fields overrun it".into());
    }
    Ok(p)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> v1::FetchResponse {
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
            ],
        }
    }

    fn framed(m: &v1::FetchResponse) -> Vec<u8> {
        let body = m.encode_to_vec();
        let mut out = vec![0];
        out.extend_from_slice(&(body.len() as u32).to_be_bytes());
        out.extend_from_slice(&body);
        out
    }

    fn chunked(wire: &[u8], sizes: &[usize]) -> Chunks {
        let mut c = Chunks::default();
        let mut rest = wire;
        let mut i = 0;
        while !rest.is_empty() {
            let k = sizes[i % sizes.len()].min(rest.len());
            c.queue.push_back(Bytes::copy_from_slice(&rest[..k]));
            c.len += k;
            rest = &rest[k..];
            i += 1;
        }
        c
    }

    #[test]
    fn answers_decode_however_they_are_chunked() {
        let m = sample();
        let wire = framed(&m);
        for sizes in [&[wire.len()][..], &[1], &[5, 3, 16_384], &[7, 100_000]] {
            assert_eq!(
                decode_answer(chunked(&wire, sizes)).unwrap(),
                m,
                "{sizes:?}"
            );
        }
    }

    #[test]
    fn records_in_one_chunk_are_not_copied() {
        let m = sample();
        let wire = framed(&m);
        // Chunks as the broker sends them: the head, the records alone, the rest.
        let records_start = wire.windows(4).position(|w| w == [9, 9, 9, 9]).unwrap();
        let mut c = Chunks::default();
        let records = Bytes::copy_from_slice(&wire[records_start..records_start + 70_000]);
        for part in [
            Bytes::copy_from_slice(&wire[..records_start]),
            records.clone(),
            Bytes::copy_from_slice(&wire[records_start + 70_000..]),
        ] {
            c.len += part.len();
            c.queue.push_back(part);
        }
        let decoded = decode_answer(c).unwrap();
        assert_eq!(decoded, m);
        assert_eq!(decoded.partitions[0].records.as_ptr(), records.as_ptr());
    }

    #[test]
    fn bad_answers_are_errors_not_panics() {
        let wire = framed(&sample());
        for cut in [0, 3, 5, 9, wire.len() - 1] {
            assert!(decode_answer(chunked(&wire[..cut], &[4])).is_err(), "{cut}");
        }
        let mut compressed = wire.clone();
        compressed[0] = 1;
        assert!(decode_answer(chunked(&compressed, &[64])).is_err());
        // A partition whose length claims more than there is.
        let mut bad = vec![0, 0, 0, 0, 3, 0x0a, 0x7f, 0x10];
        bad[4] = 3;
        assert!(decode_answer(chunked(&bad, &[2])).is_err());
    }
}
