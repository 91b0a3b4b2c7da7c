//! The gRPC server: the client-facing services and the peer service, over this
//! broker's part of the cluster (a cluster of one without peers).
//!
//! - `broker_service` Produce, Fetch (long poll), Subscribe (server stream), ListOffsets,
//!   Metadata
//! - `group_service`  consumer groups: coordinator, offsets, membership
//! - `admin_service`  CreateTopic, DeleteTopic, AlterTopicConfig
//! - `catalog`        topics and partitions as the services see them; admin changes
//!   through the metadata group
//! - `lock`           one broker per data directory
//!
//! [`Server::serve`] takes a bound listener and a shutdown future: on shutdown it stops
//! accepting, lets in-flight requests finish, stops background work and syncs every log.

mod admin_service;
mod broker_service;
mod catalog;
mod direct;
mod group_service;
pub mod http;
mod kafka;
mod lock;
mod oauth;
pub mod requests;

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use rafka_proto::peer::raft_peer_server::RaftPeerServer;
use rafka_proto::v1::admin_server::AdminServer;
use rafka_proto::v1::broker_server::BrokerServer;
use rafka_proto::v1::group_server;
use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;

use crate::cluster::node::{ClusterNode, Founding};
use crate::config::BrokerConfig;
use crate::error::BrokerError;
use crate::migrate;
use crate::tasks::Tasks;

/// State shared by the services.
pub(crate) struct Shared {
    pub config: BrokerConfig,
    /// This broker's part of the cluster (a cluster of one without peers).
    pub node: Arc<ClusterNode>,
    /// Address clients are told to use.
    pub address: String,
    /// The groups this broker coordinates.
    pub groups: Arc<crate::group::coordinator::Coordinator>,
    /// TLS of the listener and the peer links (none: plaintext).
    pub tls: Option<Arc<crate::tls::Tls>>,
    /// Bearer-token verification (none: auth is off).
    pub auth: Option<Arc<crate::auth::Authenticator>>,
    /// The ACLs in force (checked only with auth on).
    pub acls: Arc<crate::auth::AclCache>,
    /// Address Kafka clients are told to use for this broker (none: no Kafka listener).
    pub kafka_address: Option<String>,
    /// The Kafka listener's state (classic groups, KIP-848 members' last words, SASL).
    pub kafka: kafka::KafkaState,
}

/// The principal the auth layer found for a request (none with auth off).
pub(crate) fn principal<T>(request: &tonic::Request<T>) -> Option<Arc<crate::auth::Principal>> {
    request
        .extensions()
        .get::<Arc<crate::auth::Principal>>()
        .cloned()
}

impl Shared {
    /// Whether the request's principal (from its extensions) may do `op` on the
    /// resource: always with auth off; with it, as the ACLs say.
    pub fn authorize(
        &self,
        principal: Option<&Arc<crate::auth::Principal>>,
        op: crate::auth::acl::Operation,
        ty: crate::auth::acl::ResourceType,
        name: &str,
    ) -> Result<(), BrokerError> {
        if self.auth.is_none() {
            return Ok(());
        }
        let principal = principal
            .ok_or_else(|| BrokerError::NotAuthorized("the request has no principal".into()))?;
        self.acls
            .authorize(principal, op, ty, name)
            .map_err(BrokerError::NotAuthorized)
    }

    /// [`Shared::authorize`] for a topic.
    pub fn may_topic(
        &self,
        principal: Option<&Arc<crate::auth::Principal>>,
        op: crate::auth::acl::Operation,
        topic: &str,
    ) -> Result<(), BrokerError> {
        self.authorize(principal, op, crate::auth::acl::ResourceType::Topic, topic)
    }
}

/// A broker: its part of the cluster, opened from the data directory. Without peers it
/// is a cluster of one: a one-voter metadata group and one-voter partition groups, the
/// same engine as in a cluster.
pub struct Server {
    shared: Arc<Shared>,
    _lock: lock::DirLock,
}

impl Server {
    /// Locks the data directory, opens (recovering) the metadata and every partition in
    /// it, and joins the cluster of `peers` (or forms a cluster of one).
    pub async fn open(config: BrokerConfig) -> Result<Self, BrokerError> {
        raise_open_file_limit();
        std::fs::create_dir_all(&config.data_dir).map_err(|e| {
            BrokerError::Internal(format!(
                "cannot create data dir {}: {e}",
                config.data_dir.display()
            ))
        })?;
        let lock = lock::DirLock::acquire(&config.data_dir)?;
        if config.data_dir.join(DECOMMISSIONED_FILE).exists() {
            return Err(BrokerError::InvalidRequest(format!(
                "{0} belonged to broker {1}, which was decommissioned from its cluster and \
                 deleted its data; to start a broker here, remove the directory \
                 (`rm -r {0}`) and start it with a new --node-id",
                config.data_dir.display(),
                config.node_id
            )));
        }
        let tls =
            if config.tls.is_set() {
                Some(crate::tls::Tls::load(config.tls.clone()).map_err(|e| {
                    BrokerError::InvalidRequest(format!("broker config [tls]: {e}"))
                })?)
            } else {
                None
            };
        let auth = crate::auth::Authenticator::new(config.auth.clone())
            .map_err(|e| BrokerError::InvalidRequest(format!("broker config [auth]: {e}")))?;
        if auth.is_some() && tls.is_none() {
            tracing::warn!("auth is on without TLS: bearer tokens travel in plaintext");
        }
        let defaults = config
            .topic_defaults()
            .map_err(|e| BrokerError::InvalidRequest(format!("broker config [log]: {e}")))?;
        let mut peers = config.peer_map().map_err(BrokerError::InvalidRequest)?;
        let own = config
            .advertised_address
            .clone()
            .unwrap_or_else(|| config.listen.to_string());
        let legacy = migrate::legacy_topics(&config.data_dir)?;
        if let Some(topics) = &legacy {
            if !peers.is_empty() {
                return Err(BrokerError::InvalidRequest(format!(
                    "{} holds the topics of a single broker of an earlier release: start it \
                     once without --peers (`rafka start --data-dir {0}`) to migrate it, then \
                     grow the cluster from there",
                    config.data_dir.display()
                )));
            }
            migrate::adopt_partitions(&config.data_dir, topics, &defaults, config.node_id, &own)?;
        }
        let joined_marker = config.data_dir.join(JOINED_FILE);
        let seeds: Vec<String> = config
            .join
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(String::from)
            .collect();
        let joiner = !seeds.is_empty() || joined_marker.exists();
        if joiner && !peers.is_empty() {
            return Err(BrokerError::InvalidRequest(
                "give either peers (a cluster formed by its configured brokers) or join \
                 (a running cluster to join), not both"
                    .into(),
            ));
        }
        if joiner && legacy.is_some() {
            return Err(BrokerError::InvalidRequest(format!(
                "{} holds the topics of a single broker of an earlier release: start it once \
                 alone to migrate it before it joins a cluster",
                config.data_dir.display()
            )));
        }
        if peers.is_empty() {
            peers = BTreeMap::from([(config.node_id, own.clone())]);
        }
        let founding = if joiner {
            Founding::Joiner
        } else {
            Founding::Peer
        };
        let node = ClusterNode::start(
            config.node_id,
            &config.data_dir,
            peers,
            defaults,
            Tasks::default(),
            founding,
            tls.clone(),
        )
        .await?;
        if let Some(topics) = legacy {
            register_legacy_topics(&node, topics, &config).await?;
            migrate::finish(&config.data_dir)?;
        }
        let address = match &config.advertised_address {
            Some(a) => a.clone(),
            None => node
                .peer_address(config.node_id)
                .unwrap_or(&own)
                .to_string(),
        };
        if !seeds.is_empty() && !joined_marker.exists() {
            // A refusal (an id in use) fails the start; the metadata then reaches this
            // broker once it serves.
            if let Err(e) = node.request_join(&seeds).await {
                node.shutdown().await;
                return Err(e);
            }
            let joining = node.clone();
            let marker = joined_marker.clone();
            node.tasks().spawn_until_stopped(async move {
                match joining.await_joined().await {
                    Ok(()) => {
                        if let Err(e) = crate::raft::state_file::write_atomic(
                            marker.parent().expect("in the data dir"),
                            JOINED_FILE,
                            b"joined\n",
                        ) {
                            tracing::error!("recording the join: {e}");
                        }
                        tracing::info!("joined the cluster");
                    }
                    Err(e) => tracing::error!("joining the cluster: {e}"),
                }
            });
        }
        let kafka_address = config.kafka_advertised();
        Ok(Self {
            shared: Arc::new(Shared {
                kafka_address,
                kafka: Default::default(),
                config,
                node,
                address,
                groups: Arc::default(),
                tls,
                auth,
                acls: Arc::default(),
            }),
            _lock: lock,
        })
    }

    /// This broker's part of the cluster.
    pub fn cluster(&self) -> &Arc<ClusterNode> {
        &self.shared.node
    }

    /// Serves the HTTP port (metrics, health, the console) on `listener` until the
    /// broker stops.
    pub fn serve_http(&self, listener: TcpListener) {
        self.shared
            .node
            .tasks()
            .spawn_until_stopped(http::serve(listener, Some(self.shared.clone())));
    }

    /// Serves Kafka clients on `listener` until the broker stops, and records this
    /// broker's Kafka address in the cluster metadata (for every broker's Metadata).
    pub fn serve_kafka(&self, listener: TcpListener) {
        let tasks = self.shared.node.tasks();
        tasks.spawn_until_stopped(kafka::serve(listener, self.shared.clone()));
        tasks.spawn_until_stopped(kafka::register(self.shared.clone()));
        tasks.spawn_until_stopped(kafka::expire_groups(self.shared.clone()));
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
        let shared = self.shared;
        let limit = shared
            .config
            .max_request_bytes
            .saturating_mul(2)
            .max(16 << 20);
        let peer = RaftPeerServer::new(shared.node.peer_service())
            .max_decoding_message_size(usize::MAX)
            .max_encoding_message_size(usize::MAX);
        let tasks = shared.node.tasks().clone();
        tasks.spawn_until_stopped(run_background(shared.clone()));
        if let Some(tls) = &shared.tls {
            tasks.spawn_until_stopped(tls.clone().watch());
        }
        if let Some(auth) = &shared.auth {
            tasks.spawn_until_stopped(auth.clone().watch());
            tasks.spawn_until_stopped(
                shared
                    .acls
                    .clone()
                    .follow(shared.node.clone(), auth.clone()),
            );
            if auth.builtin_issuer() {
                tasks.spawn_until_stopped(crate::auth::issuer::ensure_signing_key(
                    shared.node.clone(),
                    shared.config.auth.token_ttl_secs,
                ));
            }
        }
        tracing::info!(
            %local,
            tls = shared.tls.is_some(),
            data_dir = %shared.config.data_dir.display(),
            "rafka broker serving"
        );
        let router = tonic::transport::Server::builder()
            .initial_stream_window_size(Some(8 << 20))
            .initial_connection_window_size(Some(32 << 20))
            // Produced batches arrive in one DATA frame each, decoded in place (`direct`).
            .max_frame_size(Some(rafka_proto::wire::MAX_FRAME))
            // Connections whose client vanished without a word (a cut network) are
            // found and closed, with the streams and tasks they hold.
            .http2_keepalive_interval(Some(Duration::from_secs(10)))
            .http2_keepalive_timeout(Some(Duration::from_secs(20)))
            .layer(requests::CountRequests)
            .layer(crate::tls::PeerGate::new(shared.tls.is_some()))
            .layer(crate::auth::AuthLayer::new(shared.auth.clone()))
            .layer(direct::DirectLayer::new(shared.clone(), limit))
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
            .add_service(peer);
        let stopping = async {
            tokio::select! {
                _ = shutdown => {}
                _ = shared.node.decommissioned() => {
                    tracing::warn!("this broker was decommissioned: stopping and deleting its data");
                }
            }
            // Streams and background loops end now; requests in flight finish.
            tasks.stop();
        };
        let result = match &shared.tls {
            Some(tls) => {
                router
                    .serve_with_incoming_shutdown(tls.clone().incoming(listener), stopping)
                    .await
            }
            None => {
                let incoming = TcpListenerStream::new(listener).map(|conn| {
                    if let Ok(c) = &conn {
                        let _ = c.set_nodelay(true);
                    }
                    conn
                });
                router
                    .serve_with_incoming_shutdown(incoming, stopping)
                    .await
            }
        };
        tracing::info!("rafka broker stopping: syncing logs");
        shared.node.shutdown().await;
        let left = tasks.shut_down(SHUTDOWN_WAIT).await;
        if left > 0 {
            tracing::warn!(
                tasks = left,
                "tasks still running at shutdown after {SHUTDOWN_WAIT:?}"
            );
        }
        if shared.node.is_decommissioned() {
            delete_data(&shared.config.data_dir)?;
        }
        result.map_err(|e| BrokerError::Internal(format!("server: {e}")))
    }
}

/// Migration step 2: creates the topics of an earlier release's single broker in the
/// metadata group (one replica each, over the adopted logs) and waits for their leaders.
async fn register_legacy_topics(
    node: &ClusterNode,
    topics: Vec<migrate::LegacyTopic>,
    config: &BrokerConfig,
) -> Result<(), BrokerError> {
    // Whatever the limits now, the topics that exist are kept.
    let unlimited = BrokerConfig {
        max_partitions_per_topic: crate::topics::MAX_PARTITIONS,
        max_partitions: u32::MAX,
        ..config.clone()
    };
    for t in topics {
        let request = rafka_proto::v1::CreateTopicRequest {
            name: t.name.clone(),
            partitions: t.partitions,
            replication_factor: 1,
            configs: t.configs.into_iter().collect(),
        };
        match catalog::create_topic(node, request, &unlimited).await {
            Ok(_) | Err(BrokerError::TopicExists(_)) => {
                tracing::info!(topic = %t.name, partitions = t.partitions, "migrated topic");
            }
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Deletes everything in a decommissioned broker's data directory but its lock, and
/// leaves a marker that refuses a restart there.
fn delete_data(dir: &std::path::Path) -> Result<(), BrokerError> {
    let fail = |e: std::io::Error| {
        BrokerError::Internal(format!("deleting the data in {}: {e}", dir.display()))
    };
    crate::raft::state_file::write_atomic(dir, DECOMMISSIONED_FILE, b"decommissioned\n")
        .map_err(|e| BrokerError::Internal(format!("recording the decommission: {e}")))?;
    for entry in std::fs::read_dir(dir).map_err(fail)? {
        let entry = entry.map_err(fail)?;
        let name = entry.file_name();
        if name == ".lock" || name == DECOMMISSIONED_FILE {
            continue;
        }
        let path = entry.path();
        if entry.file_type().map_err(fail)?.is_dir() {
            std::fs::remove_dir_all(&path).map_err(fail)?;
        } else {
            std::fs::remove_file(&path).map_err(fail)?;
        }
    }
    tracing::info!(data_dir = %dir.display(), "deleted the data of a decommissioned broker");
    Ok(())
}

/// Written in a decommissioned broker's data directory, in place of its data.
const DECOMMISSIONED_FILE: &str = "decommissioned";

/// Written once a broker joined a cluster: its restarts follow the cluster's metadata.
const JOINED_FILE: &str = "joined";

/// Longest shutdown waits for the broker's tasks once its groups are stopped.
const SHUTDOWN_WAIT: Duration = Duration::from_secs(10);

/// Retention and interval flushes, until the broker's token is cancelled. Each replica
/// applies retention through its Raft group (snapshot, then purge).
async fn run_background(shared: Arc<Shared>) {
    let mut retention = tokio::time::interval(shared.config.retention_check_interval());
    let mut flush = tokio::time::interval(FLUSH_ROUND);
    // The replicas that sync on a timer, looked up again when the running replicas change
    // and every FLUSH_RELOOK rounds (a topic's flush.ms may change): an idle broker with
    // thousands of partitions must not walk all of them ten times a second.
    let mut flushing: Arc<Vec<_>> = Arc::default();
    let mut version = None;
    let mut round = 0u64;
    loop {
        tokio::select! {
            _ = retention.tick() => {
                for p in shared.node.partitions().await {
                    if let Err(e) = p.apply_retention().await {
                        tracing::warn!(topic = %p.topic, partition = p.partition, "retention: {e}");
                    }
                }
            }
            _ = flush.tick() => {
                round += 1;
                let now_version = shared.node.running_version();
                if version != Some(now_version) || round % FLUSH_RELOOK == 0 {
                    let mut partitions = shared.node.partitions().await;
                    partitions.retain(|p| p.flushes_on_interval());
                    flushing = Arc::new(partitions);
                    version = Some(now_version);
                }
                if flushing.is_empty() {
                    continue;
                }
                // One blocking task per round, not one per partition: a broker with
                // thousands of partitions must not pay a thread hand-off for each.
                let partitions = flushing.clone();
                let _ = tokio::task::spawn_blocking(move || {
                    for p in partitions.iter() {
                        if let Err(e) = p.with_log(|log| log.flush_if_due()) {
                            tracing::warn!(topic = %p.topic, partition = p.partition, "flush: {e}");
                        }
                    }
                })
                .await;
            }
        }
    }
}

/// How often logs that sync on a timer are looked at.
const FLUSH_ROUND: Duration = Duration::from_millis(100);
/// Every how many flush rounds the replicas that sync on a timer are looked up again.
const FLUSH_RELOOK: u64 = 10;

/// Raises this process's soft limit of open files to its hard limit (as Kafka's
/// operations guide asks of its users, and as Go's runtime does by itself): each active
/// partition holds its log file open, and a soft limit of 1,024 would cap a broker at a
/// few hundred partitions. Logs the limit it runs with.
fn raise_open_file_limit() {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit only read and write the struct passed by pointer.
    let raised = unsafe {
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) == 0 && {
            if limit.rlim_cur < limit.rlim_max {
                limit.rlim_cur = limit.rlim_max;
                libc::setrlimit(libc::RLIMIT_NOFILE, &limit) == 0
            } else {
                true
            }
        }
    };
    if raised {
        tracing::debug!(open_files = limit.rlim_cur, "open-file limit");
    } else {
        tracing::warn!(
            "could not raise the open-file limit: {}",
            std::io::Error::last_os_error()
        );
    }
}
