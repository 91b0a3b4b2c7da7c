//! Counts requests by gRPC service, method and status code: a tower layer around the
//! broker's gRPC server (`rafka_requests_total` in `/metrics`).
//!
//! A unary call is counted when its answer's headers are ready: an error travels in
//! them (`grpc-status`), and a success has none there. A streaming call is counted when
//! its stream starts.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Mutex;
use std::task::{Context, Poll};

use tower_layer::Layer;
use tower_service::Service;

/// Requests so far, by (service, method, code).
static COUNTS: Mutex<BTreeMap<(String, String, &'static str), u64>> = Mutex::new(BTreeMap::new());

/// The counts so far: (service, method, code) and how many.
pub fn counts() -> Vec<((String, String, &'static str), u64)> {
    let counts = COUNTS.lock().unwrap_or_else(|e| e.into_inner());
    counts.iter().map(|(k, v)| (k.clone(), *v)).collect()
}

fn count(path: &str, code: tonic::Code) {
    let mut parts = path.trim_start_matches('/').splitn(2, '/');
    let service = parts.next().unwrap_or_default();
    let method = parts.next().unwrap_or_default();
    // Bounded: unknown services and methods are counted under one name.
    let known = !service.is_empty() && service.len() <= 64 && method.len() <= 64;
    let (service, method) = if known {
        (service, method)
    } else {
        ("unknown", "unknown")
    };
    let mut counts = COUNTS.lock().unwrap_or_else(|e| e.into_inner());
    *counts
        .entry((service.to_string(), method.to_string(), code_name(code)))
        .or_default() += 1;
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
        let path = request.uri().path().to_string();
        let answer = self.0.call(request);
        Box::pin(async move {
            let answer = answer.await;
            let code = match &answer {
                Ok(response) => response
                    .headers()
                    .get("grpc-status")
                    .and_then(|v| v.to_str().ok()?.parse::<i32>().ok())
                    .map_or(tonic::Code::Ok, tonic::Code::from_i32),
                Err(_) => tonic::Code::Internal,
            };
            count(&path, code);
            answer
        })
    }
}
