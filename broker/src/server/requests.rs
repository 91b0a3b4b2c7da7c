//! Every gRPC request the broker serves, through a tower layer around its server:
//!
//! - counted by service, method and status code (`rafka_requests_total`) and timed per
//!   service and method (`rafka_request_seconds`, until the answer's headers are ready);
//! - with `RUST_LOG=info,rafka_broker::server::requests=debug`, run inside a `request`
//!   span carrying its id, its method and, where the handler records them, its topic
//!   and partition, and logged when answered. Client requests only (the peer service's
//!   Raft calls log with their own context); at debug level, off by default, because a
//!   span per request cost a single broker a few percent of its records per second.
//!   The id is the client's `x-request-id` header (up to 64 visible ASCII
//!   characters), which the answer carries back, or one made here.
//!
//! A unary call is counted when its answer's headers are ready: an error travels in
//! them (`grpc-status`), and a success has none there. A streaming call is counted when
//! its stream starts.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
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

/// One gRPC method's numbers: calls by status code and their latency. Found once per
/// call by its path (a read lock, no allocation), then counted with atomics.
#[derive(Debug)]
pub struct MethodStats {
    /// The service's full name (`rafka.v1.Broker`).
    pub service: String,
    /// The method's name (`Fetch`).
    pub method: String,
    /// Calls per status code (`tonic::Code` as the index).
    codes: [AtomicU64; 17],
    /// Received to answer's headers.
    pub latency: Arc<Histogram>,
    /// A method of the brokers' peer service (Raft): no span per call, the Raft code
    /// logs with its own context.
    peer: bool,
}

impl MethodStats {
    /// Calls per status code name, those with any.
    pub fn codes(&self) -> Vec<(&'static str, u64)> {
        (0..17)
            .filter_map(|i| {
                let n = self.codes[i].load(Ordering::Relaxed);
                (n > 0).then(|| (code_name(tonic::Code::from_i32(i as i32)), n))
            })
            .collect()
    }
}

/// Every method seen so far, by gRPC path.
static METHODS: RwLock<BTreeMap<String, Arc<MethodStats>>> = RwLock::new(BTreeMap::new());

/// Every method seen so far.
pub fn methods() -> Vec<Arc<MethodStats>> {
    let m = METHODS.read().unwrap_or_else(|e| e.into_inner());
    m.values().cloned().collect()
}

/// The numbers of the method at `path`; unknown and over-long names share one entry,
/// so that the metrics stay bounded.
fn stats_of(path: &str) -> Arc<MethodStats> {
    if let Some(s) = METHODS.read().unwrap_or_else(|e| e.into_inner()).get(path) {
        return s.clone();
    }
    let mut parts = path.trim_start_matches('/').splitn(2, '/');
    let service = parts.next().unwrap_or_default();
    let method = parts.next().unwrap_or_default();
    let known =
        !service.is_empty() && service.len() <= 64 && method.len() <= 64 && !method.contains('/');
    let (key, service, method) = if known {
        (path, service, method)
    } else {
        ("/unknown/unknown", "unknown", "unknown")
    };
    let mut m = METHODS.write().unwrap_or_else(|e| e.into_inner());
    m.entry(key.to_string())
        .or_insert_with(|| {
            Arc::new(MethodStats {
                service: service.to_string(),
                method: method.to_string(),
                codes: [const { AtomicU64::new(0) }; 17],
                latency: Arc::default(),
                peer: service.starts_with("rafka.peer."),
            })
        })
        .clone()
}

/// A request's id: the client's, or one made here (formatted only if a log line shows
/// it).
enum RequestId {
    Client(http::HeaderValue),
    Local(u64),
}

impl std::fmt::Display for RequestId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            // Checked to be visible ASCII when taken.
            Self::Client(v) => f.write_str(v.to_str().unwrap_or_default()),
            Self::Local(n) => write!(f, "{:x}-{n}", std::process::id()),
        }
    }
}

/// The client's request id if it is a sane one, else a new one (a per-process prefix
/// and a sequence number).
fn request_id(headers: &http::HeaderMap) -> RequestId {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    if let Some(v) = headers.get(REQUEST_ID) {
        let b = v.as_bytes();
        if !b.is_empty() && b.len() <= MAX_REQUEST_ID && b.iter().all(u8::is_ascii_graphic) {
            return RequestId::Client(v.clone());
        }
    }
    RequestId::Local(NEXT.fetch_add(1, Ordering::Relaxed))
}

/// Names the topic and partition of the request being served in its span.
pub fn record_target(topic: &str, partition: Option<u32>) {
    let span = tracing::Span::current();
    if span.is_disabled() {
        return;
    }
    span.record("topic", tracing::field::display(crate::error::shown(topic)));
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
        if !crate::metrics::enabled() {
            return Box::pin(self.0.call(request));
        }
        let started = Instant::now();
        let stats = stats_of(request.uri().path());
        let id = request_id(request.headers());
        let span = if stats.peer {
            tracing::Span::none()
        } else {
            tracing::debug_span!(
                "request",
                request_id = %id,
                method = %stats.method,
                topic = tracing::field::Empty,
                partition = tracing::field::Empty,
            )
        };
        let answer = span.in_scope(|| self.0.call(request));
        Box::pin(
            async move {
                let mut answer = answer.await;
                let code = match &mut answer {
                    Ok(response) => {
                        if let RequestId::Client(v) = &id {
                            response.headers_mut().insert(REQUEST_ID, v.clone());
                        }
                        response
                            .headers()
                            .get("grpc-status")
                            .and_then(|v| v.to_str().ok()?.parse::<i32>().ok())
                            .map_or(tonic::Code::Ok, tonic::Code::from_i32)
                    }
                    Err(_) => tonic::Code::Internal,
                };
                stats.latency.since(started);
                stats.codes[(code as usize).min(16)].fetch_add(1, Ordering::Relaxed);
                tracing::debug!(
                    service = %stats.service,
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
