//! The broker's HTTP port: `/metrics` (Prometheus text: the stage histograms, this
//! broker's replicas and partitions, requests by method and code, the process),
//! `/health/live` and `/health/ready`, and the web console (`/ui/`, `/api/v1/...`; see
//! `console`) where the broker's client address is known.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::registry::{Registry, Unit};
use tokio::net::TcpListener;

use super::Shared;
use crate::console::Console;
use crate::group::coordinator::GroupView;

/// The content type of the OpenMetrics text `prometheus-client` writes.
const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// What the routes need of the broker (none in unit tests of the port alone).
#[derive(Clone)]
struct HttpState {
    shared: Option<Arc<Shared>>,
    console: Option<Console>,
}

/// The HTTP routes: metrics, health and, for a broker, the console.
fn router(shared: Option<Arc<Shared>>) -> Router {
    let console = shared.as_ref().map(|s| {
        Console::new(
            s.node.clone(),
            s.address.clone(),
            own_tls(s),
            s.auth.is_some(),
        )
    });
    let base = Router::new()
        .route("/metrics", get(metrics))
        .route("/health/live", get(|| async { "ok\n" }))
        .route("/health/ready", get(ready))
        .with_state(HttpState {
            shared: shared.clone(),
            console: console.clone(),
        });
    let issuer = shared.as_ref().and_then(|s| {
        s.auth.as_ref().filter(|a| a.builtin_issuer()).map(|_| {
            crate::auth::issuer::Issuer::new(s.config.auth.clone(), s.node.clone(), s.tls.is_some())
        })
    });
    let mut routes = match console {
        Some(console) => base.merge(crate::console::router(console)),
        None => base,
    };
    if let Some(issuer) = issuer {
        routes = routes.merge(super::oauth::router(issuer));
    }
    routes.layer(axum::middleware::from_fn(crate::console::guard))
}

async fn metrics(State(state): State<HttpState>) -> impl IntoResponse {
    let mut registry = crate::metrics::registry();
    if let Some(shared) = &state.shared {
        shared.node.register_metrics(&mut registry);
        let groups = shared.groups.view(&shared.node).await;
        let wanted = groups
            .iter()
            .flat_map(|g| g.offsets.iter().map(|(t, p, _)| (t.clone(), *p)))
            .collect();
        let ends = match &state.console {
            Some(c) => c.partition_ends(&wanted).await,
            None => Default::default(),
        };
        register_groups(&mut registry, &groups, &ends);
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
async fn ready(State(state): State<HttpState>) -> impl IntoResponse {
    match state.shared {
        Some(s) if s.node.is_ready() => (StatusCode::OK, "ready\n"),
        Some(_) => (
            StatusCode::SERVICE_UNAVAILABLE,
            "not ready: metadata not known yet or replicas still opening\n",
        ),
        None => (StatusCode::SERVICE_UNAVAILABLE, "not ready: no broker\n"),
    }
}

/// Per group this broker coordinates: members, rebalances, and per partition the
/// committed offset and the lag behind `ends` (partitions whose end is not known now
/// have no lag sample).
fn register_groups(
    registry: &mut Registry,
    groups: &[GroupView],
    ends: &BTreeMap<(String, u32), u64>,
) {
    type Labels = Vec<(&'static str, String)>;
    let members = Family::<Labels, Gauge>::default();
    registry.register(
        "group_members",
        "Live members of a group coordinated here",
        members.clone(),
    );
    let rebalances = Family::<Labels, Counter>::default();
    registry.register(
        "group_rebalances",
        "Rebalances (new target assignments) of a group since this broker became its coordinator",
        rebalances.clone(),
    );
    let committed = Family::<Labels, Gauge>::default();
    registry.register(
        "group_committed_offset",
        "A group's committed offset of a partition",
        committed.clone(),
    );
    let lag = Family::<Labels, Gauge>::default();
    registry.register(
        "group_lag",
        "Records of a partition after the group's committed offset (high watermark - committed)",
        lag.clone(),
    );
    for g in groups {
        let labels = vec![("group", g.group.clone())];
        members.get_or_create(&labels).set(g.members as i64);
        rebalances.get_or_create(&labels).inc_by(g.rebalances);
        for (topic, partition, offset) in &g.offsets {
            let l = vec![
                ("group", g.group.clone()),
                ("topic", topic.clone()),
                ("partition", partition.to_string()),
            ];
            committed.get_or_create(&l).set(*offset as i64);
            if let Some(end) = ends.get(&(topic.clone(), *partition)) {
                lag.get_or_create(&l)
                    .set(end.saturating_sub(*offset) as i64);
            }
        }
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
    let methods = super::requests::methods();
    for m in &methods {
        for (code, n) in m.codes() {
            let labels = vec![
                ("service", m.service.clone()),
                ("method", m.method.clone()),
                ("code", code.to_string()),
            ];
            family.get_or_create(&labels).inc_by(n);
        }
    }
    let latency = methods
        .into_iter()
        .map(|m| {
            (
                vec![("service", m.service.clone()), ("method", m.method.clone())],
                m.latency.clone(),
            )
        })
        .collect();
    registry.register_with_unit(
        "request",
        "gRPC requests by service and method, from received to the answer's headers",
        Unit::Seconds,
        crate::metrics::Labeled(latency),
    );
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
/// Serves the HTTP port on `listener` (over TLS when the broker has it).
pub(crate) async fn serve(listener: TcpListener, shared: Option<Arc<Shared>>) {
    let tls = shared.as_ref().and_then(|s| s.tls.clone());
    let served = match tls {
        Some(tls) => match tls.http_listener(listener) {
            Ok(l) => axum::serve(l, router(shared)).await,
            Err(e) => Err(e),
        },
        None => axum::serve(listener, router(shared)).await,
    };
    if let Err(e) = served {
        tracing::warn!("http server stopped: {e}");
    }
}

/// TLS for the broker's own clients (the console): its CA, and its certificate as the
/// client certificate.
fn own_tls(shared: &Shared) -> Option<rafka_client::TlsConfig> {
    shared.tls.as_ref()?;
    let t = &shared.config.tls;
    match rafka_client::TlsConfig::from_files(&t.ca_file, Some(&t.cert_file), Some(&t.key_file)) {
        Ok(c) => Some(c),
        Err(e) => {
            tracing::error!("the console cannot reach the broker over TLS: {e}");
            None
        }
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
        let server = tokio::spawn(super::serve(listener, None));
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
