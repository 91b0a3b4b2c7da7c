//! The built-in authorization server: OAuth2's client-credentials grant (RFC 6749
//! §4.4) on the broker's HTTP port.
//!
//! - `POST /oauth/token` (form: `grant_type=client_credentials`, `client_id`,
//!   `client_secret`, or the id and secret in HTTP Basic): a token signed with the
//!   cluster's newest signing key; errors as RFC 6749 §5.2 JSON; a client id with
//!   [`MAX_FAILURES`] wrong secrets in a minute is refused for the rest of it.
//! - `GET /.well-known/jwks.json`: the public halves of the signing keys still valid.
//! - `GET /.well-known/openid-configuration`: OIDC discovery for the above.
//!
//! Clients (id, argon2 hash of the secret, roles) and signing keys live in the
//! metadata group, so every broker issues and verifies the same tokens; a rotation adds
//! a key that signs from then on, and older keys keep verifying until the tokens they
//! signed have expired. Clients may also be given in the config (`[auth.clients]`), the
//! way to create the first administrator.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use ring::rand::SecureRandom;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::jwt::{KeySet, Signer};
use super::AuthSettings;
use crate::cluster::node::ClusterNode;

/// Wrong secrets per client id and minute before its requests are refused.
pub const MAX_FAILURES: u32 = 5;
/// The window failures are counted in.
const FAILURE_WINDOW: Duration = Duration::from_secs(60);
/// Longest client id.
pub const MAX_CLIENT_ID: usize = 128;
/// Longest secret looked at.
const MAX_SECRET: usize = 512;

/// A client of the built-in authorization server.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OAuthClient {
    /// The argon2 hash of its secret (PHC string).
    pub secret_hash: String,
    /// Roles its tokens carry.
    #[serde(default)]
    pub roles: Vec<String>,
}

/// A signing key of the built-in authorization server, kept in the metadata group.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SigningKey {
    /// Its id (`kid`).
    pub kid: String,
    /// The ES256 private key, PKCS#8, base64url.
    pub pkcs8: String,
    /// When it was made (ms since the epoch).
    pub created_ms: i64,
}

impl SigningKey {
    /// A new ES256 key made at `now_ms`.
    pub fn generate(now_ms: i64) -> Result<Self, String> {
        let (_, pkcs8) = Signer::generate_es256()?;
        let mut id = [0u8; 6];
        ring::rand::SystemRandom::new()
            .fill(&mut id)
            .map_err(|_| "no randomness")?;
        Ok(Self {
            kid: format!("rafka-{}", URL_SAFE_NO_PAD.encode(id)),
            pkcs8: URL_SAFE_NO_PAD.encode(pkcs8),
            created_ms: now_ms,
        })
    }

    fn signer(&self) -> Result<Signer, String> {
        let der = URL_SAFE_NO_PAD
            .decode(&self.pkcs8)
            .map_err(|e| format!("signing key {}: {e}", self.kid))?;
        Signer::es256_from_pkcs8(&der)
    }
}

/// The public key set of `keys`.
pub fn key_set(keys: &[SigningKey]) -> KeySet {
    KeySet {
        keys: keys
            .iter()
            .filter_map(|k| k.signer().ok().map(|s| s.jwk(&k.kid)))
            .collect(),
    }
}

/// The argon2id hash of `secret` with a fresh salt.
pub fn hash_secret(secret: &str) -> Result<String, String> {
    let mut salt = [0u8; 16];
    ring::rand::SystemRandom::new()
        .fill(&mut salt)
        .map_err(|_| "no randomness")?;
    let salt = SaltString::encode_b64(&salt).map_err(|e| e.to_string())?;
    Argon2::default()
        .hash_password(secret.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| e.to_string())
}

/// A new random client secret (256 bits, base64url).
pub fn new_secret() -> Result<String, String> {
    let mut bytes = [0u8; 32];
    ring::rand::SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| "no randomness")?;
    Ok(URL_SAFE_NO_PAD.encode(bytes))
}

/// An RFC 6749 §5.2 error: its HTTP status, `error` and `error_description`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OAuthError {
    /// 400, 401 or 429.
    pub status: u16,
    /// `invalid_request`, `invalid_client`, `unsupported_grant_type`, ...
    pub error: &'static str,
    /// What was wrong.
    pub description: String,
}

impl OAuthError {
    fn new(status: u16, error: &'static str, description: impl Into<String>) -> Self {
        Self {
            status,
            error,
            description: description.into(),
        }
    }

    /// The JSON body.
    pub fn body(&self) -> Value {
        json!({ "error": self.error, "error_description": self.description })
    }
}

/// A token request's fields (from the form and the Basic header).
#[derive(Debug, Default)]
pub struct TokenRequest {
    /// `grant_type`.
    pub grant_type: Option<String>,
    /// `client_id`.
    pub client_id: Option<String>,
    /// `client_secret`.
    pub client_secret: Option<String>,
    /// `scope` (ignored: the client's roles are its scope).
    pub scope: Option<String>,
}

/// Issues tokens for the clients of the metadata and the config.
pub struct Issuer {
    settings: AuthSettings,
    node: Arc<ClusterNode>,
    failures: Mutex<HashMap<String, (Instant, u32)>>,
    tls: bool,
}

impl Issuer {
    /// The issuer of `node`'s cluster; `tls`: whether its port speaks TLS.
    pub fn new(settings: AuthSettings, node: Arc<ClusterNode>, tls: bool) -> Arc<Self> {
        Arc::new(Self {
            settings,
            node,
            failures: Mutex::default(),
            tls,
        })
    }

    /// Whether its port speaks TLS.
    pub fn tls(&self) -> bool {
        self.tls
    }

    /// The `iss` of its tokens.
    pub fn name(&self) -> &str {
        self.settings.issuer_name()
    }

    fn client(&self, id: &str) -> Option<OAuthClient> {
        self.node
            .with_state(|s| s.oauth_clients.get(id).cloned())
            .or_else(|| {
                self.settings.clients.get(id).map(|c| OAuthClient {
                    secret_hash: c.secret_hash.clone(),
                    roles: c.roles.clone(),
                })
            })
    }

    fn refused_for(&self, id: &str) -> Option<u64> {
        let failures = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        failures.get(id).and_then(|(since, n)| {
            let left = FAILURE_WINDOW.saturating_sub(since.elapsed());
            (*n >= MAX_FAILURES && !left.is_zero()).then(|| left.as_secs().max(1))
        })
    }

    fn failed(&self, id: &str) {
        let mut failures = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        if failures.len() > 100_000 {
            failures.clear();
        }
        let entry = failures
            .entry(id.to_string())
            .or_insert((Instant::now(), 0));
        if entry.0.elapsed() >= FAILURE_WINDOW {
            *entry = (Instant::now(), 0);
        }
        entry.1 += 1;
    }

    /// Answers a token request: the token and its lifetime in seconds.
    pub async fn token(&self, req: TokenRequest) -> Result<(String, u64), OAuthError> {
        match req.grant_type.as_deref() {
            Some("client_credentials") => {}
            Some(other) => {
                return Err(OAuthError::new(
                    400,
                    "unsupported_grant_type",
                    format!(
                        "grant_type `{}` is not supported (client_credentials is)",
                        crate::error::shown(other)
                    ),
                ))
            }
            None => {
                return Err(OAuthError::new(
                    400,
                    "invalid_request",
                    "grant_type is missing",
                ))
            }
        }
        let (Some(id), Some(secret)) = (req.client_id, req.client_secret) else {
            return Err(OAuthError::new(
                401,
                "invalid_client",
                "client_id and client_secret are required (form fields or HTTP Basic)",
            ));
        };
        if id.is_empty() || id.len() > MAX_CLIENT_ID || secret.len() > MAX_SECRET {
            return Err(OAuthError::new(
                400,
                "invalid_request",
                "client_id or client_secret has a bad length",
            ));
        }
        if let Some(secs) = self.refused_for(&id) {
            return Err(OAuthError::new(
                429,
                "invalid_client",
                format!("too many wrong secrets for this client; retry in {secs} s"),
            ));
        }
        let client = self.client(&id);
        let hash = client.as_ref().map(|c| c.secret_hash.clone());
        // argon2 takes tens of milliseconds: off the runtime's threads. An unknown id
        // is checked against a dummy hash, so it takes as long as a wrong secret.
        let ok = tokio::task::spawn_blocking(move || {
            let hash = hash.unwrap_or_else(|| DUMMY_HASH.to_string());
            PasswordHash::new(&hash)
                .map(|h| {
                    Argon2::default()
                        .verify_password(secret.as_bytes(), &h)
                        .is_ok()
                })
                .unwrap_or(false)
        })
        .await
        .unwrap_or(false);
        let Some(client) = client.filter(|_| ok) else {
            self.failed(&id);
            tracing::info!(client = %crate::error::shown(&id), "token refused: wrong client id or secret");
            return Err(OAuthError::new(
                401,
                "invalid_client",
                "unknown client or wrong secret",
            ));
        };
        let key = self
            .node
            .with_state(|s| s.signing_keys.last().cloned())
            .ok_or_else(|| {
                OAuthError::new(
                    503,
                    "temporarily_unavailable",
                    "the cluster has no signing key yet",
                )
            })?;
        let signer = key
            .signer()
            .map_err(|e| OAuthError::new(500, "server_error", e))?;
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let ttl = self.settings.token_ttl_secs.max(1);
        let mut claims = json!({
            "iss": self.name(), "sub": id, "iat": now, "nbf": now, "exp": now + ttl,
            "roles": client.roles,
        });
        if !self.settings.audience.is_empty() {
            claims["aud"] = json!(self.settings.audience);
        }
        let token = signer
            .sign(&key.kid, &claims)
            .map_err(|e| OAuthError::new(500, "server_error", e))?;
        tracing::info!(client = %id, "token issued");
        Ok((token, ttl))
    }

    /// The JWKS document of the signing keys.
    pub fn jwks(&self) -> Value {
        self.node.with_state(|s| key_set(&s.signing_keys)).to_json()
    }

    /// The OIDC discovery document, for a broker reached at `base` (`https://host:port`).
    pub fn discovery(&self, base: &str) -> Value {
        json!({
            "issuer": self.name(),
            "token_endpoint": format!("{base}/oauth/token"),
            "jwks_uri": format!("{base}/.well-known/jwks.json"),
            "grant_types_supported": ["client_credentials"],
            "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post"],
            "id_token_signing_alg_values_supported": ["ES256"],
        })
    }
}

/// A hash no secret matches in practice, checked for unknown client ids.
const DUMMY_HASH: &str =
    "$argon2id$v=19$m=19456,t=2,p=1$c29tZXNhbHRzb21lc2FsdA$Zm9vYmFyZm9vYmFyZm9vYmFyZm9vYmFyZm9vYmE";

/// Makes the cluster's first signing key if it has none: each broker waits its turn
/// (its id, in half seconds) so that one makes it, and tries again until the metadata
/// holds one.
pub async fn ensure_signing_key(node: Arc<ClusterNode>, ttl_secs: u64) {
    tokio::time::sleep(Duration::from_millis(500) * node.id().min(20)).await;
    loop {
        if node.with_state(|s| !s.signing_keys.is_empty()) {
            return;
        }
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64);
        match SigningKey::generate(now) {
            Ok(key) => {
                let cmd = crate::cluster::Command::AddSigningKey {
                    key,
                    keep_ms: (ttl_secs as i64).saturating_mul(1000),
                };
                match node.propose(&cmd).await {
                    Ok(()) => tracing::info!("made the cluster's first token signing key"),
                    Err(e) => tracing::debug!("making a token signing key: {e}"),
                }
            }
            Err(e) => tracing::error!("making a token signing key: {e}"),
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}
