//! Produce and Fetch without copying records (`rafka_proto::wire`): a tower layer in
//! front of the gRPC routes takes `rafka.v1.Broker/Produce` and `/Fetch` and runs the
//! Broker service's handlers itself. A produce request is decoded where its HTTP/2
//! DATA frames lie (a batch that arrived in one frame, up to 16 MiB, is a slice of it,
//! not a copy in tonic's decode buffer); a fetch answer is written as a chain of
//! `Bytes`, each partition's records the very slice of the segment mapping the log
//! reader returned, which HTTP/2 sends with `writev`: from the page cache to the socket
//! with no copy in the broker.
//!
//! Protobuf-over-gRPC on the wire, as before. Other methods, and calls this layer does
//! not take (compressed messages), go to the generated routes unchanged.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use http_body_util::BodyExt;
use rafka_proto::v1::broker_server::Broker;
use rafka_proto::wire::{self, ChunkBody, Chunks};
use tonic::body::Body;
use tonic::Status;
use tower_layer::Layer;
use tower_service::Service;

use super::broker_service::BrokerService;
use super::Shared;

const FETCH: &str = "/rafka.v1.Broker/Fetch";
const PRODUCE: &str = "/rafka.v1.Broker/Produce";

/// Largest Fetch request read (a request names partitions, it carries no records).
const MAX_FETCH_REQUEST: usize = 4 << 20;

/// The layer: puts [`Direct`] in front of the routes.
#[derive(Clone)]
pub(crate) struct DirectLayer {
    service: Arc<BrokerService>,
    /// Largest produce message read; larger: OUT_OF_RANGE, as tonic's own limit.
    max_produce: usize,
}

impl DirectLayer {
    pub(crate) fn new(shared: Arc<Shared>, max_produce: usize) -> Self {
        Self {
            service: Arc::new(BrokerService::new(shared)),
            max_produce,
        }
    }
}

impl<S> Layer<S> for DirectLayer {
    type Service = Direct<S>;

    fn layer(&self, inner: S) -> Direct<S> {
        Direct {
            inner,
            layer: self.clone(),
        }
    }
}

/// Serves Produce and Fetch without copies, everything else through `inner`.
#[derive(Clone)]
pub(crate) struct Direct<S> {
    inner: S,
    layer: DirectLayer,
}

impl<S> Service<http::Request<Body>> for Direct<S>
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
        let path = request.uri().path();
        let ours = path == FETCH || path == PRODUCE;
        if !ours || request.headers().contains_key("grpc-encoding") {
            return Box::pin(self.inner.call(request));
        }
        let layer = self.layer.clone();
        Box::pin(async move {
            let answer = if request.uri().path() == FETCH {
                fetch(&layer, request).await
            } else {
                produce(&layer, request).await
            };
            Ok(answer.unwrap_or_else(Status::into_http))
        })
    }
}

/// The request's message, unframed, in the chunks it arrived in; at most `max` bytes.
async fn message(
    request: http::Request<Body>,
    max: usize,
) -> Result<(tonic::metadata::MetadataMap, Chunks), Status> {
    let (parts, mut body) = request.into_parts();
    let mut chunks = Chunks::default();
    while let Some(frame) = body.frame().await {
        if let Ok(data) = frame?.into_data() {
            chunks.push(data);
            if chunks.len() > max + 5 {
                return Err(Status::out_of_range(format!(
                    "the request is over {max} bytes, the largest this broker decodes"
                )));
            }
        }
    }
    chunks
        .unframe()
        .map_err(|e| Status::invalid_argument(format!("request: {e}")))?;
    Ok((
        tonic::metadata::MetadataMap::from_headers(parts.headers),
        chunks,
    ))
}

fn answer(body: ChunkBody) -> http::Response<Body> {
    let mut response = http::Response::new(Body::new(body));
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/grpc"),
    );
    response
}

/// Who sent the request (the auth layer put it there), for the handler's ACL checks.
fn principal_of(request: &http::Request<Body>) -> Option<Arc<crate::auth::Principal>> {
    request
        .extensions()
        .get::<Arc<crate::auth::Principal>>()
        .cloned()
}

fn invalid(e: String) -> Status {
    Status::invalid_argument(format!("the message is not valid protobuf: {e}"))
}

async fn fetch(
    layer: &DirectLayer,
    request: http::Request<Body>,
) -> Result<http::Response<Body>, Status> {
    let principal = principal_of(&request);
    let (metadata, chunks) = message(request, MAX_FETCH_REQUEST).await?;
    let decoded =
        prost::Message::decode(chunks.contiguous()).map_err(|e| invalid(e.to_string()))?;
    let mut req = tonic::Request::new(decoded);
    *req.metadata_mut() = metadata;
    if let Some(p) = principal {
        req.extensions_mut().insert(p);
    }
    let out = layer.service.fetch(req).await?.into_inner();
    Ok(answer(ChunkBody::answer(wire::fetch_response(&out))))
}

async fn produce(
    layer: &DirectLayer,
    request: http::Request<Body>,
) -> Result<http::Response<Body>, Status> {
    let principal = principal_of(&request);
    let (metadata, mut chunks) = message(request, layer.max_produce).await?;
    let decoded = wire::decode_produce_request(&mut chunks).map_err(invalid)?;
    let mut req = tonic::Request::new(decoded);
    *req.metadata_mut() = metadata;
    if let Some(p) = principal {
        req.extensions_mut().insert(p);
    }
    let out = layer.service.produce(req).await?.into_inner();
    Ok(answer(ChunkBody::answer(wire::framed(&out))))
}
