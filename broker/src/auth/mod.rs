//! Authentication with OAuth2 bearer tokens: every client RPC carries
//! `authorization: Bearer <JWT>`, verified offline against the issuer's keys (a JWKS
//! file, re-read when it changes and when a token names a key it lacks); the principal
//! is the token's `sub`, its roles come from a configured claim.
//!
//! Verification happens once per request, not per record, and a verified token is
//! remembered until it expires (or the keys change), so a producer's requests cost a
//! map lookup each. Peer RPCs are not bearer-authenticated: peers prove themselves with
//! client certificates of the cluster CA (`crate::tls`). Tokens are never logged.

pub mod acl;
pub mod issuer;
pub mod jwt;

use std::collections::HashMap;
use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::{Arc, Mutex, RwLock};
use std::task::{Context, Poll};
use std::time::{Duration, Instant, SystemTime};

use serde::Deserialize;
use tower_layer::Layer;
use tower_service::Service;

use jwt::{KeySet, Validation};

/// `[auth]` of the broker config.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct AuthSettings {
    /// Refuse client requests without a valid token.
    pub enabled: bool,
    /// Expected `iss` of tokens (empty: any issuer whose keys are configured).
    pub issuer: String,
    /// A value tokens' `aud` must hold (empty: not checked).
    pub audience: String,
    /// The issuer's keys, a JWKS document (re-read when it changes).
    pub jwks_file: PathBuf,
    /// Claim holding a principal's roles (`roles`, `scope`, `groups`, or a dotted path
    /// such as `realm_access.roles`).
    pub roles_claim: String,
    /// Allowed clock difference for `exp` and `nbf`, in seconds.
    pub clock_skew_secs: u64,
    /// Principals (`sub`) allowed everything, internal topics included.
    pub super_users: Vec<String>,
    /// Run the built-in authorization server on the HTTP port (`/oauth/token`), its
    /// tokens verified by every broker without `jwks_file`.
    pub builtin_issuer: bool,
    /// Lifetime of the tokens the built-in server issues, in seconds.
    pub token_ttl_secs: u64,
    /// Clients of the built-in server given here rather than created with
    /// `rafka auth client create` (the way to the first administrator): client id →
    /// its secret's argon2 hash (`rafka auth hash-secret`) and roles.
    pub clients: std::collections::BTreeMap<String, ConfigClient>,
}

/// A client of the built-in authorization server in the config.
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct ConfigClient {
    /// The argon2 hash of its secret.
    pub secret_hash: String,
    /// Roles its tokens carry.
    pub roles: Vec<String>,
}

impl AuthSettings {
    /// The `iss` of the built-in server's tokens (and the one expected of tokens when
    /// `issuer` is not set and the built-in server runs).
    pub fn issuer_name(&self) -> &str {
        if self.issuer.is_empty() {
            "rafka"
        } else {
            &self.issuer
        }
    }
}

impl Default for AuthSettings {
    fn default() -> Self {
        Self {
            enabled: false,
            issuer: String::new(),
            audience: String::new(),
            jwks_file: PathBuf::new(),
            roles_claim: "roles".into(),
            clock_skew_secs: 60,
            super_users: Vec::new(),
            builtin_issuer: false,
            token_ttl_secs: 3600,
            clients: Default::default(),
        }
    }
}

/// Who made a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// The token's `sub`.
    pub name: String,
    /// Its roles.
    pub roles: Vec<String>,
    /// When its token expires (seconds since the epoch).
    pub expires: u64,
    /// Listed in `super_users`.
    pub super_user: bool,
}

/// Tokens remembered at most (then the memory starts over).
const CACHE_LIMIT: usize = 10_000;
/// Least time between two key reloads asked for by unknown `kid`s.
const REFRESH_EVERY: Duration = Duration::from_secs(5);
/// Largest key-set file read.
const MAX_JWKS: u64 = 1 << 20;

/// Verifies bearer tokens.
pub struct Authenticator {
    settings: AuthSettings,
    rules: Validation,
    keys: RwLock<Arc<KeySet>>,
    /// The built-in server's public keys (from the metadata).
    builtin: RwLock<Arc<KeySet>>,
    /// The key file's modification time at its last load.
    stamp: Mutex<Option<SystemTime>>,
    /// Last reload asked for by an unknown key id.
    refreshed: Mutex<Option<Instant>>,
    cache: Mutex<HashMap<String, Arc<Principal>>>,
}

impl std::fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authenticator")
            .field("settings", &self.settings)
            .finish()
    }
}

/// Seconds since the Unix epoch.
pub(crate) fn now() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn load_keys(path: &std::path::Path) -> Result<(KeySet, Option<SystemTime>), String> {
    let fail = |e: std::io::Error| format!("the key set {}: {e}", path.display());
    let meta = std::fs::metadata(path).map_err(fail)?;
    if meta.len() > MAX_JWKS {
        return Err(format!(
            "the key set {} is {} bytes, over {MAX_JWKS}",
            path.display(),
            meta.len()
        ));
    }
    let text = std::fs::read(path).map_err(fail)?;
    let keys = KeySet::parse(&text).map_err(|e| format!("the key set {}: {e}", path.display()))?;
    Ok((keys, meta.modified().ok()))
}

impl Authenticator {
    /// Loads the issuer's keys; `None` when auth is off.
    pub fn new(settings: AuthSettings) -> Result<Option<Arc<Self>>, String> {
        if !settings.enabled {
            return Ok(None);
        }
        let (keys, stamp) = if settings.jwks_file.as_os_str().is_empty() {
            if !settings.builtin_issuer {
                return Err(
                    "auth is enabled but neither jwks_file (an issuer's keys) nor \
                            builtin_issuer is set"
                        .into(),
                );
            }
            (KeySet::default(), None)
        } else {
            load_keys(&settings.jwks_file)?
        };
        let issuer = match (settings.issuer.is_empty(), settings.builtin_issuer) {
            (true, true) => settings.issuer_name().to_string(),
            _ => settings.issuer.clone(),
        };
        let rules = Validation {
            issuer,
            audience: settings.audience.clone(),
            skew: Duration::from_secs(settings.clock_skew_secs),
            roles_claim: settings.roles_claim.clone(),
        };
        Ok(Some(Arc::new(Self {
            settings,
            rules,
            keys: RwLock::new(Arc::new(keys)),
            builtin: RwLock::default(),
            stamp: Mutex::new(stamp),
            refreshed: Mutex::new(None),
            cache: Mutex::default(),
        })))
    }

    /// Reads the key file again if it changed (or if `force`); the remembered tokens
    /// are forgotten when the keys changed (a removed key's tokens stop working).
    pub fn reload(&self, force: bool) -> Result<bool, String> {
        let path = &self.settings.jwks_file;
        if path.as_os_str().is_empty() {
            return Ok(false);
        }
        let now_stamp = std::fs::metadata(path).and_then(|m| m.modified()).ok();
        let mut stamp = self.stamp.lock().unwrap_or_else(|e| e.into_inner());
        if !force && *stamp == now_stamp {
            return Ok(false);
        }
        let (keys, new_stamp) = match load_keys(path) {
            Ok(k) => k,
            Err(e) => {
                // Not tried again until the file changes.
                *stamp = now_stamp;
                return Err(e);
            }
        };
        *stamp = new_stamp;
        let mut current = self.keys.write().unwrap_or_else(|e| e.into_inner());
        if **current == keys {
            return Ok(false);
        }
        *current = Arc::new(keys);
        self.cache.lock().unwrap_or_else(|e| e.into_inner()).clear();
        Ok(true)
    }

    /// Re-reads the key file when it changes, until dropped.
    pub async fn watch(self: Arc<Self>) {
        let mut tick = tokio::time::interval(crate::tls::WATCH_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            match self.reload(false) {
                Ok(true) => tracing::info!(
                    file = %self.settings.jwks_file.display(),
                    "token signing keys loaded again"
                ),
                Ok(false) => {}
                Err(e) => {
                    tracing::error!("token signing keys not reloaded, keeping the old ones: {e}")
                }
            }
        }
    }

    /// Takes the built-in server's keys (as the metadata has them now); the remembered
    /// tokens are forgotten when they changed.
    pub fn set_builtin(&self, keys: KeySet) {
        let mut current = self.builtin.write().unwrap_or_else(|e| e.into_inner());
        if **current != keys {
            *current = Arc::new(keys);
            self.cache.lock().unwrap_or_else(|e| e.into_inner()).clear();
        }
    }

    /// The keys tokens are verified with: the issuer's file and the built-in server's.
    fn all_keys(&self) -> Arc<KeySet> {
        let file = self.keys.read().unwrap_or_else(|e| e.into_inner()).clone();
        let builtin = self
            .builtin
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        if builtin.keys.is_empty() {
            return file;
        }
        if file.keys.is_empty() {
            return builtin;
        }
        Arc::new(KeySet {
            keys: file.keys.iter().chain(&builtin.keys).cloned().collect(),
        })
    }

    /// Whether the built-in authorization server runs.
    pub fn builtin_issuer(&self) -> bool {
        self.settings.builtin_issuer
    }

    /// The principal of an `authorization` header's bearer token.
    pub fn authenticate(&self, header: Option<&[u8]>) -> Result<Arc<Principal>, String> {
        let header = header.ok_or("no bearer token (an `authorization: Bearer <token>` header)")?;
        let token = std::str::from_utf8(header)
            .ok()
            .and_then(|h| {
                h.strip_prefix("Bearer ")
                    .or_else(|| h.strip_prefix("bearer "))
            })
            .map(str::trim)
            .ok_or("the authorization header is not `Bearer <token>`")?;
        let now = now();
        if let Some(p) = self
            .cache
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(token)
        {
            if now <= p.expires.saturating_add(self.rules.skew.as_secs()) {
                return Ok(p.clone());
            }
        }
        let keys = self.all_keys();
        let verified = match jwt::verify(token, &keys, &self.rules, now) {
            Err(jwt::TokenError::UnknownKey(kid)) if self.may_refresh() => {
                // A key the issuer added since the last load: read the keys once more.
                if let Err(e) = self.reload(true) {
                    tracing::warn!("token signing keys: {e}");
                }
                let keys = self.all_keys();
                jwt::verify(token, &keys, &self.rules, now).map_err(|e| {
                    tracing::debug!(kid, "token refused: {e}");
                    e.to_string()
                })?
            }
            Err(e) => return Err(e.to_string()),
            Ok(v) => v,
        };
        let principal = Arc::new(Principal {
            super_user: self.settings.super_users.contains(&verified.subject),
            name: verified.subject,
            roles: verified.roles,
            expires: verified.expires,
        });
        let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        if cache.len() >= CACHE_LIMIT {
            cache.clear();
        }
        cache.insert(token.to_string(), principal.clone());
        Ok(principal)
    }

    fn may_refresh(&self) -> bool {
        let mut last = self.refreshed.lock().unwrap_or_else(|e| e.into_inner());
        if last.is_some_and(|t| t.elapsed() < REFRESH_EVERY) {
            return false;
        }
        *last = Some(Instant::now());
        true
    }
}

/// The ACLs in force on this broker: the metadata's, copied when they change (a
/// request's check reads them without touching the metadata).
#[derive(Default)]
pub struct AclCache {
    current: RwLock<Arc<Vec<acl::AclEntry>>>,
}

impl AclCache {
    /// Follows the metadata of `node` until dropped: every applied change that touched
    /// the ACLs replaces the copy (so a change is in force as soon as this broker
    /// applied it).
    pub async fn follow(
        self: Arc<Self>,
        node: Arc<crate::cluster::node::ClusterNode>,
        auth: Arc<Authenticator>,
    ) {
        let mut changes = node.watch_state();
        loop {
            if auth.builtin_issuer() {
                auth.set_builtin(node.with_state(|s| issuer::key_set(&s.signing_keys)));
            }
            let same = {
                let current = self.entries();
                node.with_state(|s| s.acls == *current)
            };
            if !same {
                let fresh = node.with_state(|s| s.acls.clone());
                *self.current.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(fresh);
            }
            if changes.changed().await.is_err() {
                return;
            }
        }
    }

    /// The entries now.
    pub fn entries(&self) -> Arc<Vec<acl::AclEntry>> {
        self.current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Whether `principal` may write some topic (what a producer id is for: Kafka's
    /// InitProducerId asks the same, or IdempotentWrite on the cluster).
    pub fn may_write_some_topic(&self, principal: &Principal) -> Result<(), String> {
        if principal.super_user || acl::may_write_some_topic(&self.entries(), principal) {
            return Ok(());
        }
        Err(format!(
            "`{}` may not write any topic: an idempotent producer's id needs write on one",
            principal.name
        ))
    }

    /// Whether `principal` may do `op` on the resource; the refusal names both.
    pub fn authorize(
        &self,
        principal: &Principal,
        op: acl::Operation,
        ty: acl::ResourceType,
        name: &str,
    ) -> Result<(), String> {
        if principal.super_user {
            return Ok(());
        }
        acl::check(
            &self.entries(),
            &principal.name,
            &principal.roles,
            op,
            ty,
            name,
        )
    }
}

/// Authenticates every client RPC (the peer service excepted) and puts its
/// [`Principal`] in the request's extensions; a request without a valid token is
/// answered UNAUTHENTICATED with the reason.
#[derive(Clone, Debug)]
pub struct AuthLayer {
    auth: Option<Arc<Authenticator>>,
}

impl AuthLayer {
    /// A layer checking tokens with `auth` (none: every request passes).
    pub fn new(auth: Option<Arc<Authenticator>>) -> Self {
        Self { auth }
    }
}

impl<S> Layer<S> for AuthLayer {
    type Service = AuthService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        AuthService {
            inner,
            auth: self.auth.clone(),
        }
    }
}

/// See [`AuthLayer`].
#[derive(Clone, Debug)]
pub struct AuthService<S> {
    inner: S,
    auth: Option<Arc<Authenticator>>,
}

impl<S, B> Service<http::Request<B>> for AuthService<S>
where
    S: Service<http::Request<B>, Response = http::Response<tonic::body::Body>>,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: http::Request<B>) -> Self::Future {
        if let Some(auth) = &self.auth {
            if !crate::tls::is_peer_path(req.uri().path()) {
                let header = req
                    .headers()
                    .get(http::header::AUTHORIZATION)
                    .map(|h| h.as_bytes());
                match auth.authenticate(header) {
                    Ok(p) => {
                        req.extensions_mut().insert(p);
                    }
                    Err(reason) => {
                        tracing::info!(path = req.uri().path(), "request refused: {reason}");
                        let status = tonic::Status::unauthenticated(reason);
                        return Box::pin(std::future::ready(Ok(status.into_http())));
                    }
                }
            }
        }
        Box::pin(self.inner.call(req))
    }
}
