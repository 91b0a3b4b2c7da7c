//! TLS on the broker's listener and on its links to its peers (rustls, ring).
//!
//! One listener serves clients and peers. With `[tls]` configured it speaks only TLS:
//! the broker shows its certificate, asks every caller for a client certificate and
//! verifies one if given against the cluster CA. Clients need none; the peer service
//! (Raft, joins) is refused to a caller without one ([`PeerGate`]), so a process
//! without a certificate of the cluster CA can neither join nor vote nor replicate.
//! The broker dials its peers with its own certificate as the client certificate.
//!
//! Certificates are read again on SIGHUP and when a file changes (looked at every
//! [`WATCH_EVERY`]): new connections get the new ones, established ones keep theirs.
//! Files that do not load leave the broker on the old ones, with an error logged.

pub mod dev;

use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime};

use futures::Stream;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use serde::Deserialize;
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::server::TlsStream;
use tonic::transport::server::{TcpConnectInfo, TlsConnectInfo};
use tonic::transport::{Certificate, ClientTlsConfig, Identity};
use tower_layer::Layer;
use tower_service::Service;

/// How often the certificate files are looked at for changes.
pub const WATCH_EVERY: Duration = Duration::from_secs(2);
/// Longest a TLS handshake may take before the connection is dropped.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest certificate or key file read.
const MAX_PEM: u64 = 1 << 20;

/// `[tls]` of the broker config: PEM files.
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct TlsSettings {
    /// This broker's certificate chain (leaf first); it serves clients and dials peers
    /// with it, so it needs both the server and the client usage.
    pub cert_file: PathBuf,
    /// The private key of `cert_file` (PKCS#8, PKCS#1 or SEC1).
    pub key_file: PathBuf,
    /// The cluster CA: peers' certificates (and clients' ones, if they show one) are
    /// verified against it, and peers' server certificates too.
    pub ca_file: PathBuf,
}

impl TlsSettings {
    /// Whether any file is set (then all must be).
    pub fn is_set(&self) -> bool {
        !self.cert_file.as_os_str().is_empty()
            || !self.key_file.as_os_str().is_empty()
            || !self.ca_file.as_os_str().is_empty()
    }
}

/// What one load of the files made.
struct Material {
    server: Arc<rustls::ServerConfig>,
    /// The same for the HTTP port (HTTP/1.1 by ALPN, no client certificate asked).
    http: Arc<rustls::ServerConfig>,
    client: ClientTlsConfig,
    stamps: Vec<Option<SystemTime>>,
}

/// The broker's TLS state: the files' current contents as server and client configs.
pub struct Tls {
    settings: TlsSettings,
    current: RwLock<Arc<Material>>,
    /// Bumped on every reload (peer channels dialled before it are dropped).
    version: AtomicU64,
    /// The files' stamps when they last failed to load (not tried again, nor logged
    /// again, until they change).
    failed: std::sync::Mutex<Vec<Option<SystemTime>>>,
}

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tls")
            .field("settings", &self.settings)
            .finish()
    }
}

impl Tls {
    /// Loads the files; an error names the file and what is wrong with it.
    pub fn load(settings: TlsSettings) -> Result<Arc<Self>, String> {
        for (what, path) in [
            ("cert_file", &settings.cert_file),
            ("key_file", &settings.key_file),
            ("ca_file", &settings.ca_file),
        ] {
            if path.as_os_str().is_empty() {
                return Err(format!(
                    "TLS needs cert_file, key_file and ca_file; {what} is missing"
                ));
            }
        }
        let material = build(&settings)?;
        Ok(Arc::new(Self {
            settings,
            current: RwLock::new(Arc::new(material)),
            version: AtomicU64::new(0),
            failed: Default::default(),
        }))
    }

    fn material(&self) -> Arc<Material> {
        self.current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The configuration peers are dialled with, and its version.
    pub fn client(&self) -> (u64, ClientTlsConfig) {
        let m = self.material();
        (self.version.load(Ordering::Acquire), m.client.clone())
    }

    /// The current version (changes when the files are loaded again).
    pub fn version(&self) -> u64 {
        self.version.load(Ordering::Acquire)
    }

    /// Loads the files again if they changed since the last load (or if `force`);
    /// returns whether the configs changed.
    pub fn reload(&self, force: bool) -> Result<bool, String> {
        let old = self.material();
        let now = stamps(&self.settings);
        let mut failed = self.failed.lock().unwrap_or_else(|e| e.into_inner());
        if !force && (now == old.stamps || *failed == now) {
            return Ok(false);
        }
        let fresh = match build(&self.settings) {
            Ok(f) => f,
            Err(e) => {
                *failed = now;
                return Err(e);
            }
        };
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(fresh);
        self.version.fetch_add(1, Ordering::AcqRel);
        Ok(true)
    }

    /// Reloads on SIGHUP and when a file changes, until the future is dropped.
    pub async fn watch(self: Arc<Self>) {
        #[cfg(unix)]
        let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
        let mut tick = tokio::time::interval(WATCH_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            #[cfg(unix)]
            let force = tokio::select! {
                _ = tick.tick() => false,
                Some(()) = async {
                    match &mut hup {
                        Some(h) => h.recv().await,
                        None => std::future::pending().await,
                    }
                } => true,
            };
            #[cfg(not(unix))]
            let force = {
                tick.tick().await;
                false
            };
            match self.reload(force) {
                Ok(true) => tracing::info!(
                    cert = %self.settings.cert_file.display(),
                    "TLS certificates loaded again: new connections use them"
                ),
                Ok(false) => {}
                Err(e) => {
                    tracing::error!("TLS certificates not reloaded, keeping the old ones: {e}")
                }
            }
        }
    }

    /// Accepts connections on `listener` and yields those whose TLS handshake
    /// succeeded; handshakes run beside each other, and one that fails or stalls is
    /// logged (debug) and dropped without holding up the others.
    pub fn incoming(
        self: Arc<Self>,
        listener: TcpListener,
    ) -> impl Stream<Item = Result<TlsStream<TcpStream>, std::io::Error>> + Send + 'static {
        self.accepting(listener, false)
    }

    /// The HTTP port's listener over TLS (HTTP/1.1), for axum.
    pub fn http_listener(self: Arc<Self>, listener: TcpListener) -> std::io::Result<HttpsListener> {
        let local = listener.local_addr()?;
        Ok(HttpsListener {
            incoming: Box::pin(self.accepting(listener, true)),
            local,
        })
    }

    fn accepting(
        self: Arc<Self>,
        listener: TcpListener,
        http: bool,
    ) -> impl Stream<Item = Result<TlsStream<TcpStream>, std::io::Error>> + Send + 'static {
        let (tx, rx) = tokio::sync::mpsc::channel(64);
        tokio::spawn(async move {
            loop {
                let (tcp, from) = tokio::select! {
                    _ = tx.closed() => return,
                    accepted = listener.accept() => match accepted {
                        Ok(a) => a,
                        Err(e) => {
                            // Out of descriptors and the like: back off, keep serving.
                            tracing::warn!("accept: {e}");
                            tokio::time::sleep(Duration::from_millis(50)).await;
                            continue;
                        }
                    },
                };
                let _ = tcp.set_nodelay(true);
                let m = self.material();
                let config = if http {
                    m.http.clone()
                } else {
                    m.server.clone()
                };
                let acceptor = tokio_rustls::TlsAcceptor::from(config);
                let tx = tx.clone();
                tokio::spawn(async move {
                    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                        Ok(Ok(stream)) => {
                            let _ = tx.send(Ok(stream)).await;
                        }
                        Ok(Err(e)) => tracing::debug!(%from, "TLS handshake failed: {e}"),
                        Err(_) => tracing::debug!(%from, "TLS handshake timed out"),
                    }
                });
            }
        });
        tokio_stream::wrappers::ReceiverStream::new(rx)
    }
}

/// The HTTP port's connections over TLS (see [`Tls::http_listener`]).
pub struct HttpsListener {
    incoming: Pin<Box<dyn Stream<Item = Result<TlsStream<TcpStream>, std::io::Error>> + Send>>,
    local: std::net::SocketAddr,
}

impl axum::serve::Listener for HttpsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = std::net::SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        use futures::StreamExt;
        loop {
            match self.incoming.next().await {
                Some(Ok(s)) => {
                    let from = s.get_ref().0.peer_addr().unwrap_or(self.local);
                    return (s, from);
                }
                Some(Err(_)) => continue,
                // The accept loop ended (the runtime is stopping): accept nothing more.
                None => std::future::pending().await,
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(self.local)
    }
}

/// The files' modification times (what a change is detected by).
fn stamps(s: &TlsSettings) -> Vec<Option<SystemTime>> {
    [&s.cert_file, &s.key_file, &s.ca_file]
        .iter()
        .map(|p| std::fs::metadata(p).and_then(|m| m.modified()).ok())
        .collect()
}

fn read(path: &Path, what: &str) -> Result<Vec<u8>, String> {
    let fail = |e: std::io::Error| format!("cannot read the TLS {what} {}: {e}", path.display());
    let len = std::fs::metadata(path).map_err(fail)?.len();
    if len > MAX_PEM {
        return Err(format!(
            "the TLS {what} {} is {len} bytes, over the {MAX_PEM} a PEM file may have",
            path.display()
        ));
    }
    std::fs::read(path).map_err(fail)
}

fn certs(pem: &[u8], path: &Path, what: &str) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs: Vec<_> = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<_, _>>()
        .map_err(|e| format!("the TLS {what} {}: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!(
            "the TLS {what} {} holds no PEM certificate",
            path.display()
        ));
    }
    Ok(certs)
}

/// ring's suites with AES-128-GCM first: the broker (which picks, over the caller's
/// order) encrypts every produced and replicated byte, and AES-128 costs less than
/// AES-256 per byte while no weaker in any way that matters here.
fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    use rustls::crypto::ring::cipher_suite as cs;
    let mut p = rustls::crypto::ring::default_provider();
    let first = [
        cs::TLS13_AES_128_GCM_SHA256,
        cs::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
        cs::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
    ];
    p.cipher_suites.sort_by_key(|s| !first.contains(s));
    Arc::new(p)
}

/// Reads the files and makes the server and client configs of them.
fn build(s: &TlsSettings) -> Result<Material, String> {
    let stamps = stamps(s);
    let cert_pem = read(&s.cert_file, "certificate")?;
    let key_pem = read(&s.key_file, "key")?;
    let ca_pem = read(&s.ca_file, "CA")?;
    let chain = certs(&cert_pem, &s.cert_file, "certificate")?;
    let key = PrivateKeyDer::from_pem_slice(&key_pem)
        .map_err(|e| format!("the TLS key {}: {e}", s.key_file.display()))?;
    let mut roots = rustls::RootCertStore::empty();
    for ca in certs(&ca_pem, &s.ca_file, "CA")? {
        roots
            .add(ca)
            .map_err(|e| format!("the TLS CA {}: {e}", s.ca_file.display()))?;
    }
    let verifier =
        rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider())
            .allow_unauthenticated()
            .build()
            .map_err(|e| format!("the TLS CA {}: {e}", s.ca_file.display()))?;
    let mut server = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)
        .map_err(|e| {
            format!(
                "the TLS certificate {} and key {}: {e}",
                s.cert_file.display(),
                s.key_file.display()
            )
        })?;
    server.alpn_protocols = vec![b"h2".to_vec()];
    server.ignore_client_order = true;
    let mut http = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_no_client_auth()
        .with_single_cert(certs(&cert_pem, &s.cert_file, "certificate")?, {
            PrivateKeyDer::from_pem_slice(&key_pem)
                .map_err(|e| format!("the TLS key {}: {e}", s.key_file.display()))?
        })
        .map_err(|e| format!("the TLS certificate {}: {e}", s.cert_file.display()))?;
    http.alpn_protocols = vec![b"http/1.1".to_vec()];
    http.ignore_client_order = true;
    let client = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(&ca_pem))
        .identity(Identity::from_pem(&cert_pem, &key_pem));
    Ok(Material {
        server: Arc::new(server),
        http: Arc::new(http),
        client,
        stamps,
    })
}

/// Refuses the peer service to callers that showed no client certificate of the
/// cluster CA (rustls verified any certificate shown; none is the case left). Enforced
/// only with TLS on: a plaintext cluster trusts its network.
#[derive(Clone, Copy, Debug)]
pub struct PeerGate {
    enforce: bool,
}

impl PeerGate {
    /// A gate that refuses uncertified peer calls if `enforce`.
    pub fn new(enforce: bool) -> Self {
        Self { enforce }
    }
}

impl<S> Layer<S> for PeerGate {
    type Service = PeerGateService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        PeerGateService {
            inner,
            enforce: self.enforce,
        }
    }
}

/// See [`PeerGate`].
#[derive(Clone, Debug)]
pub struct PeerGateService<S> {
    inner: S,
    enforce: bool,
}

/// gRPC path prefix of the peer service.
const PEER_PATH: &str = "/rafka.peer.";

/// Whether `path` is a call brokers make to each other: the peer service, and the
/// admin call a replica repairs a damaged segment with. Such calls need a client
/// certificate of the cluster CA (with TLS on) and no bearer token.
pub(crate) fn is_peer_path(path: &str) -> bool {
    path.starts_with(PEER_PATH) || path == "/rafka.v1.Admin/ReadReplicaLog"
}

impl<S, B> Service<http::Request<B>> for PeerGateService<S>
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

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        if self.enforce && is_peer_path(req.uri().path()) {
            let certified = req
                .extensions()
                .get::<TlsConnectInfo<TcpConnectInfo>>()
                .and_then(|i| i.peer_certs())
                .is_some_and(|c| !c.is_empty());
            if !certified {
                let from = req
                    .extensions()
                    .get::<TlsConnectInfo<TcpConnectInfo>>()
                    .and_then(|i| i.get_ref().remote_addr());
                tracing::warn!(
                    ?from,
                    path = req.uri().path(),
                    "peer call without a client certificate refused"
                );
                let status = tonic::Status::unauthenticated(
                    "the peer service needs a client certificate signed by the cluster CA",
                );
                return Box::pin(std::future::ready(Ok(status.into_http())));
            }
        }
        Box::pin(self.inner.call(req))
    }
}
