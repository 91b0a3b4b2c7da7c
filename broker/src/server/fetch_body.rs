//! Fetch answers written straight from the log's mappings: a tower layer in front of the
//! gRPC routes takes `rafka.v1.Broker/Fetch`, runs the Broker service's fetch, and writes
//! the `FetchResponse` itself as a chain of `Bytes`: small buffers for the gRPC frame
//! header and each partition's fields, and the records as the very `Bytes` the log
//! reader returned (slices of the segment mapping). HTTP/2 sends chunks over 256 bytes
//! as their own iovecs (`writev`), so record bytes go from the page cache to the socket
//! with no copy in the broker; prost's encoder copied every fetched byte once.
//!
//! The wire format is protobuf's, so every gRPC client decodes it as before. Requests
//! other than Fetch, and Fetch requests this layer cannot take (compressed frames), go
//! to the generated routes unchanged.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::{BufMut, Bytes, BytesMut};
use http_body::Frame;
use http_body_util::BodyExt;
use prost::Message;
use rafka_proto::v1::{self, broker_server::Broker};
use tonic::body::Body;
use tonic::Status;
use tower_layer::Layer;
use tower_service::Service;

use super::broker_service::BrokerService;
use super::Shared;

/// The gRPC path this layer serves.
const FETCH: &str = "/rafka.v1.Broker/Fetch";
/// Largest Fetch request read (a request names partitions, no records).
const MAX_REQUEST: usize = 4 << 20;

/// The layer: puts [`DirectFetch`] in front of the routes.
#[derive(Clone)]
pub(crate) struct DirectFetchLayer {
    service: Arc<BrokerService>,
}

impl DirectFetchLayer {
    pub(crate) fn new(shared: Arc<Shared>) -> Self {
        Self {
            service: Arc::new(BrokerService::new(shared)),
        }
    }
}

impl<S> Layer<S> for DirectFetchLayer {
    type Service = DirectFetch<S>;

    fn layer(&self, inner: S) -> DirectFetch<S> {
        DirectFetch {
            inner,
            service: self.service.clone(),
        }
    }
}

/// Serves Fetch from the mappings, everything else through `inner`.
#[derive(Clone)]
pub(crate) struct DirectFetch<S> {
    inner: S,
    service: Arc<BrokerService>,
}

impl<S> Service<http::Request<Body>> for DirectFetch<S>
where
    S: Service<http::Request<Body>, Response = http::Response<Body>>,
    S::Future: Send + 'static,
{
    type Response = http::Response<Body>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<Body>) -> Self::Future {
        let compressed = request.headers().contains_key("grpc-encoding");
        if request.uri().path() != FETCH || compressed {
            return Box::pin(self.inner.call(request));
        }
        let service = self.service.clone();
        Box::pin(async move {
            let answer = match fetch(&service, request).await {
                Ok(r) => r,
                Err(status) => status.into_http(),
            };
            Ok(answer)
        })
    }
}

async fn fetch(
    service: &BrokerService,
    request: http::Request<Body>,
) -> Result<http::Response<Body>, Status> {
    let (parts, body) = request.into_parts();
    let limited = http_body_util::Limited::new(body, MAX_REQUEST);
    let bytes = limited
        .collect()
        .await
        .map_err(|e| Status::invalid_argument(format!("reading the fetch request: {e}")))?
        .to_bytes();
    let message = unframe(&bytes)?;
    let decoded = v1::FetchRequest::decode(message)
        .map_err(|e| Status::invalid_argument(format!("the message is not valid protobuf: {e}")))?;
    let mut req = tonic::Request::new(decoded);
    *req.metadata_mut() = tonic::metadata::MetadataMap::from_headers(parts.headers);
    let answer = service.fetch(req).await?.into_inner();
    let mut response = http::Response::new(Body::new(Chunks::new(encode(&answer))));
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/grpc"),
    );
    Ok(response)
}

/// The one uncompressed message of a gRPC request body.
fn unframe(body: &Bytes) -> Result<Bytes, Status> {
    let bad = |what: &str| Status::invalid_argument(format!("fetch request: {what}"));
    if body.len() < 5 {
        return Err(bad("shorter than a gRPC frame header"));
    }
    if body[0] != 0 {
        return Err(Status::unimplemented(
            "fetch request: compressed messages are not accepted",
        ));
    }
    let len = u32::from_be_bytes([body[1], body[2], body[3], body[4]]) as usize;
    if body.len() != 5 + len {
        return Err(bad("its length does not match its gRPC frame"));
    }
    Ok(body.slice(5..))
}

/// `answer` as gRPC frame chunks: protobuf, with each partition's records as their own
/// chunk (not copied).
fn encode(answer: &v1::FetchResponse) -> VecDeque<Bytes> {
    // Per partition: PartitionData without its records, encoded by prost (a few dozen
    // bytes), and the length of the records field, written by hand.
    let heads: Vec<(Vec<u8>, usize)> = answer
        .partitions
        .iter()
        .map(|p| {
            let head = v1::PartitionData {
                records: Bytes::new(),
                ..p.clone()
            }
            .encode_to_vec();
            let records = if p.records.is_empty() {
                0
            } else {
                1 + prost::encoding::encoded_len_varint(p.records.len() as u64) + p.records.len()
            };
            (head, records)
        })
        .collect();
    let total: usize = heads
        .iter()
        .map(|(h, r)| {
            let inner = h.len() + r;
            1 + prost::encoding::encoded_len_varint(inner as u64) + inner
        })
        .sum();
    let mut chunks = VecDeque::with_capacity(2 * answer.partitions.len() + 1);
    let mut buf = BytesMut::with_capacity(64);
    buf.put_u8(0); // not compressed
    buf.put_u32(total as u32);
    for (p, (head, records)) in answer.partitions.iter().zip(&heads) {
        // FetchResponse.partitions = 1, length-delimited.
        buf.put_u8(1 << 3 | 2);
        prost::encoding::encode_varint((head.len() + records) as u64, &mut buf);
        buf.put_slice(head);
        if !p.records.is_empty() {
            // PartitionData.records = 3, length-delimited.
            buf.put_u8(3 << 3 | 2);
            prost::encoding::encode_varint(p.records.len() as u64, &mut buf);
            chunks.push_back(buf.split().freeze());
            chunks.push_back(p.records.clone());
        }
    }
    if !buf.is_empty() {
        chunks.push_back(buf.freeze());
    }
    chunks
}

/// A response body of ready chunks, then the trailers of a successful call.
struct Chunks {
    chunks: VecDeque<Bytes>,
    done: bool,
}

impl Chunks {
    fn new(chunks: VecDeque<Bytes>) -> Self {
        Self {
            chunks,
            done: false,
        }
    }
}

impl http_body::Body for Chunks {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        if let Some(c) = self.chunks.pop_front() {
            return Poll::Ready(Some(Ok(Frame::data(c))));
        }
        if self.done {
            return Poll::Ready(None);
        }
        self.done = true;
        let mut trailers = http::HeaderMap::new();
        trailers.insert("grpc-status", http::HeaderValue::from_static("0"));
        Poll::Ready(Some(Ok(Frame::trailers(trailers))))
    }

    fn is_end_stream(&self) -> bool {
        self.done && self.chunks.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn joined(chunks: &VecDeque<Bytes>) -> Vec<u8> {
        chunks.iter().flat_map(|c| c.iter().copied()).collect()
    }

    #[test]
    fn the_chunks_are_the_protobuf_encoding_with_records_uncopied() {
        let records = Bytes::from(vec![7u8; 300_000]);
        let answer = v1::FetchResponse {
            partitions: vec![
                v1::PartitionData {
                    topic: "t".into(),
                    partition: 3,
                    records: records.clone(),
                    high_watermark: 1 << 40,
                    log_start_offset: 5,
                },
                v1::PartitionData {
                    topic: "empty".into(),
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
        };
        let chunks = encode(&answer);
        let wire = joined(&chunks);
        let expected = answer.encode_to_vec();
        assert_eq!(wire[0], 0);
        assert_eq!(
            u32::from_be_bytes(wire[1..5].try_into().unwrap()) as usize,
            expected.len()
        );
        assert_eq!(v1::FetchResponse::decode(&wire[5..]).unwrap(), answer);
        // The big records travel as the same allocation, not a copy.
        assert!(chunks.iter().any(|c| c.as_ptr() == records.as_ptr()));
    }

    #[test]
    fn an_empty_answer_is_a_frame_of_zero_bytes() {
        let wire = joined(&encode(&v1::FetchResponse::default()));
        assert_eq!(wire, vec![0, 0, 0, 0, 0]);
    }

    #[test]
    fn bad_frames_are_refused() {
        assert!(unframe(&Bytes::from_static(b"\0\0\0")).is_err());
        assert_eq!(
            unframe(&Bytes::from_static(b"\x01\0\0\0\0"))
                .unwrap_err()
                .code(),
            tonic::Code::Unimplemented
        );
        assert!(unframe(&Bytes::from_static(b"\0\0\0\0\x05ab")).is_err());
        assert_eq!(
            unframe(&Bytes::from_static(b"\0\0\0\0\x02ab")).unwrap(),
            Bytes::from_static(b"ab")
        );
    }
}
