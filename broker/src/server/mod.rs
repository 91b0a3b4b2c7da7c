//! The client-facing gRPC server: tonic services over the topic registry.
//!
//! - `broker_service` Produce, Fetch (long poll), Subscribe (server stream), ListOffsets,
//!   Metadata
//! - `admin_service`  CreateTopic, DeleteTopic, AlterTopicConfig
//! - `lock`           one broker per data directory
//!
//! [`Server::serve`] takes a bound listener and a shutdown future: on shutdown it stops
//! accepting, lets in-flight requests finish, stops background work and syncs every log.

mod admin_service;
mod broker_service;
mod lock;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use rafka_proto::v1::admin_server::AdminServer;
use rafka_proto::v1::broker_server::BrokerServer;
use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;

use crate::config::BrokerConfig;
use crate::error::BrokerError;
use crate::topics::TopicRegistry;

/// State shared by the services.
pub(crate) struct Shared {
    pub config: BrokerConfig,
    pub registry: Arc<TopicRegistry>,
    /// Address clients are told to use.
    pub address: String,
}

/// A single-node broker: its topics, opened from the data directory.
pub struct Server {
    config: BrokerConfig,
    registry: Arc<TopicRegistry>,
    _lock: lock::DirLock,
}

impl Server {
    /// Locks the data directory and opens (recovering) every topic in it.
    pub async fn open(config: BrokerConfig) -> Result<Self, BrokerError> {
        std::fs::create_dir_all(&config.data_dir).map_err(|e| {
            BrokerError::Internal(format!(
                "cannot create data dir {}: {e}",
                config.data_dir.display()
            ))
        })?;
        let lock = lock::DirLock::acquire(&config.data_dir)?;
        let defaults = config
            .topic_defaults()
            .map_err(|e| BrokerError::InvalidRequest(format!("broker config [log]: {e}")))?;
        let registry = Arc::new(TopicRegistry::open(&config.data_dir, defaults).await?);
        Ok(Self {
            config,
            registry,
            _lock: lock,
        })
    }

    /// The topics.
    pub fn registry(&self) -> &Arc<TopicRegistry> {
        &self.registry
    }

    /// Serves on `listener` until `shutdown` completes, then drains and syncs.
    pub async fn serve(
        self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()>,
    ) -> Result<(), BrokerError> {
        let local = listener
            .local_addr()
            .map_err(|e| BrokerError::Internal(format!("listener address: {e}")))?;
        let address = self
            .config
            .advertised_address
            .clone()
            .unwrap_or_else(|| local.to_string());
        let limit = self
            .config
            .max_request_bytes
            .saturating_mul(2)
            .max(16 << 20);
        let shared = Arc::new(Shared {
            config: self.config.clone(),
            registry: self.registry.clone(),
            address,
        });
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let background = tokio::spawn(run_background(shared.clone(), stop_rx));
        let incoming = TcpListenerStream::new(listener).map(|conn| {
            if let Ok(c) = &conn {
                let _ = c.set_nodelay(true);
            }
            conn
        });
        tracing::info!(%local, data_dir = %self.config.data_dir.display(), "rafka broker serving");
        let result = tonic::transport::Server::builder()
            .initial_stream_window_size(Some(8 << 20))
            .initial_connection_window_size(Some(32 << 20))
            .max_frame_size(Some(1 << 20))
            .add_service(
                BrokerServer::new(broker_service::BrokerService::new(shared.clone()))
                    .max_decoding_message_size(limit)
                    .max_encoding_message_size(usize::MAX),
            )
            .add_service(
                AdminServer::new(admin_service::AdminService::new(shared.clone()))
                    .max_decoding_message_size(limit),
            )
            .serve_with_incoming_shutdown(incoming, shutdown)
            .await;
        let _ = stop_tx.send(true);
        let _ = background.await;
        tracing::info!("rafka broker stopping: syncing logs");
        self.registry.flush_all().await?;
        result.map_err(|e| BrokerError::Internal(format!("server: {e}")))
    }
}

/// Retention and interval flushes until told to stop.
async fn run_background(shared: Arc<Shared>, mut stop: tokio::sync::watch::Receiver<bool>) {
    let mut retention = tokio::time::interval(shared.config.retention_check_interval());
    let mut flush = tokio::time::interval(Duration::from_millis(100));
    loop {
        tokio::select! {
            _ = stop.changed() => return,
            _ = retention.tick() => {
                for topic in shared.registry.list() {
                    for p in topic.partitions() {
                        match p.apply_retention().await {
                            Ok(0) => {}
                            Ok(n) => tracing::info!(topic = topic.name(), partition = p.id(), segments = n, "retention deleted segments"),
                            Err(e) => tracing::warn!("retention: {e}"),
                        }
                    }
                }
            }
            _ = flush.tick() => {
                for topic in shared.registry.list() {
                    for p in topic.partitions() {
                        if let Err(e) = p.with_log(|log| log.flush_if_due()).await {
                            tracing::warn!("flush: {e}");
                        }
                    }
                }
            }
        }
    }
}
