//! Token requests to an OAuth2 authorization server (RFC 6749 §4.4, client
//! credentials): one HTTP/1.1 POST per token, over TLS for an `https` URL.

use std::sync::Arc;
use std::time::Duration;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::rt::TokioIo;
use rustls::pki_types::pem::PemObject;

use crate::{ClientError, TlsConfig};

/// Longest a token request may take.
const TIMEOUT: Duration = Duration::from_secs(10);
/// Largest answer read.
const MAX_ANSWER: usize = 64 << 10;

/// Fetches tokens for one client.
pub(crate) struct Fetcher {
    uri: http::Uri,
    host: String,
    port: u16,
    tls: Option<tokio_rustls::TlsConnector>,
    basic: String,
}

fn invalid(m: impl Into<String>) -> ClientError {
    ClientError::InvalidArgument(m.into())
}

impl Fetcher {
    pub(crate) fn new(
        url: &str,
        client_id: &str,
        client_secret: &str,
        tls: Option<&TlsConfig>,
    ) -> Result<Self, ClientError> {
        let uri: http::Uri = url
            .parse()
            .map_err(|e| invalid(format!("token URL `{url}`: {e}")))?;
        let https = match uri.scheme_str() {
            Some("https") => true,
            Some("http") => false,
            _ => return Err(invalid(format!("token URL `{url}` is not http(s)://"))),
        };
        let host = uri
            .host()
            .ok_or_else(|| invalid(format!("token URL `{url}` has no host")))?
            .trim_matches(|c| c == '[' || c == ']')
            .to_string();
        let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
        let tls = match (https, tls) {
            (false, _) => None,
            (true, None) => {
                return Err(invalid(
                    "an https token URL needs the TLS settings (the CA to verify it with)",
                ))
            }
            (true, Some(t)) => {
                let mut roots = rustls::RootCertStore::empty();
                for cert in rustls::pki_types::CertificateDer::pem_slice_iter(&t.ca_pem) {
                    let cert = cert.map_err(|e| invalid(format!("TLS CA: {e}")))?;
                    roots
                        .add(cert)
                        .map_err(|e| invalid(format!("TLS CA: {e}")))?;
                }
                let provider = Arc::new(rustls::crypto::ring::default_provider());
                let config = rustls::ClientConfig::builder_with_provider(provider)
                    .with_safe_default_protocol_versions()
                    .map_err(|e| invalid(e.to_string()))?
                    .with_root_certificates(roots)
                    .with_no_client_auth();
                Some(tokio_rustls::TlsConnector::from(Arc::new(config)))
            }
        };
        let enc = |s: &str| -> String {
            s.bytes()
                .map(|b| match b {
                    b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                        (b as char).to_string()
                    }
                    _ => format!("%{b:02X}"),
                })
                .collect()
        };
        let basic = STANDARD.encode(format!("{}:{}", enc(client_id), enc(client_secret)));
        Ok(Self {
            uri,
            host,
            port,
            tls,
            basic,
        })
    }

    /// A new token and its lifetime.
    pub(crate) async fn fetch(&self) -> Result<(String, Duration), ClientError> {
        tokio::time::timeout(TIMEOUT, self.request())
            .await
            .map_err(|_| self.failed(format!("no answer within {TIMEOUT:?}")))?
    }

    fn failed(&self, reason: String) -> ClientError {
        ClientError::Connect {
            addresses: self.uri.to_string(),
            reason: format!("token request: {reason}"),
        }
    }

    async fn request(&self) -> Result<(String, Duration), ClientError> {
        let tcp = tokio::net::TcpStream::connect((self.host.as_str(), self.port))
            .await
            .map_err(|e| self.failed(e.to_string()))?;
        let body = Full::new(bytes::Bytes::from_static(b"grant_type=client_credentials"));
        let mut authorization = http::HeaderValue::try_from(format!("Basic {}", self.basic))
            .map_err(|e| invalid(e.to_string()))?;
        authorization.set_sensitive(true);
        let req = http::Request::post(self.uri.path())
            .header(http::header::HOST, format!("{}:{}", self.host, self.port))
            .header(
                http::header::CONTENT_TYPE,
                "application/x-www-form-urlencoded",
            )
            .header(http::header::AUTHORIZATION, authorization)
            .body(body)
            .map_err(|e| invalid(e.to_string()))?;
        let answer = match &self.tls {
            Some(connector) => {
                let name = rustls::pki_types::ServerName::try_from(self.host.clone())
                    .map_err(|e| invalid(format!("token URL host: {e}")))?;
                let stream = connector
                    .connect(name, tcp)
                    .await
                    .map_err(|e| self.failed(format!("TLS: {e}")))?;
                send(TokioIo::new(stream), req).await
            }
            None => send(TokioIo::new(tcp), req).await,
        }
        .map_err(|e| self.failed(e))?;
        let (status, body) = answer;
        let json: serde_json::Value = serde_json::from_slice(&body)
            .map_err(|_| self.failed(format!("HTTP {status}, not a JSON answer")))?;
        if status != 200 {
            let error = json
                .get("error")
                .and_then(|e| e.as_str())
                .unwrap_or("error");
            let text = json
                .get("error_description")
                .and_then(|e| e.as_str())
                .unwrap_or("");
            return Err(ClientError::Broker {
                code: tonic::Code::Unauthenticated,
                message: format!("the authorization server refused: {error}: {text}"),
            });
        }
        let token = json
            .get("access_token")
            .and_then(|t| t.as_str())
            .ok_or_else(|| self.failed("the answer has no access_token".into()))?;
        let ttl = json
            .get("expires_in")
            .and_then(|t| t.as_u64())
            .unwrap_or(300);
        Ok((token.to_string(), Duration::from_secs(ttl.max(1))))
    }
}

async fn send<IO>(
    io: TokioIo<IO>,
    req: http::Request<Full<bytes::Bytes>>,
) -> Result<(u16, bytes::Bytes), String>
where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake(io)
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    let res = sender.send_request(req).await.map_err(|e| e.to_string())?;
    let status = res.status().as_u16();
    let body = Limited::new(res.into_body(), MAX_ANSWER)
        .collect()
        .await
        .map_err(|e| e.to_string())?
        .to_bytes();
    Ok((status, body))
}
