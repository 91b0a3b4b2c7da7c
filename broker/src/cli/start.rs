//! `rafka start`: run a broker until SIGINT or SIGTERM.

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
    /// Data directory.
    #[arg(long, env = "RAFKA_DATA_DIR")]
    data_dir: Option<PathBuf>,
}

pub async fn run(args: StartArgs) -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
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
    if let Some(dir) = args.data_dir {
        config.data_dir = dir;
    }
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("cannot listen on {}", config.listen))?;
    let bound = listener.local_addr()?;
    let server = Server::open(config).await?;
    // Scripts and tests read this line to learn the port.
    println!("rafka broker listening on {bound}");
    server.serve(listener, shutdown_signal()).await?;
    Ok(())
}

/// Completes on SIGINT or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
    tracing::info!("shutdown requested");
}
