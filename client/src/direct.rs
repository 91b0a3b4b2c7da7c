//! Produce and Fetch over the gRPC channel without tonic's message buffers
//! (`rafka_proto::wire`): a produce request goes out with each partition's batches as
//! their own chunk, not copied into an encode buffer, and a fetch answer is decoded
//! where its HTTP/2 DATA frames lie, records that arrived in one frame (connections take
//! frames up to 16 MiB) used as they are. Protobuf-over-gRPC on the wire, as tonic's
//! generated client would send and read.

use std::collections::VecDeque;

use crate::security::Conn;
use bytes::Bytes;
use http_body_util::BodyExt;
use prost::Message;
use rafka_proto::v1;
use rafka_proto::wire::{self, ChunkBody, Chunks};
use tonic::Status;
use tower_service::Service;

/// Largest answer read (a fetch's `max_bytes` is bounded far below it).
const MAX_ANSWER: usize = 1 << 30;

/// `rafka.v1.Broker/Fetch` on `channel`.
pub async fn fetch(
    channel: Conn,
    request: v1::FetchRequest,
) -> Result<tonic::Response<v1::FetchResponse>, Status> {
    let mut answer = call(channel, "/rafka.v1.Broker/Fetch", wire::framed(&request)).await?;
    let decoded = wire::decode_fetch_response(&mut answer)
        .map_err(|e| Status::internal(format!("fetch answer: {e}")))?;
    Ok(tonic::Response::new(decoded))
}

/// `rafka.v1.Broker/Produce` on `channel`.
pub async fn produce(
    channel: Conn,
    request: &v1::ProduceRequest,
) -> Result<tonic::Response<v1::ProduceResponse>, Status> {
    let answer = call(
        channel,
        "/rafka.v1.Broker/Produce",
        wire::produce_request(request),
    )
    .await?;
    let decoded = v1::ProduceResponse::decode(answer.contiguous())
        .map_err(|e| Status::internal(format!("produce answer: {e}")))?;
    Ok(tonic::Response::new(decoded))
}

/// Sends `chunks` (a framed message) to the unary method at `path`; the answer's
/// message, unframed, or the call's error status.
async fn call(
    mut channel: Conn,
    path: &'static str,
    chunks: VecDeque<Bytes>,
) -> Result<Chunks, Status> {
    let request = http::Request::builder()
        .method(http::Method::POST)
        .uri(path)
        .header(http::header::CONTENT_TYPE, "application/grpc")
        .header(http::header::TE, "trailers")
        .body(tonic::body::Body::new(ChunkBody::request(chunks)))
        .map_err(|e| Status::internal(format!("building a request: {e}")))?;
    std::future::poll_fn(|cx| channel.poll_ready(cx))
        .await
        .map_err(|e| Status::from_error(e.into()))?;
    let response = channel
        .call(request)
        .await
        .map_err(|e| Status::from_error(e.into()))?;
    let (parts, mut body) = response.into_parts();
    // An error travels in the headers alone ("trailers only").
    if let Some(status) = Status::from_header_map(&parts.headers) {
        if status.code() != tonic::Code::Ok {
            return Err(status);
        }
    }
    if parts.status != http::StatusCode::OK {
        return Err(Status::unknown(format!("HTTP status {}", parts.status)));
    }
    let mut answer = Chunks::default();
    let mut trailers = None;
    while let Some(frame) = body.frame().await {
        match frame?.into_data() {
            Ok(data) => {
                answer.push(data);
                if answer.len() > MAX_ANSWER {
                    return Err(Status::resource_exhausted("an answer over 1 GiB"));
                }
            }
            Err(frame) => trailers = frame.into_trailers().ok(),
        }
    }
    match trailers.as_ref().and_then(Status::from_header_map) {
        Some(s) if s.code() != tonic::Code::Ok => return Err(s),
        Some(_) => {}
        None => return Err(Status::internal("an answer without a gRPC status")),
    }
    answer
        .unframe()
        .map_err(|e| Status::internal(format!("answer: {e}")))?;
    Ok(answer)
}
