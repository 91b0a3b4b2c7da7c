//! `rafka-bench run` against a secured cluster: TLS and OAuth2 client credentials.

/// TLS and credentials for a secured rafka cluster (docs/security.md).
#[derive(clap::Args, Clone, Default)]
pub struct Security {
    /// The brokers' CA (PEM): speak TLS.
    #[arg(long, env = "RAFKA_TLS_CA")]
    tls_ca: Option<std::path::PathBuf>,
    /// OAuth2 client id (with --client-secret and --token-url).
    #[arg(long, env = "RAFKA_CLIENT_ID")]
    client_id: Option<String>,
    /// The client's secret.
    #[arg(long, env = "RAFKA_CLIENT_SECRET", hide_env_values = true)]
    client_secret: Option<String>,
    /// The token endpoint.
    #[arg(long, env = "RAFKA_TOKEN_URL")]
    token_url: Option<String>,
}

impl Security {
    /// The client settings these give.
    pub fn client(
        &self,
    ) -> anyhow::Result<(
        Option<rafka_client::TlsConfig>,
        Option<rafka_client::Credentials>,
    )> {
        let tls = match &self.tls_ca {
            Some(ca) => Some(rafka_client::TlsConfig::from_files(ca, None, None)?),
            None => None,
        };
        let credentials = match (&self.client_id, &self.client_secret, &self.token_url) {
            (Some(id), Some(secret), Some(url)) => Some(rafka_client::Credentials::ClientSecret {
                token_url: url.clone(),
                client_id: id.clone(),
                client_secret: secret.clone(),
            }),
            (None, None, _) => None,
            _ => anyhow::bail!("--client-id needs --client-secret and --token-url"),
        };
        Ok((tls, credentials))
    }
}
