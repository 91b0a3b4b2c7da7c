//! How a client secures its connections: TLS with the cluster's CA, and optionally a
//! client certificate.

use std::path::Path;

use tonic::transport::{Certificate, ClientTlsConfig, Identity};

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
