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
mod backend;
mod broker_service;
mod group_service;
mod lock;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use rafka_proto::v1::admin_server::AdminServer;
use rafka_proto::v1::broker_server::BrokerServer;
use rafka_proto::v1::group_server;
use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;

use crate::cluster::node::ClusterNode;
use crate::config::BrokerConfig;
use crate::error::BrokerError;
use crate::topics::TopicRegistry;
use backend::Backend;
use rafka_proto::peer::raft_peer_server::RaftPeerServer;

/// State shared by the services.
pub(crate) struct Shared {
    pub config: BrokerConfig,
    pub backend: Backend,
    /// Address clients are told to use.
    pub address: String,
}

/// A broker: a single node's topics, or its part of a cluster, opened from the data
/// directory.
pub struct Server {
    config: BrokerConfig,
    backend: Arc<Shared>,
    _lock: lock::DirLock,
}

impl Server {
    /// Locks the data directory and opens (recovering) every partition in it; with
    /// `peers` configured, joins the cluster.
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
        let peers = config.peer_map().map_err(BrokerError::InvalidRequest)?;
        let backend = if peers.is_empty() {
            let registry = Arc::new(TopicRegistry::open(&config.data_dir, defaults).await?);
            Backend::Single(registry, config.node_id)
        } else {
            let node =
                ClusterNode::start(config.node_id, &config.data_dir, peers, defaults).await?;
            Backend::Cluster(node)
        };
        let address = match (&backend, &config.advertised_address) {
            (_, Some(a)) => a.clone(),
            (Backend::Cluster(node), None) => node
                .peer_address(config.node_id)
                .unwrap_or_default()
                .to_string(),
            (Backend::Single(..), None) => String::new(),
        };
        Ok(Self {
            backend: Arc::new(Shared {
                config: config.clone(),
                backend,
                address,
            }),
            config,
            _lock: lock,
        })
    }

    /// This broker's part of the cluster, when it runs in one.
    pub fn cluster(&self) -> Option<&Arc<ClusterNode>> {
        match &self.backend.backend {
            Backend::Cluster(node) => Some(node),
            Backend::Single(..) => None,
        }
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
        let limit = self
            .config
            .max_request_bytes
            .saturating_mul(2)
            .max(16 << 20);
        let mut shared = self.backend;
        if shared.address.is_empty() {
            if let Some(s) = Arc::get_mut(&mut shared) {
                s.address = local.to_string();
            }
        }
        let peer = match &shared.backend {
            Backend::Cluster(node) => Some(
                RaftPeerServer::new(node.peer_service())
                    .max_decoding_message_size(usize::MAX)
                    .max_encoding_message_size(usize::MAX),
            ),
            Backend::Single(..) => None,
        };
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
            .add_service(group_server::GroupServer::new(
                group_service::GroupService::new(shared.clone()),
            ))
            .add_optional_service(peer)
            .serve_with_incoming_shutdown(incoming, shutdown)
            .await;
        let _ = stop_tx.send(true);
        let _ = background.await;
        tracing::info!("rafka broker stopping: syncing logs");
        match &shared.backend {
            Backend::Single(registry, _) => registry.flush_all().await?,
            Backend::Cluster(node) => node.shutdown().await,
        }
        result.map_err(|e| BrokerError::Internal(format!("server: {e}")))
    }
}

/// Retention and interval flushes until told to stop. In a cluster each replica applies
/// retention through its Raft group (snapshot, then purge).
async fn run_background(shared: Arc<Shared>, mut stop: tokio::sync::watch::Receiver<bool>) {
    let mut retention = tokio::time::interval(shared.config.retention_check_interval());
    let mut flush = tokio::time::interval(Duration::from_millis(100));
    loop {
        tokio::select! {
            _ = stop.changed() => return,
            _ = retention.tick() => {
                let registry = match &shared.backend {
                    Backend::Single(registry, _) => registry,
                    Backend::Cluster(node) => {
                        for p in node.partitions().await {
                            if let Err(e) = p.apply_retention().await {
                                tracing::warn!(topic = %p.topic, partition = p.partition, "retention: {e}");
                            }
                        }
                        continue;
                    }
                };
                for topic in registry.list() {
                    for p in topic.partitions() {
                        match p.apply_retention().await {
                            Ok(0) => {}
                            Ok(n) => tracing::info!(topic = topic.name(), partition = p.id(), segments = n, "retention deleted segments"),
                            Err(e) => tracing::warn!("retention: {e}"),
                        }
                    }
                }
            }
            _ = flush.tick() => match &shared.backend {
                Backend::Single(registry, _) => {
                    for topic in registry.list() {
                        for p in topic.partitions() {
                            if let Err(e) = p.with_log(|log| log.flush_if_due()).await {
                                tracing::warn!("flush: {e}");
                            }
                        }
                    }
                }
                Backend::Cluster(node) => {
                    for p in node.partitions().await {
                        let flushed = tokio::task::spawn_blocking(move || p.with_log(|log| log.flush_if_due())).await;
                        if let Ok(Err(e)) = flushed {
                            tracing::warn!("flush: {e}");
                        }
                    }
                }
            },
        }
    }
}
