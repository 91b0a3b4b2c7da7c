//! The built-in authorization server's routes on the HTTP port (see
//! `crate::auth::issuer`): `POST /oauth/token`, `GET /.well-known/jwks.json`,
//! `GET /.well-known/openid-configuration`.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use serde_json::json;

use crate::auth::issuer::{Issuer, OAuthError, TokenRequest};

/// Largest token request body.
const MAX_BODY: usize = 8 << 10;

/// The routes of `issuer`.
pub fn router(issuer: Arc<Issuer>) -> Router {
    Router::new()
        .route("/oauth/token", post(token))
        .route("/.well-known/jwks.json", get(jwks))
        .route("/.well-known/openid-configuration", get(discovery))
        .with_state(issuer)
}

/// An error answer; `basic`: the client authenticated with HTTP Basic, which alone
/// gets a `WWW-Authenticate` challenge with a 401 (RFC 6749 §5.2: a browser shows a
/// password prompt for one, and would hold a console's request on it).
fn error_for(e: OAuthError, basic: bool) -> Response {
    let status = StatusCode::from_u16(e.status).unwrap_or(StatusCode::BAD_REQUEST);
    let mut r = (status, Json(e.body())).into_response();
    r.headers_mut()
        .insert(header::CACHE_CONTROL, "no-store".parse().expect("static"));
    if e.status == 401 && basic {
        r.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            "Basic realm=\"rafka\"".parse().expect("static"),
        );
    }
    r
}

fn error(e: OAuthError) -> Response {
    error_for(e, false)
}

fn bad(description: &str) -> Response {
    error(OAuthError {
        status: 400,
        error: "invalid_request",
        description: description.into(),
    })
}

/// `application/x-www-form-urlencoded` decoding of one component.
fn decode(s: &str) -> Option<String> {
    let mut out = Vec::with_capacity(s.len());
    let mut bytes = s.bytes();
    while let Some(b) = bytes.next() {
        match b {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = [bytes.next()?, bytes.next()?];
                out.push(u8::from_str_radix(std::str::from_utf8(&hex).ok()?, 16).ok()?);
            }
            b => out.push(b),
        }
    }
    String::from_utf8(out).ok()
}

async fn token(State(issuer): State<Arc<Issuer>>, headers: HeaderMap, body: Bytes) -> Response {
    if body.len() > MAX_BODY {
        return bad("the request body is too large");
    }
    let form = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/x-www-form-urlencoded"));
    if !form {
        return bad("the body must be application/x-www-form-urlencoded");
    }
    let Ok(text) = std::str::from_utf8(&body) else {
        return bad("the body is not UTF-8");
    };
    let mut req = TokenRequest::default();
    for pair in text.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let (Some(k), Some(v)) = (decode(k), decode(v)) else {
            return bad("the body is not valid form encoding");
        };
        let slot = match k.as_str() {
            "grant_type" => &mut req.grant_type,
            "client_id" => &mut req.client_id,
            "client_secret" => &mut req.client_secret,
            "scope" => &mut req.scope,
            _ => continue,
        };
        if slot.is_some() {
            return bad(&format!("`{k}` is given twice"));
        }
        *slot = Some(v);
    }
    // HTTP Basic: `client_id:client_secret`, each form-encoded (RFC 6749 §2.3.1).
    let basic_used = headers.contains_key(header::AUTHORIZATION);
    if let Some(basic) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Basic "))
    {
        let pair = STANDARD
            .decode(basic.trim())
            .ok()
            .and_then(|b| String::from_utf8(b).ok());
        let Some((id, secret)) = pair.as_deref().and_then(|p| p.split_once(':')) else {
            return bad("the Basic authorization header is malformed");
        };
        if req.client_secret.is_some() {
            return bad("give the client's credentials once: form or Basic, not both");
        }
        req.client_id = decode(id);
        req.client_secret = decode(secret);
    }
    match issuer.token(req).await {
        Ok((token, ttl)) => {
            let mut r = Json(json!({
                "access_token": token,
                "token_type": "Bearer",
                "expires_in": ttl,
            }))
            .into_response();
            r.headers_mut()
                .insert(header::CACHE_CONTROL, "no-store".parse().expect("static"));
            r
        }
        Err(e) => error_for(e, basic_used),
    }
}

async fn jwks(State(issuer): State<Arc<Issuer>>) -> Response {
    Json(issuer.jwks()).into_response()
}

async fn discovery(State(issuer): State<Arc<Issuer>>, headers: HeaderMap) -> Response {
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("localhost");
    // The port speaks TLS exactly when the broker has it.
    let scheme = if issuer.tls() { "https" } else { "http" };
    Json(issuer.discovery(&format!("{scheme}://{host}"))).into_response()
}
