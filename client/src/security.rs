//! How a client secures its connections: TLS with the cluster's CA (and optionally a
//! client certificate), and the bearer token every request carries.

use std::path::Path;
use std::sync::Arc;

use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity};

use crate::ClientError;

/// Largest certificate or key file read.
const MAX_PEM: u64 = 1 << 20;

/// TLS settings of a client (PEM contents).
#[derive(Clone, Default)]
pub struct TlsConfig {
    /// The CA the brokers' certificates are verified against (none: the system's
    /// trusted roots are not used, so one is needed).
    pub ca_pem: Vec<u8>,
    /// A client certificate chain and its key, for brokers that ask for one.
    pub identity: Option<(Vec<u8>, Vec<u8>)>,
    /// The name the brokers' certificates must carry (default: each broker's host).
    pub domain: Option<String>,
}

impl std::fmt::Debug for TlsConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the key.
        f.debug_struct("TlsConfig")
            .field("ca_pem_bytes", &self.ca_pem.len())
            .field("client_certificate", &self.identity.is_some())
            .field("domain", &self.domain)
            .finish()
    }
}

fn read(path: &Path, what: &str) -> Result<Vec<u8>, ClientError> {
    let fail =
        |e: std::io::Error| ClientError::InvalidArgument(format!("{what} {}: {e}", path.display()));
    let len = std::fs::metadata(path).map_err(fail)?.len();
    if len > MAX_PEM {
        return Err(ClientError::InvalidArgument(format!(
            "{what} {} is {len} bytes, more than a PEM file has",
            path.display()
        )));
    }
    std::fs::read(path).map_err(fail)
}

impl TlsConfig {
    /// Reads the CA and, if given, a client certificate and key from PEM files.
    pub fn from_files(
        ca: &Path,
        client_cert: Option<&Path>,
        client_key: Option<&Path>,
    ) -> Result<Self, ClientError> {
        let identity = match (client_cert, client_key) {
            (Some(c), Some(k)) => Some((
                read(c, "TLS client certificate")?,
                read(k, "TLS client key")?,
            )),
            (None, None) => None,
            _ => {
                return Err(ClientError::InvalidArgument(
                    "a TLS client certificate needs its key, and a key its certificate".into(),
                ))
            }
        };
        Ok(Self {
            ca_pem: read(ca, "TLS CA")?,
            identity,
            domain: None,
        })
    }

    pub(crate) fn tonic(&self) -> ClientTlsConfig {
        let mut c = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(&self.ca_pem));
        if let Some((cert, key)) = &self.identity {
            c = c.identity(Identity::from_pem(cert, key));
        }
        if let Some(d) = &self.domain {
            c = c.domain_name(d.clone());
        }
        c
    }
}

/// How a client proves who it is to brokers that check bearer tokens.
#[derive(Clone)]
#[non_exhaustive]
pub enum Credentials {
    /// A token obtained elsewhere (an OIDC issuer's access token), sent as it is.
    Token(String),
    /// OAuth2 client credentials: tokens are fetched from `token_url` (the built-in
    /// authorization server, `http(s)://broker:http-port/oauth/token`, or any OIDC
    /// issuer's token endpoint) and fetched again before they expire, so requests never
    /// go out with an expired one. An `https` URL is verified with the client's TLS CA.
    ClientSecret {
        /// The token endpoint.
        token_url: String,
        /// Client id.
        client_id: String,
        /// Client secret.
        client_secret: String,
    },
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the token or the secret.
        match self {
            Self::Token(_) => f.write_str("Credentials::Token(..)"),
            Self::ClientSecret {
                token_url,
                client_id,
                ..
            } => f
                .debug_struct("Credentials::ClientSecret")
                .field("token_url", token_url)
                .field("client_id", client_id)
                .finish_non_exhaustive(),
        }
    }
}

/// The `authorization` header every request carries.
pub(crate) struct TokenSource {
    header: std::sync::RwLock<Option<http::HeaderValue>>,
}

impl TokenSource {
    /// The source of `credentials`' tokens: for client credentials, the first token is
    /// fetched now (wrong credentials fail here) and a task fetches the next ones.
    pub(crate) async fn new(
        credentials: &Credentials,
        tls: Option<&TlsConfig>,
    ) -> Result<Arc<Self>, ClientError> {
        match credentials {
            Credentials::Token(t) => Ok(Arc::new(Self {
                header: std::sync::RwLock::new(Some(bearer(t)?)),
            })),
            Credentials::ClientSecret {
                token_url,
                client_id,
                client_secret,
            } => {
                let fetcher = crate::oauth::Fetcher::new(token_url, client_id, client_secret, tls)?;
                let (token, ttl) = fetcher.fetch().await?;
                let source = Arc::new(Self {
                    header: std::sync::RwLock::new(Some(bearer(&token)?)),
                });
                tokio::spawn(refresh(Arc::downgrade(&source), fetcher, ttl));
                Ok(source)
            }
        }
    }

    fn current(&self) -> Option<http::HeaderValue> {
        self.header
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

/// Fetches a new token when four fifths of the current one's life have passed (a
/// failure is retried every second while the current one is still good), until the
/// source is dropped.
async fn refresh(
    source: std::sync::Weak<TokenSource>,
    fetcher: crate::oauth::Fetcher,
    mut ttl: std::time::Duration,
) {
    loop {
        let wait = (ttl * 4 / 5).max(std::time::Duration::from_secs(1));
        tokio::time::sleep(wait).await;
        loop {
            let Some(source) = source.upgrade() else {
                return;
            };
            match fetcher
                .fetch()
                .await
                .and_then(|(t, life)| Ok((bearer(&t)?, life)))
            {
                Ok((header, life)) => {
                    *source.header.write().unwrap_or_else(|e| e.into_inner()) = Some(header);
                    ttl = life;
                    break;
                }
                Err(e) => {
                    tracing::warn!("fetching a new token: {e}");
                    drop(source);
                    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
                }
            }
        }
    }
}

fn bearer(token: &str) -> Result<http::HeaderValue, ClientError> {
    let mut v = http::HeaderValue::try_from(format!("Bearer {}", token.trim())).map_err(|_| {
        ClientError::InvalidArgument("a token must be visible ASCII characters".into())
    })?;
    v.set_sensitive(true);
    Ok(v)
}

/// A connection to one broker: its channel, and the credentials each request carries.
#[derive(Clone)]
pub(crate) struct Conn {
    channel: Channel,
    token: Option<Arc<TokenSource>>,
}

impl Conn {
    pub(crate) fn new(channel: Channel, token: Option<Arc<TokenSource>>) -> Self {
        Self { channel, token }
    }
}

impl tower_service::Service<http::Request<tonic::body::Body>> for Conn {
    type Response = <Channel as tower_service::Service<http::Request<tonic::body::Body>>>::Response;
    type Error = <Channel as tower_service::Service<http::Request<tonic::body::Body>>>::Error;
    type Future = <Channel as tower_service::Service<http::Request<tonic::body::Body>>>::Future;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        self.channel.poll_ready(cx)
    }

    fn call(&mut self, mut req: http::Request<tonic::body::Body>) -> Self::Future {
        if let Some(h) = self.token.as_ref().and_then(|t| t.current()) {
            req.headers_mut().insert(http::header::AUTHORIZATION, h);
        }
        self.channel.call(req)
    }
}
