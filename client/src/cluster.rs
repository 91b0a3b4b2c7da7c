//! Connections and metadata shared by the producer, consumer and admin: one channel per
//! broker, each partition's leader and replicas, and redirects that update them.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use rafka_proto::v1::admin_client::AdminClient;
use rafka_proto::v1::broker_client::BrokerClient;
use rafka_proto::v1::group_client::GroupClient;
use rafka_proto::v1::{MetadataRequest, MetadataResponse};
use tonic::transport::Endpoint;

use crate::security::{Conn, TokenSource};

use crate::{ClientError, Credentials, TlsConfig};

/// A partition's replicas as the cluster last told us.
#[derive(Debug, Clone, Default)]
pub(crate) struct PartitionMeta {
    /// Leader's broker id (0: unknown).
    pub leader: u32,
    /// Replica broker ids.
    pub replicas: Vec<u32>,
}

#[derive(Default)]
struct Meta {
    brokers: HashMap<u32, String>,
    /// Looked up on every `send`: a fast hash, not SipHash (names come from our own caller).
    topics: foldhash::HashMap<String, Vec<PartitionMeta>>,
}

/// A connection to the cluster and what it has told us.
pub(crate) struct Cluster {
    /// Addresses to fall back on when every known broker fails.
    bootstrap: Vec<String>,
    /// The broker asked for metadata and admin requests.
    default: RwLock<String>,
    channels: Mutex<HashMap<String, Conn>>,
    meta: RwLock<Meta>,
    /// When each topic's metadata was last asked for by [`Cluster::refresh_if_stale`].
    refreshed: Mutex<HashMap<String, std::time::Instant>>,
    /// TLS of every connection (none: plaintext).
    tls: Option<TlsConfig>,
    /// The bearer token every request carries (none: no credentials).
    token: Option<Arc<TokenSource>>,
}

/// How long one broker may take to answer a metadata request before the next is asked.
const METADATA_TIMEOUT: Duration = Duration::from_secs(10);

fn endpoint(addr: &str, tls: Option<&TlsConfig>) -> Result<Endpoint, ClientError> {
    let scheme = if tls.is_some() { "https" } else { "http" };
    let url = match addr.split_once("://") {
        Some((_, rest)) => format!("{scheme}://{rest}"),
        None => format!("{scheme}://{addr}"),
    };
    let endpoint = Endpoint::from_shared(url)
        .map_err(|e| ClientError::InvalidArgument(format!("bad address `{addr}`: {e}")))?
        .tcp_nodelay(true)
        .connect_timeout(Duration::from_secs(5))
        // A connection whose broker vanished without a word (a silent network) is found
        // and dropped, failing what waits on it, instead of holding requests forever.
        .http2_keep_alive_interval(Duration::from_secs(5))
        .keep_alive_timeout(Duration::from_secs(10))
        .keep_alive_while_idle(true)
        .initial_stream_window_size(Some(8 << 20))
        .initial_connection_window_size(Some(32 << 20))
        // Fetched records arrive in one DATA frame each, decoded in place (`direct`).
        .max_frame_size(rafka_proto::wire::MAX_FRAME);
    match tls {
        Some(tls) => endpoint
            .tls_config(tls.tonic())
            .map_err(|e| ClientError::InvalidArgument(format!("TLS settings: {e}"))),
        None => Ok(endpoint),
    }
}

/// An error and its causes, `a: b: c` (tonic's "transport error" alone says nothing of
/// a refused certificate or a closed connection).
fn with_sources(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let s_text = s.to_string();
        if !text.ends_with(&s_text) {
            text.push_str(": ");
            text.push_str(&s_text);
        }
        source = s.source();
    }
    text
}

impl Cluster {
    /// Connects to the first reachable address of a comma-separated `bootstrap` list.
    pub async fn connect(
        bootstrap: &str,
        tls: Option<TlsConfig>,
        credentials: Option<&Credentials>,
    ) -> Result<Arc<Self>, ClientError> {
        let token = match credentials {
            Some(c) => Some(TokenSource::new(c, tls.as_ref()).await?),
            None => None,
        };
        let addresses: Vec<String> = bootstrap
            .split(',')
            .map(str::trim)
            .filter(|a| !a.is_empty())
            .map(String::from)
            .collect();
        if addresses.is_empty() {
            return Err(ClientError::InvalidArgument(
                "empty bootstrap address list".into(),
            ));
        }
        let mut last = String::new();
        for addr in &addresses {
            let ep = match endpoint(addr, tls.as_ref()) {
                Ok(e) => e,
                Err(e) => {
                    last = e.to_string();
                    continue;
                }
            };
            match ep.connect().await {
                Ok(channel) => {
                    return Ok(Arc::new(Self {
                        bootstrap: addresses.clone(),
                        default: RwLock::new(addr.clone()),
                        channels: Mutex::new(HashMap::from([(
                            addr.clone(),
                            Conn::new(channel, token.clone()),
                        )])),
                        meta: RwLock::default(),
                        refreshed: Mutex::default(),
                        tls,
                        token,
                    }))
                }
                Err(e) => last = format!("{addr}: {}", with_sources(&e)),
            }
        }
        Err(ClientError::Connect {
            addresses: addresses.join(","),
            reason: last,
        })
    }

    /// The channel to `addr`, connected lazily and kept.
    fn channel(&self, addr: &str) -> Result<Conn, ClientError> {
        let mut map = self.channels.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(c) = map.get(addr) {
            return Ok(c.clone());
        }
        let channel = Conn::new(
            endpoint(addr, self.tls.as_ref())?.connect_lazy(),
            self.token.clone(),
        );
        map.insert(addr.to_string(), channel.clone());
        Ok(channel)
    }

    fn default_address(&self) -> String {
        self.default
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    fn broker_client(channel: Conn) -> BrokerClient<Conn> {
        BrokerClient::new(channel)
            .max_decoding_message_size(usize::MAX)
            .max_encoding_message_size(usize::MAX)
    }

    /// A client of the Broker service on the default broker.
    pub fn broker(&self) -> BrokerClient<Conn> {
        Self::broker_client(self.default_channel())
    }

    /// Moves the default broker to the next known one (after a request to it failed
    /// without an answer: it may be down), round the known brokers and the bootstrap
    /// list.
    pub fn next_default(&self) {
        let mut candidates: Vec<String> = {
            let meta = self.read();
            let mut known: Vec<_> = meta.brokers.iter().collect();
            known.sort();
            known.into_iter().map(|(_, a)| a.clone()).collect()
        };
        for b in &self.bootstrap {
            if !candidates.contains(b) {
                candidates.push(b.clone());
            }
        }
        let mut default = self.default.write().unwrap_or_else(|e| e.into_inner());
        let next = candidates
            .iter()
            .position(|a| *a == *default)
            .map_or(0, |i| (i + 1) % candidates.len());
        if let Some(a) = candidates.get(next) {
            *default = a.clone();
        }
    }

    /// A client of the Broker service on broker `id`, or on the default broker when its
    /// address is unknown.
    pub fn broker_at(&self, id: u32) -> BrokerClient<Conn> {
        let addr = self.read().brokers.get(&id).cloned();
        match addr.map(|a| self.channel(&a)) {
            Some(Ok(channel)) => Self::broker_client(channel),
            _ => self.broker(),
        }
    }

    /// The connection to broker `id`, or to the default broker when its address is
    /// unknown.
    pub fn channel_at(&self, id: u32) -> Conn {
        let addr = self.read().brokers.get(&id).cloned();
        match addr.map(|a| self.channel(&a)) {
            Some(Ok(channel)) => channel,
            _ => self.default_channel(),
        }
    }

    /// The connection to the default broker.
    pub fn default_channel(&self) -> Conn {
        self.channel(&self.default_address())
            .expect("the default address was valid when it was chosen")
    }

    /// Broker `id`'s address, if the cluster has told us.
    pub fn address_of(&self, id: u32) -> Option<String> {
        self.read().brokers.get(&id).cloned()
    }

    /// A client of the Group service on the default broker.
    pub fn group(&self) -> GroupClient<Conn> {
        let channel = self
            .channel(&self.default_address())
            .expect("the default address was valid when it was chosen");
        GroupClient::new(channel)
    }

    /// A client of the Group service at `addr`.
    pub fn group_at(&self, addr: &str) -> Result<GroupClient<Conn>, ClientError> {
        Ok(GroupClient::new(self.channel(addr)?))
    }

    /// A client of the Admin service (brokers forward to the metadata leader).
    pub fn admin(&self) -> AdminClient<Conn> {
        let channel = self
            .channel(&self.default_address())
            .expect("the default address was valid when it was chosen");
        AdminClient::new(channel)
    }

    /// A client of the Admin service on broker `id`, or on the default broker when its
    /// address is unknown.
    pub fn admin_at(&self, id: u32) -> AdminClient<Conn> {
        let addr = self.read().brokers.get(&id).cloned();
        match addr.map(|a| self.channel(&a)) {
            Some(Ok(channel)) => AdminClient::new(channel),
            _ => self.admin(),
        }
    }

    /// Number of partitions of `topic`, from cached metadata or the cluster.
    pub async fn partition_count(&self, topic: &str) -> Result<u32, ClientError> {
        if let Some(p) = self.read().topics.get(topic) {
            return Ok(p.len() as u32);
        }
        self.refresh(topic).await
    }

    /// What we know of a partition (refreshing metadata when it is not cached).
    pub async fn partition(&self, topic: &str, partition: u32) -> PartitionMeta {
        if !self.read().topics.contains_key(topic) {
            let _ = self.refresh(topic).await;
        }
        self.read()
            .topics
            .get(topic)
            .and_then(|t| t.get(partition as usize).cloned())
            .unwrap_or_default()
    }

    /// Cached leader of a partition (0: unknown).
    pub fn leader(&self, topic: &str, partition: u32) -> u32 {
        self.read()
            .topics
            .get(topic)
            .and_then(|t| t.get(partition as usize))
            .map_or(0, |p| p.leader)
    }

    /// Records a redirect: `leader` now leads the partition.
    pub fn set_leader(&self, topic: &str, partition: u32, leader: u32) {
        let mut meta = self.meta.write().unwrap_or_else(|e| e.into_inner());
        if let Some(p) = meta
            .topics
            .get_mut(topic)
            .and_then(|t| t.get_mut(partition as usize))
        {
            p.leader = leader;
        }
    }

    /// Asks the cluster for `topic`'s metadata again; returns its partition count.
    pub async fn refresh(&self, topic: &str) -> Result<u32, ClientError> {
        self.refresh_avoiding(topic, None).await
    }

    /// As [`Cluster::refresh`], asking broker `avoid` last: a broker that just failed a
    /// request (stopped, or cut off from its peers) knows least who leads now.
    pub async fn refresh_avoiding(
        &self,
        topic: &str,
        avoid: Option<u32>,
    ) -> Result<u32, ClientError> {
        let resp = self
            .metadata_avoiding(vec![topic.to_string()], avoid)
            .await?;
        resp.topics
            .iter()
            .find(|t| t.name == topic)
            .map(|t| t.partitions.len() as u32)
            .ok_or_else(|| ClientError::Broker {
                code: tonic::Code::NotFound,
                message: format!("unknown topic `{topic}`"),
            })
    }

    /// Refreshes `topic`'s metadata (asking `avoid` last) unless that was done in the
    /// last `max_age`: many requests waiting on one silent broker ask once between them.
    pub async fn refresh_if_stale(&self, topic: &str, avoid: u32, max_age: Duration) {
        let now = std::time::Instant::now();
        {
            let mut refreshed = self.refreshed.lock().unwrap_or_else(|e| e.into_inner());
            if refreshed
                .get(topic)
                .is_some_and(|t| now.duration_since(*t) < max_age)
            {
                return;
            }
            refreshed.insert(topic.to_string(), now);
        }
        if let Err(e) = self.refresh_avoiding(topic, Some(avoid)).await {
            tracing::debug!(topic, "metadata refresh failed: {e}");
        }
    }

    /// Metadata of `topics` (all when empty) from the first broker that answers: the
    /// default one, then every known broker, then the bootstrap list. Updates the cache.
    pub async fn metadata(&self, topics: Vec<String>) -> Result<MetadataResponse, ClientError> {
        self.metadata_avoiding(topics, None).await
    }

    /// As [`Cluster::metadata`], with broker `avoid` asked last.
    async fn metadata_avoiding(
        &self,
        topics: Vec<String>,
        avoid: Option<u32>,
    ) -> Result<MetadataResponse, ClientError> {
        let mut candidates = vec![self.default_address()];
        let avoided = {
            let meta = self.read();
            let mut known: Vec<_> = meta.brokers.iter().collect();
            known.sort();
            candidates.extend(known.into_iter().map(|(_, a)| a.clone()));
            avoid.and_then(|id| meta.brokers.get(&id).cloned())
        };
        candidates.extend(self.bootstrap.iter().cloned());
        if let Some(avoided) = avoided {
            candidates.retain(|a| *a != avoided);
            candidates.push(avoided);
        }
        let mut last = None;
        let mut fallback = None;
        let mut tried = Vec::new();
        for addr in candidates {
            if tried.contains(&addr) {
                continue;
            }
            tried.push(addr.clone());
            let request = MetadataRequest {
                topics: topics.clone(),
            };
            let answer = match self.channel(&addr) {
                Ok(c) => {
                    let mut client = Self::broker_client(c);
                    match tokio::time::timeout(METADATA_TIMEOUT, client.metadata(request)).await {
                        Ok(answer) => answer.map_err(ClientError::from),
                        Err(_) => Err(ClientError::Broker {
                            code: tonic::Code::DeadlineExceeded,
                            message: format!("no metadata from {addr} within {METADATA_TIMEOUT:?}"),
                        }),
                    }
                }
                Err(e) => Err(e),
            };
            match answer {
                // The broker to avoid answered first (known only by another address):
                // its answer is the last resort.
                Ok(r) if avoid.is_some_and(|a| a == r.get_ref().answered_by) => {
                    fallback = Some((addr, r.into_inner()));
                }
                Ok(r) => {
                    let r = r.into_inner();
                    self.learn(&r);
                    *self.default.write().unwrap_or_else(|e| e.into_inner()) = addr;
                    return Ok(r);
                }
                // The broker answered: its error is the answer.
                Err(e) if !e.is_retriable() => return Err(e),
                Err(e) => last = Some(e),
            }
        }
        if let Some((addr, r)) = fallback {
            self.learn(&r);
            *self.default.write().unwrap_or_else(|e| e.into_inner()) = addr;
            return Ok(r);
        }
        Err(last.unwrap_or_else(|| ClientError::Connect {
            addresses: self.bootstrap.join(","),
            reason: "no broker answered".into(),
        }))
    }

    fn learn(&self, r: &MetadataResponse) {
        let mut meta = self.meta.write().unwrap_or_else(|e| e.into_inner());
        for b in &r.brokers {
            meta.brokers.insert(b.node_id, b.address.clone());
        }
        for t in &r.topics {
            let mut parts: Vec<PartitionMeta> = t
                .partitions
                .iter()
                .map(|p| PartitionMeta {
                    leader: p.leader,
                    replicas: p.replicas.clone(),
                })
                .collect();
            // A broker that does not replicate a partition only guesses its leader:
            // keep a leader learned from a redirect unless the answer knows better.
            if let Some(old) = meta.topics.get(&t.name) {
                for (new, old) in parts.iter_mut().zip(old) {
                    if new.leader == 0 {
                        new.leader = old.leader;
                    }
                }
            }
            meta.topics.insert(t.name.clone(), parts);
        }
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Meta> {
        self.meta.read().unwrap_or_else(|e| e.into_inner())
    }
}
