//! The broker's HTTP port: `/metrics` (Prometheus text: the stage histograms, this
//! broker's replicas and partitions, requests by method and code, the process),
//! `/health/live` and `/health/ready`, and the web console (`/ui/`, `/api/v1/...`; see
//! `console`) where the broker's client address is known.

use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::{Registry, Unit};
use tokio::net::TcpListener;

use crate::cluster::node::ClusterNode;

/// The content type of the OpenMetrics text `prometheus-client` writes.
const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// The HTTP routes; the cluster metrics and readiness need `node`, the console needs
/// `node` and the address its clients connect to.
pub fn router(node: Option<Arc<ClusterNode>>, address: Option<String>) -> Router {
    let base = Router::new()
        .route("/metrics", get(metrics))
        .route("/health/live", get(|| async { "ok\n" }))
        .route("/health/ready", get(ready))
        .with_state(node.clone());
    let routes = match (node, address) {
        (Some(node), Some(address)) => base.merge(crate::console::router(node, address)),
        _ => base,
    };
    routes.layer(axum::middleware::from_fn(crate::console::guard))
}

async fn metrics(State(node): State<Option<Arc<ClusterNode>>>) -> impl IntoResponse {
    let mut registry = crate::metrics::registry();
    if let Some(node) = &node {
        node.register_metrics(&mut registry);
    }
    register_process(&mut registry);
    register_requests(&mut registry);
    let mut out = String::new();
    // Writing into a String cannot fail.
    let _ = prometheus_client::encoding::text::encode(&mut out, &registry);
    ([(header::CONTENT_TYPE, OPENMETRICS)], out)
}

/// 200 once the broker knows the cluster's metadata and has opened every replica placed
/// on it; 503 before (what an orchestrator's readiness probe waits for).
async fn ready(State(node): State<Option<Arc<ClusterNode>>>) -> impl IntoResponse {
    match node {
        Some(n) if n.is_ready() => (StatusCode::OK, "ready\n"),
        Some(_) => (
            StatusCode::SERVICE_UNAVAILABLE,
            "not ready: metadata not known yet or replicas still opening\n",
        ),
        None => (StatusCode::SERVICE_UNAVAILABLE, "not ready: no broker\n"),
    }
}

/// Requests by gRPC service, method and status code (see `server::requests`).
fn register_requests(registry: &mut Registry) {
    let family = Family::<Vec<(&'static str, String)>, Counter>::default();
    registry.register(
        "requests",
        "gRPC requests by service, method and status code",
        family.clone(),
    );
    for ((service, method, code), n) in super::requests::counts() {
        let labels = vec![
            ("service", service),
            ("method", method),
            ("code", code.to_string()),
        ];
        family.get_or_create(&labels).inc_by(n);
    }
}

/// The process's resident memory, CPU time and open files, from `/proc/self` (left out
/// where it cannot be read).
fn register_process(registry: &mut Registry) {
    let page = 4096.0;
    if let Some(rss) = std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1)?.parse::<f64>().ok())
    {
        let g = ConstGauge::new(rss * page);
        registry.register_with_unit("process_resident_memory", "Resident memory", Unit::Bytes, g);
    }
    // utime and stime, fields 14 and 15, after the command name in parentheses.
    if let Some(ticks) = std::fs::read_to_string("/proc/self/stat")
        .ok()
        .and_then(|s| {
            let rest = s.rsplit_once(')')?.1;
            let f: Vec<&str> = rest.split_whitespace().collect();
            Some(f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?)
        })
    {
        // Linux reports CPU time in clock ticks of 1/100 s (USER_HZ).
        let c = ConstCounter::new(ticks / 100.0);
        registry.register_with_unit("process_cpu", "CPU time, user and system", Unit::Seconds, c);
    }
    if let Ok(fds) = std::fs::read_dir("/proc/self/fd") {
        let g = ConstGauge::new(fds.count() as i64);
        registry.register("process_open_fds", "Open file descriptors", g);
    }
}

/// Serves the routes on `listener` until the future is dropped.
pub async fn serve(listener: TcpListener, node: Option<Arc<ClusterNode>>, address: Option<String>) {
    if let Err(e) = axum::serve(listener, router(node, address)).await {
        tracing::warn!("http server stopped: {e}");
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    async fn get(addr: std::net::SocketAddr, path: &str) -> String {
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        let req = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
        s.write_all(req.as_bytes()).await.unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).await.unwrap();
        out
    }

    #[tokio::test]
    async fn metrics_and_liveness_over_http() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(super::serve(listener, None, None));
        crate::metrics::STAGES
            .produce_validate
            .observe(std::time::Duration::from_micros(10));
        let metrics = get(addr, "/metrics").await;
        assert!(metrics.starts_with("HTTP/1.1 200"), "{metrics}");
        assert!(
            metrics.contains("application/openmetrics-text"),
            "{metrics}"
        );
        assert!(
            metrics.contains("rafka_produce_validate_seconds_count"),
            "{metrics}"
        );
        assert!(metrics.trim_end().ends_with("# EOF"), "{metrics}");
        assert!(metrics.contains("rafka_process_open_fds"), "{metrics}");
        assert!(get(addr, "/health/live").await.starts_with("HTTP/1.1 200"));
        assert!(get(addr, "/health/ready").await.starts_with("HTTP/1.1 503"));
        assert!(get(addr, "/nothing").await.starts_with("HTTP/1.1 404"));
        server.abort();
    }
}
