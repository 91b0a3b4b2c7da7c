//! `rafka start` (a broker) and `rafka dev-cluster` (N brokers in one process), until
//! SIGINT or SIGTERM.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;

use crate::config::BrokerConfig;
use crate::server::Server;

/// Options of `rafka start`; flags override the config file.
#[derive(clap::Args)]
pub struct StartArgs {
    /// TOML config file.
    #[arg(long, env = "RAFKA_CONFIG")]
    config: Option<PathBuf>,
    /// This broker's id.
    #[arg(long, env = "RAFKA_NODE_ID")]
    node_id: Option<u32>,
    /// Address to listen on (port 0 picks a free one; the bound address is printed).
    #[arg(long, env = "RAFKA_LISTEN")]
    listen: Option<SocketAddr>,
    /// Address of the HTTP port (`/metrics`, `/health/live`, `/health/ready`; port 0 picks a free one,
    /// printed). Without it (or `http_listen` in the config) there is none.
    #[arg(long, env = "RAFKA_HTTP_LISTEN")]
    http_listen: Option<SocketAddr>,
    /// Address of the Kafka-protocol listener (port 0 picks a free one, printed), or
    /// `off`. Default: the host of --listen, port 9093 beside the default 9092, else a
    /// free port.
    #[arg(long, env = "RAFKA_KAFKA_LISTEN")]
    kafka_listen: Option<String>,
    /// Data directory.
    #[arg(long, env = "RAFKA_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// The cluster's brokers, `id=host:port,...` (this one included): joins a cluster
    /// whose partitions replicate through Raft. Without it: a single broker.
    #[arg(long, env = "RAFKA_PEERS")]
    peers: Option<String>,
    /// Join a running cluster through these brokers, `host:port,...` (give this broker
    /// an id the cluster does not use); restarts need it no more.
    #[arg(long, env = "RAFKA_JOIN", conflicts_with = "peers")]
    join: Option<String>,
    /// Log lines as text (colours only on a terminal) or as JSON objects, one per line
    /// (for log shippers); `RUST_LOG` filters them.
    #[arg(long, env = "RAFKA_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    /// Count traffic, time stages and requests (`false`: the hot path skips them and
    /// `/metrics` shows only what is read when scraped; for measuring their cost).
    #[arg(long, env = "RAFKA_METRICS", default_value_t = true, action = clap::ArgAction::Set)]
    metrics: bool,
}

/// How log lines are written.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable text.
    Text,
    /// One JSON object per line: timestamp, level, target, fields, span.
    Json,
}

/// Options of `rafka dev-cluster`.
#[derive(clap::Args)]
pub struct DevClusterArgs {
    /// Number of brokers.
    #[arg(long, default_value_t = 3)]
    nodes: u32,
    /// Port of broker 1; broker N listens on this + N - 1 (0: free ports).
    #[arg(long, default_value_t = 0)]
    base_port: u16,
    /// Parent of the brokers' data directories (`node-1`, `node-2`, ...).
    #[arg(long, default_value = "./rafka-dev-cluster")]
    data_dir: PathBuf,
    /// TLS on every listener and peer link, with a throwaway CA and certificates made in
    /// `<data-dir>/tls` (the CA for clients: `tls/ca.pem`; a client certificate:
    /// `tls/client.pem`, `tls/client.key`).
    #[arg(long)]
    tls: bool,
    /// Bearer-token auth and ACLs, with the built-in authorization server on an HTTP
    /// port per broker and a super user `admin` whose credentials are printed.
    #[arg(long)]
    auth: bool,
}

/// openraft reports every vote and election at `info`, several lines each, and every
/// failed replication RPC (a follower down or still starting) at `warn`/`error`, a few
/// lines per group and retry: with thousands of groups that is most of a broker's work
/// during a restart. Brokers going down and coming back are logged once per change by
/// the node liveness instead (`rafka_broker::raft::liveness`).
const DEFAULT_LOG_FILTER: &str = "info,openraft=warn,openraft::replication=off,\
                                  openraft::engine::handler::replication_handler=off";

fn init_tracing(format: LogFormat) {
    use std::io::IsTerminal;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(DEFAULT_LOG_FILTER));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.with_ansi(std::io::stderr().is_terminal()).init(),
        LogFormat::Json => builder.json().with_current_span(true).init(),
    }
}

/// `rafka dev-cluster`: N brokers on loopback in this process, each with its own data
/// directory and port, replicating through Raft; prints the bootstrap list.
pub async fn dev_cluster(args: DevClusterArgs) -> anyhow::Result<()> {
    init_tracing(LogFormat::Text);
    if args.nodes == 0 || args.nodes > 9 {
        anyhow::bail!("--nodes must be 1 to 9, not {}", args.nodes);
    }
    let mut listeners = Vec::new();
    for i in 0..args.nodes {
        let port = match args.base_port {
            0 => 0,
            p => p
                .checked_add(i as u16)
                .context("--base-port leaves no room for the brokers")?,
        };
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let l = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("cannot listen on {addr}"))?;
        listeners.push(l);
    }
    let addresses: Vec<String> = listeners
        .iter()
        .map(|l| l.local_addr().map(|a| a.to_string()))
        .collect::<Result<_, _>>()?;
    let peers: Vec<String> = addresses
        .iter()
        .enumerate()
        .map(|(i, a)| format!("{}={a}", i + 1))
        .collect();
    let peers = peers.join(",");
    let tls_dir = args.data_dir.join("tls");
    let ca = match args.tls {
        true => Some(crate::tls::dev::DevCa::create(&tls_dir, "ca").map_err(anyhow::Error::msg)?),
        false => None,
    };
    let admin_secret = crate::auth::issuer::new_secret().map_err(anyhow::Error::msg)?;
    let auth = match args.auth {
        true => crate::auth::AuthSettings {
            enabled: true,
            builtin_issuer: true,
            super_users: vec!["admin".into()],
            clients: std::collections::BTreeMap::from([(
                "admin".to_string(),
                crate::auth::ConfigClient {
                    secret_hash: crate::auth::issuer::hash_secret(&admin_secret)
                        .map_err(anyhow::Error::msg)?,
                    roles: Vec::new(),
                },
            )]),
            ..Default::default()
        },
        false => Default::default(),
    };
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut tasks = Vec::new();
    let mut http_addresses = Vec::new();
    let mut kafka_addresses = Vec::new();
    for (i, listener) in listeners.into_iter().enumerate() {
        let tls = match &ca {
            Some(ca) => {
                let cert = ca
                    .issue(&tls_dir, &format!("node-{}", i + 1), &[])
                    .map_err(anyhow::Error::msg)?;
                crate::tls::TlsSettings {
                    cert_file: cert.cert_file,
                    key_file: cert.key_file,
                    ca_file: ca.cert_file.clone(),
                }
            }
            None => Default::default(),
        };
        let kafka = tokio::net::TcpListener::bind(("127.0.0.1", 0)).await?;
        kafka_addresses.push(kafka.local_addr()?.to_string());
        let config = BrokerConfig {
            node_id: i as u32 + 1,
            listen: listener.local_addr()?,
            kafka_listen: Some(kafka.local_addr()?.to_string()),
            data_dir: args.data_dir.join(format!("node-{}", i + 1)),
            peers: peers.clone(),
            tls,
            auth: auth.clone(),
            ..Default::default()
        };
        let server = Server::open(config).await?;
        server.serve_kafka(kafka);
        if args.auth {
            let http = tokio::net::TcpListener::bind(("127.0.0.1", 0)).await?;
            http_addresses.push(http.local_addr()?);
            server.serve_http(http);
        }
        let mut stop = stop_rx.clone();
        tasks.push(tokio::spawn(server.serve(listener, async move {
            let _ = stop.wait_for(|s| *s).await;
        })));
    }
    let shutdown = shutdown_signal();
    println!("rafka dev cluster of {} brokers", args.nodes);
    // Before the `bootstrap:` line, which scripts wait for (and may stop reading at).
    println!("kafka bootstrap: {}", kafka_addresses.join(","));
    println!("bootstrap: {}", addresses.join(","));
    if let Some(ca) = &ca {
        let client = ca
            .issue(&tls_dir, "client", &[])
            .map_err(anyhow::Error::msg)?;
        println!(
            "tls: --tls-ca {} (client certificate: --tls-cert {} --tls-key {})",
            ca.cert_file.display(),
            client.cert_file.display(),
            client.key_file.display()
        );
    }
    if let Some(http) = http_addresses.first() {
        let scheme = if args.tls { "https" } else { "http" };
        println!(
            "auth: --client-id admin --client-secret {admin_secret} --token-url {scheme}://{http}/oauth/token"
        );
    }
    shutdown.await;
    let _ = stop_tx.send(true);
    for t in tasks {
        t.await??;
    }
    Ok(())
}

/// `rafka start`: one broker until SIGINT or SIGTERM.
pub async fn run(args: StartArgs, tls: super::TlsArgs) -> anyhow::Result<()> {
    init_tracing(args.log_format);
    crate::metrics::set_enabled(args.metrics);
    let mut config = match &args.config {
        Some(path) => BrokerConfig::from_file(path).map_err(anyhow::Error::msg)?,
        None => BrokerConfig::default(),
    };
    if let Some(id) = args.node_id {
        config.node_id = id;
    }
    if let Some(listen) = args.listen {
        config.listen = listen;
    }
    if let Some(http) = args.http_listen {
        config.http_listen = Some(http);
    }
    if let Some(kafka) = args.kafka_listen {
        config.kafka_listen = Some(kafka);
    }
    if let Some(dir) = args.data_dir {
        config.data_dir = dir;
    }
    if let Some(peers) = args.peers {
        config.peers = peers;
    }
    if let Some(join) = args.join {
        config.join = join;
    }
    if let Some(ca) = tls.tls_ca {
        config.tls.ca_file = ca;
    }
    if let Some(cert) = tls.tls_cert {
        config.tls.cert_file = cert;
    }
    if let Some(key) = tls.tls_key {
        config.tls.key_file = key;
    }
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("cannot listen on {}", config.listen))?;
    let bound = listener.local_addr()?;
    // The address the broker registers for itself is the one it got (`--listen :0`).
    config.listen = bound;
    let http = match config.http_listen {
        Some(addr) => Some(
            tokio::net::TcpListener::bind(addr)
                .await
                .with_context(|| format!("cannot listen for HTTP on {addr}"))?,
        ),
        None => None,
    };
    let kafka = match config.kafka_listen_addr().map_err(anyhow::Error::msg)? {
        Some(addr) => {
            let l = tokio::net::TcpListener::bind(addr).await.with_context(|| {
                format!("cannot listen for Kafka clients on {addr} (--kafka-listen, or `off`)")
            })?;
            // Advertised as bound (`--kafka-listen :0`) unless the config says otherwise.
            config.kafka_listen = Some(l.local_addr()?.to_string());
            Some(l)
        }
        None => None,
    };
    let server = Server::open(config).await?;
    if let Some(http) = http {
        let addr = http.local_addr()?;
        server.serve_http(http);
        println!("rafka http listening on {addr}");
    }
    if let Some(kafka) = kafka {
        let addr = kafka.local_addr()?;
        server.serve_kafka(kafka);
        println!("rafka kafka listening on {addr}");
    }
    let shutdown = shutdown_signal();
    // Scripts and tests read this line to learn the port.
    println!("rafka broker listening on {bound}");
    server.serve(listener, shutdown).await?;
    Ok(())
}

/// Registers for SIGINT and SIGTERM now, so that one arriving before the broker serves
/// (right after it printed its address) stops it gracefully instead of killing it, and
/// returns a future that completes on either.
fn shutdown_signal() -> impl std::future::Future<Output = ()> {
    #[cfg(unix)]
    let signals = {
        use tokio::signal::unix::{signal, SignalKind};
        (
            signal(SignalKind::terminate()).ok(),
            signal(SignalKind::interrupt()).ok(),
        )
    };
    async move {
        #[cfg(unix)]
        {
            let (mut term, mut int) = signals;
            let term = async {
                match &mut term {
                    Some(s) => s.recv().await,
                    None => std::future::pending().await,
                }
            };
            let int = async {
                match &mut int {
                    Some(s) => s.recv().await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = term => {}
                _ = int => {}
            }
        }
        #[cfg(not(unix))]
        let _ = tokio::signal::ctrl_c().await;
        tracing::info!("shutdown requested");
    }
}
