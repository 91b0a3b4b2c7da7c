//! The web console served by every broker on its HTTP port: `/ui/` (static assets
//! compiled into the binary, no build step) and the JSON API it calls, `/api/v1/...`.
//!
//! The API is a client of the cluster like any other: it reaches topics, groups and
//! records through `rafka_client` connected to this broker's own gRPC address, so the
//! console sees what a client sees (leaders, forwarding, validation, and the same
//! errors). Every page renders data as text nodes, never as markup, and the assets are
//! served with a content security policy that allows only their own scripts.

mod api;

use axum::extract::{DefaultBodyLimit, Path, Request};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use axum::Router;

pub use api::Console;

/// Longest request target (path and query) accepted; longer: 414.
const MAX_URI: usize = 4096;
/// Largest API request body (a topic's configs, a reset); larger: 413.
const MAX_BODY: usize = 64 << 10;

/// The console's routes: `/ui/...` and `/api/v1/...`.
pub fn router(console: Console) -> Router {
    Router::new()
        .route("/", get(|| async { Redirect::to("/ui/") }))
        .route("/ui", get(|| async { Redirect::to("/ui/") }))
        .route("/ui/", get(|| async { asset("index.html") }))
        .route(
            "/ui/{file}",
            get(|Path(file): Path<String>| async move { asset(&file) }),
        )
        .nest("/api/v1", api::routes(console))
        .layer(DefaultBodyLimit::max(MAX_BODY))
}

/// Refuses over-long request targets before any route sees them, and adds the headers
/// that keep a browser from running anything but the console's own scripts.
pub async fn guard(request: Request, next: Next) -> Response {
    let target = request
        .uri()
        .path_and_query()
        .map_or(0, |pq| pq.as_str().len());
    if target > MAX_URI {
        return (
            StatusCode::URI_TOO_LONG,
            format!("the request target is {target} bytes; at most {MAX_URI}\n"),
        )
            .into_response();
    }
    let mut response = next.run(request).await;
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
             connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        ),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    response
}

/// The console's files: a fixed set compiled in (nothing is read from disk, so no path
/// can reach outside it).
const ASSETS: &[(&str, &str, &str)] = &[
    (
        "index.html",
        "text/html; charset=utf-8",
        include_str!("assets/index.html"),
    ),
    (
        "app.js",
        "text/javascript; charset=utf-8",
        include_str!("assets/app.js"),
    ),
    (
        "style.css",
        "text/css; charset=utf-8",
        include_str!("assets/style.css"),
    ),
];

fn asset(name: &str) -> Response {
    match ASSETS.iter().find(|(n, _, _)| *n == name) {
        Some((_, mime, body)) => (
            [
                (header::CONTENT_TYPE, *mime),
                (header::CACHE_CONTROL, "no-cache"),
            ],
            *body,
        )
            .into_response(),
        None => (StatusCode::NOT_FOUND, "no such console file\n").into_response(),
    }
}
