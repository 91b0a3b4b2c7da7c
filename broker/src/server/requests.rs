//! Every gRPC request the broker serves, through a tower layer around its server:
//!
//! - counted by service, method and status code (`rafka_requests_total`) and timed per
//!   service and method (`rafka_request_seconds`, until the answer's headers are ready);
//! - run inside a `request` span carrying its id, its method and, where the handler
//!   records them, its topic and partition. The id is the client's `x-request-id`
//!   header (up to 64 visible ASCII characters) or one made here; the answer carries
//!   it back in `x-request-id`. With `RUST_LOG=rafka_broker::server::requests=debug`
//!   each request is logged when answered.
//!
//! A unary call is counted when its answer's headers are ready: an error travels in
//! them (`grpc-status`), and a success has none there. A streaming call is counted when
//! its stream starts.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Instant;

use tower_layer::Layer;
use tower_service::Service;
use tracing::Instrument;

use crate::metrics::Histogram;

/// The header a request id travels in, both ways.
pub const REQUEST_ID: &str = "x-request-id";
/// Longest request id taken from a client.
const MAX_REQUEST_ID: usize = 64;

/// Requests so far, by (service, method, code).
static COUNTS: Mutex<BTreeMap<(String, String, &'static str), u64>> = Mutex::new(BTreeMap::new());
/// Latency per (service, method).
static LATENCY: Mutex<BTreeMap<(String, String), Arc<Histogram>>> = Mutex::new(BTreeMap::new());

/// The counts so far: (service, method, code) and how many.
pub fn counts() -> Vec<((String, String, &'static str), u64)> {
    let counts = COUNTS.lock().unwrap_or_else(|e| e.into_inner());
    counts.iter().map(|(k, v)| (k.clone(), *v)).collect()
}

/// The latency histograms so far, by (service, method).
pub fn latencies() -> Vec<((String, String), Arc<Histogram>)> {
    let l = LATENCY.lock().unwrap_or_else(|e| e.into_inner());
    l.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
}

/// (service, method) of a gRPC path; unknown and over-long names under one name, so
/// that the metrics stay bounded.
fn method_of(path: &str) -> (&str, &str) {
    let mut parts = path.trim_start_matches('/').splitn(2, '/');
    let service = parts.next().unwrap_or_default();
    let method = parts.next().unwrap_or_default();
    let known =
        !service.is_empty() && service.len() <= 64 && method.len() <= 64 && !method.contains('/');
    if known {
        (service, method)
    } else {
        ("unknown", "unknown")
    }
}

fn latency_of(service: &str, method: &str) -> Arc<Histogram> {
    let mut l = LATENCY.lock().unwrap_or_else(|e| e.into_inner());
    l.entry((service.to_string(), method.to_string()))
        .or_default()
        .clone()
}

fn count(service: &str, method: &str, code: tonic::Code) {
    let mut counts = COUNTS.lock().unwrap_or_else(|e| e.into_inner());
    *counts
        .entry((service.to_string(), method.to_string(), code_name(code)))
        .or_default() += 1;
}

/// The client's request id if it is a sane one, else a new one (a per-process prefix
/// and a sequence number).
fn request_id(headers: &http::HeaderMap) -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    if let Some(id) = headers.get(REQUEST_ID).and_then(|v| v.to_str().ok()) {
        if !id.is_empty() && id.len() <= MAX_REQUEST_ID && id.bytes().all(|b| b.is_ascii_graphic())
        {
            return id.to_string();
        }
    }
    format!(
        "{:x}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// Names the topic and partition of the request being served in its span.
pub fn record_target(topic: &str, partition: Option<u32>) {
    let span = tracing::Span::current();
    span.record("topic", crate::error::shown(topic).to_string());
    if let Some(p) = partition {
        span.record("partition", p);
    }
}

fn code_name(code: tonic::Code) -> &'static str {
    use tonic::Code::*;
    match code {
        Ok => "OK",
        Cancelled => "CANCELLED",
        Unknown => "UNKNOWN",
        InvalidArgument => "INVALID_ARGUMENT",
        DeadlineExceeded => "DEADLINE_EXCEEDED",
        NotFound => "NOT_FOUND",
        AlreadyExists => "ALREADY_EXISTS",
        PermissionDenied => "PERMISSION_DENIED",
        ResourceExhausted => "RESOURCE_EXHAUSTED",
        FailedPrecondition => "FAILED_PRECONDITION",
        Aborted => "ABORTED",
        OutOfRange => "OUT_OF_RANGE",
        Unimplemented => "UNIMPLEMENTED",
        Internal => "INTERNAL",
        Unavailable => "UNAVAILABLE",
        DataLoss => "DATA_LOSS",
        Unauthenticated => "UNAUTHENTICATED",
    }
}

/// The layer: wraps the gRPC routes in [`Counted`].
#[derive(Clone, Copy, Debug, Default)]
pub struct CountRequests;

impl<S> Layer<S> for CountRequests {
    type Service = Counted<S>;

    fn layer(&self, inner: S) -> Counted<S> {
        Counted(inner)
    }
}

/// A service whose calls are counted.
#[derive(Clone, Debug)]
pub struct Counted<S>(S);

impl<S, B, RB> Service<http::Request<B>> for Counted<S>
where
    S: Service<http::Request<B>, Response = http::Response<RB>>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.0.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let started = Instant::now();
        let (service, method) = method_of(request.uri().path());
        let (service, method) = (service.to_string(), method.to_string());
        let latency = latency_of(&service, &method);
        let id = request_id(request.headers());
        let span = tracing::info_span!(
            "request",
            request_id = %id,
            method = %method,
            topic = tracing::field::Empty,
            partition = tracing::field::Empty,
        );
        let answer = span.in_scope(|| self.0.call(request));
        Box::pin(
            async move {
                let mut answer = answer.await;
                let code = match &mut answer {
                    Ok(response) => {
                        if let Ok(v) = http::HeaderValue::from_str(&id) {
                            response.headers_mut().insert(REQUEST_ID, v);
                        }
                        response
                            .headers()
                            .get("grpc-status")
                            .and_then(|v| v.to_str().ok()?.parse::<i32>().ok())
                            .map_or(tonic::Code::Ok, tonic::Code::from_i32)
                    }
                    Err(_) => tonic::Code::Internal,
                };
                latency.since(started);
                count(&service, &method, code);
                tracing::debug!(
                    service = %service,
                    code = code_name(code),
                    micros = started.elapsed().as_micros() as u64,
                    "answered"
                );
                answer
            }
            .instrument(span),
        )
    }
}
