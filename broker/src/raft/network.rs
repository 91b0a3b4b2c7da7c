//! Raft traffic between brokers: one `RaftPeer` gRPC service per broker carries every
//! group's AppendEntries, Vote and InstallSnapshot, each request naming its group.
//! AppendEntries and Vote of all groups travel batched on one stream per pair of
//! brokers (see [`super::link`]); InstallSnapshot, rare and large, has a call of its own.
//!
//! Entries travel as the batches they are stored as (raw bytes, no re-encoding); the
//! small remainder of each request and every reply is JSON of openraft's own types.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use openraft::error::{
    ClientWriteError, InstallSnapshotError, NetworkError, PayloadTooLarge, RPCError, RaftError,
    RemoteError, Unreachable,
};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use openraft::{BasicNode, CommittedLeaderId, LogId, Raft};
use rafka_proto::peer::raft_peer_client::RaftPeerClient;
use rafka_proto::peer::raft_peer_server::RaftPeer;
use rafka_proto::peer::{self as pb, peer_call::Body};
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use tonic::transport::{Channel, Endpoint};
use tonic::{Request, Response, Status};

use crate::tasks::Tasks;

use super::entry::{decode_with, encode};
use super::link::{Dialer, Link};
use super::liveness::Liveness;
use super::types::{typ, AppendResult, BatchData, TypeConfig};
use super::METADATA_GROUP;

/// An AppendEntries request without its entries.
#[derive(Serialize, Deserialize)]
struct AppendHeader {
    vote: typ::Vote,
    prev_log_id: Option<typ::LogId>,
    leader_commit: Option<typ::LogId>,
}

/// One lazily connected channel per peer address, shared by every group, and the TLS
/// configuration they were dialled with.
type ChannelMap = Arc<Mutex<Channels>>;

/// See [`ChannelMap`].
#[derive(Default)]
struct Channels {
    by_address: HashMap<String, Channel>,
    /// Peers are dialled over TLS with this broker's certificate (none: plaintext).
    tls: Option<Arc<crate::tls::Tls>>,
    /// The TLS version the channels in `by_address` were made with: when the
    /// certificates are loaded again, channels are dialled anew with the new ones.
    tls_version: u64,
}

/// Peer connections: one lazily connected channel and one batching link per peer
/// address, shared by every group.
#[derive(Clone, Default)]
pub struct PeerChannels {
    channels: ChannelMap,
    links: Arc<Mutex<HashMap<String, Link>>>,
    /// Addresses this broker cannot reach (fault injection: a cut network link).
    cut: Arc<RwLock<HashSet<String>>>,
    /// Node liveness: no Raft RPC is sent to a broker known to be down.
    liveness: Arc<RwLock<Option<Arc<Liveness>>>>,
}

impl PeerChannels {
    /// Dials peers over TLS with `tls` from now on.
    pub fn set_tls(&self, tls: Arc<crate::tls::Tls>) {
        let mut map = self.channels.lock().unwrap_or_else(|e| e.into_inner());
        map.by_address.clear();
        map.tls_version = tls.version();
        map.tls = Some(tls);
    }

    /// An endpoint to the peer at `addr` (over TLS when peers are), for calls beside
    /// the shared channels.
    pub fn endpoint(&self, addr: &str) -> Result<Endpoint, String> {
        let tls = self
            .channels
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .tls
            .clone();
        endpoint(addr, tls.as_deref())
    }

    /// Cuts (or, with an empty set, heals) the links from this broker to `addresses`:
    /// every RPC to them fails as unreachable, as on a partitioned network.
    pub fn set_cut(&self, addresses: HashSet<String>) {
        *self.cut.write().unwrap_or_else(|e| e.into_inner()) = addresses;
    }

    /// Fails Raft RPCs to brokers `liveness` knows to be down at once (as unreachable:
    /// openraft backs off) instead of sending them to wait out a reconnect or a timeout.
    pub fn set_liveness(&self, liveness: Arc<Liveness>) {
        *self.liveness.write().unwrap_or_else(|e| e.into_inner()) = Some(liveness);
    }

    fn is_down(&self, node: u64) -> bool {
        let liveness = self.liveness.read().unwrap_or_else(|e| e.into_inner());
        liveness
            .as_ref()
            .is_some_and(|l| l.is_down(node, Instant::now()))
    }

    fn is_opening(&self, node: u64) -> bool {
        let liveness = self.liveness.read().unwrap_or_else(|e| e.into_inner());
        liveness
            .as_ref()
            .is_some_and(|l| l.is_peer_opening(node, Instant::now()))
    }

    fn is_cut(&self, addr: &str) -> bool {
        self.cut
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .contains(addr)
    }

    /// Proposes a metadata change (a command batch) on the metadata leader at `addr`
    /// and returns its client-write result.
    pub async fn propose_metadata(
        &self,
        addr: &str,
        batch: Bytes,
    ) -> Result<MetadataWriteResult, String> {
        if self.is_cut(addr) {
            return Err(format!("link to {addr} is cut"));
        }
        let mut client = RaftPeerClient::new(self.channel(addr)?);
        let mut request = Request::new(pb::ProposeRequest { batch });
        request.set_timeout(PROPOSE_TIMEOUT);
        let reply = client
            .propose_metadata(request)
            .await
            .map_err(|s| format!("{addr}: {}", s.message()))?;
        serde_json::from_slice(&reply.into_inner().json)
            .map_err(|e| format!("{addr}: bad proposal reply: {e}"))
    }

    /// Asks the broker at `addr` to let broker `id` at `address` join the cluster.
    pub async fn join(&self, addr: &str, id: u32, address: &str) -> Result<(), Status> {
        let channel = self.channel(addr).map_err(Status::invalid_argument)?;
        let mut request = Request::new(pb::JoinRequest {
            id,
            address: address.to_string(),
        });
        request.set_timeout(PROPOSE_TIMEOUT);
        RaftPeerClient::new(channel).join(request).await.map(|_| ())
    }

    /// Sends a node-level heartbeat to the broker at `addr` and returns its answer.
    /// `Err(true)`: the broker refused the connection (or the link is cut), it is down;
    /// `Err(false)`: no answer in time or another failure, which proves nothing yet.
    pub async fn node_heartbeat(
        &self,
        addr: &str,
        message: pb::NodeStatus,
        timeout: Duration,
    ) -> Result<pb::NodeStatus, bool> {
        if self.is_cut(addr) {
            return Err(true);
        }
        let channel = self.channel(addr).map_err(|_| true)?;
        let mut request = Request::new(message);
        request.set_timeout(timeout);
        let mut client = RaftPeerClient::new(channel);
        let call = detached(async move { client.node_heartbeat(request).await });
        match tokio::time::timeout(timeout, call).await {
            Ok(Ok(reply)) => Ok(reply.into_inner()),
            Ok(Err(s)) => Err(s.code() == tonic::Code::Unavailable),
            Err(_) => {
                // A cut network leaves the connection open without a word: dial anew
                // next time, so the link comes back as soon as the network does.
                forget(&self.channels, addr);
                Err(false)
            }
        }
    }

    fn channel(&self, addr: &str) -> Result<Channel, String> {
        channel(&self.channels, addr)
    }

    /// The batching link to the peer at `addr`, started on first use.
    fn link(&self, addr: &str) -> Link {
        let mut links = self.links.lock().unwrap_or_else(|e| e.into_inner());
        links
            .entry(addr.to_string())
            .or_insert_with(|| {
                Link::start(Arc::new(AddressDialer {
                    channels: self.channels.clone(),
                    addr: addr.to_string(),
                }))
            })
            .clone()
    }
}

/// The shared channel to `addr`, created (not yet connected) when there is none.
fn channel(channels: &ChannelMap, addr: &str) -> Result<Channel, String> {
    let mut map = channels.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(tls) = &map.tls {
        let version = tls.version();
        if version != map.tls_version {
            map.by_address.clear();
            map.tls_version = version;
        }
    }
    if let Some(c) = map.by_address.get(addr) {
        return Ok(c.clone());
    }
    let channel = endpoint(addr, map.tls.as_deref())?.connect_lazy();
    map.by_address.insert(addr.to_string(), channel.clone());
    Ok(channel)
}

/// How peers are dialled.
fn endpoint(addr: &str, tls: Option<&crate::tls::Tls>) -> Result<Endpoint, String> {
    let scheme = if tls.is_some() { "https" } else { "http" };
    let url = match addr.split_once("://") {
        Some((_, rest)) => format!("{scheme}://{rest}"),
        None => format!("{scheme}://{addr}"),
    };
    let mut endpoint = Endpoint::from_shared(url)
        .map_err(|e| format!("bad peer address {addr}: {e}"))?
        .tcp_nodelay(true)
        // A SYN lost to a cut network is sent again after 1 s, then 3 s: a dial gives
        // up before the second retry, and the next call dials anew.
        .connect_timeout(Duration::from_millis(1500))
        .tcp_keepalive(Some(Duration::from_secs(10)))
        .tcp_keepalive_interval(Some(Duration::from_secs(2)))
        .tcp_keepalive_retries(Some(3))
        // HTTP/2 PINGs find a connection that went silent while idle, too.
        .http2_keep_alive_interval(Duration::from_secs(5))
        .keep_alive_timeout(Duration::from_secs(10))
        .keep_alive_while_idle(true)
        .initial_stream_window_size(Some(8 << 20))
        .initial_connection_window_size(Some(32 << 20));
    if let Some(tls) = tls {
        endpoint = endpoint
            .tls_config(tls.client().1)
            .map_err(|e| format!("TLS to peer {addr}: {e}"))?;
    }
    Ok(endpoint)
}

/// Drops the shared channel to `addr`: the next call dials a new connection (calls
/// already on the old one finish or fail there).
fn forget(channels: &ChannelMap, addr: &str) {
    channels
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .by_address
        .remove(addr);
}

/// A link's source of connections to one address.
pub(super) struct AddressDialer {
    channels: ChannelMap,
    addr: String,
}

impl AddressDialer {
    /// A dialer of its own (no shared channels) for `addr`.
    #[cfg(test)]
    pub(super) fn alone(addr: &str) -> Self {
        Self {
            channels: ChannelMap::default(),
            addr: addr.to_string(),
        }
    }
}

impl Dialer for AddressDialer {
    fn channel(&self) -> Result<Channel, Status> {
        channel(&self.channels, &self.addr).map_err(Status::invalid_argument)
    }

    fn forget(&self) {
        forget(&self.channels, &self.addr);
    }
}

/// How long a metadata proposal sent on to the leader may take.
const PROPOSE_TIMEOUT: Duration = Duration::from_secs(10);

/// What a metadata leader answers a proposal with: the applied entry's result, or why
/// it was not written (not the leader any more, no quorum, shutting down).
pub type MetadataWriteResult =
    Result<AppendResult, RaftError<u64, ClientWriteError<u64, BasicNode>>>;

/// The network of one Raft group.
#[derive(Clone)]
pub struct GroupNetwork {
    group: u64,
    channels: PeerChannels,
}

impl GroupNetwork {
    /// The network for `group`, over shared peer channels.
    pub fn new(group: u64, channels: PeerChannels) -> Self {
        Self { group, channels }
    }
}

impl RaftNetworkFactory<TypeConfig> for GroupNetwork {
    type Network = PeerConnection;

    async fn new_client(&mut self, target: u64, node: &BasicNode) -> PeerConnection {
        PeerConnection {
            group: self.group,
            target,
            addr: node.addr.clone(),
            channels: self.channels.clone(),
            link: self.channels.link(&node.addr),
        }
    }
}

/// A group's connection to one peer.
pub struct PeerConnection {
    group: u64,
    target: u64,
    addr: String,
    channels: PeerChannels,
    link: Link,
}

type RpcErr<E = RaftError<u64>> = RPCError<u64, BasicNode, E>;

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct Msg(String);

impl PeerConnection {
    /// Why no RPC goes to the peer now, if one should not.
    fn check(&self) -> Result<(), Msg> {
        if self.channels.is_cut(&self.addr) {
            return Err(Msg(format!("link to {} is cut", self.addr)));
        }
        if self.channels.is_down(self.target) {
            return Err(Msg(format!("broker {} is down", self.target)));
        }
        // A broker still opening its replicas (a restart) answers most partition groups'
        // RPCs with "not running yet"; thousands of groups retrying those twice a second
        // slowed every broker's opening. They wait until it says it is open.
        if self.group != METADATA_GROUP && self.channels.is_opening(self.target) {
            return Err(Msg(format!(
                "broker {} is still opening its replicas",
                self.target
            )));
        }
        Ok(())
    }

    /// A JSON request for this connection's group.
    fn json_request<T: Serialize>(&self, rpc: &T) -> pb::RaftRequest {
        pb::RaftRequest {
            group: self.group,
            json: Bytes::from(serde_json::to_vec(rpc).expect("plain data serializes")),
        }
    }

    /// A client for the peer, or the unreachable error to report.
    fn connect<E: std::error::Error>(&self) -> Result<RaftPeerClient<Channel>, RpcErr<E>> {
        self.check()
            .and_then(|()| self.channels.channel(&self.addr).map_err(Msg))
            .map(|c| {
                RaftPeerClient::new(c)
                    .max_decoding_message_size(usize::MAX)
                    .max_encoding_message_size(usize::MAX)
            })
            .map_err(|e| RPCError::Unreachable(Unreachable::new(&e)))
    }

    /// Sends one call over the peer's link and decodes its answer.
    async fn exchange<T, E>(
        &self,
        body: Body,
        bytes: usize,
        option: &RPCOption,
    ) -> Result<T, RpcErr<E>>
    where
        T: serde::de::DeserializeOwned,
        E: std::error::Error + serde::de::DeserializeOwned,
    {
        self.check()
            .map_err(|e| RPCError::Unreachable(Unreachable::new(&e)))?;
        let json = self
            .link
            .call(body, bytes, option.hard_ttl())
            .await
            .map_err(|s| status_error(&s))?;
        self.decode(&json)
    }

    /// Decodes a reply, turning the peer's Raft error into a remote error.
    fn reply<T, E>(&self, reply: Result<Response<pb::RaftReply>, Status>) -> Result<T, RpcErr<E>>
    where
        T: serde::de::DeserializeOwned,
        E: std::error::Error + serde::de::DeserializeOwned,
    {
        let reply = reply.map_err(|s| status_error(&s))?.into_inner();
        self.decode(&reply.json)
    }

    /// Decodes the JSON of an openraft result, the peer's Raft error as a remote error.
    fn decode<T, E>(&self, json: &[u8]) -> Result<T, RpcErr<E>>
    where
        T: serde::de::DeserializeOwned,
        E: std::error::Error + serde::de::DeserializeOwned,
    {
        let result: Result<T, E> =
            serde_json::from_slice(json).map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        result.map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
    }
}

fn status_error<E: std::error::Error>(s: &Status) -> RpcErr<E> {
    match s.code() {
        // Down, or the group is not (yet) running there: back off and retry.
        tonic::Code::Unavailable | tonic::Code::NotFound => {
            RPCError::Unreachable(Unreachable::new(&Msg(s.to_string())))
        }
        _ => RPCError::Network(NetworkError::new(&Msg(s.to_string()))),
    }
}

/// Runs an RPC in a task of its own. When openraft gives up waiting (its timeout), the
/// call still runs to its answer or to the server's deadline (the `grpc-timeout` it
/// carries) instead of being dropped mid-flight: a dropped call resets its HTTP/2
/// stream, and the server's guard against rapid resets closes a connection that sees
/// many, failing every other group's traffic on it.
async fn detached<T: Send + 'static>(
    call: impl std::future::Future<Output = Result<Response<T>, Status>> + Send + 'static,
) -> Result<Response<T>, Status> {
    tokio::spawn(call)
        .await
        .unwrap_or_else(|e| Err(Status::internal(format!("peer call failed: {e}"))))
}

fn with_timeout<T>(msg: T, option: &RPCOption) -> Request<T> {
    let mut r = Request::new(msg);
    r.set_timeout(option.hard_ttl());
    r
}

/// Bytes of entries one AppendEntries carries at most (one entry always goes, whatever
/// its size). openraft's RPC timeout is one heartbeat interval; 32 entries of large
/// batches (8 MiB of 1 KiB records) missed it on a loaded two-core machine, were sent
/// again from scratch, missed it again, and the followers started elections.
const MAX_APPEND_BYTES: usize = 1 << 20;

impl RaftNetwork<TypeConfig> for PeerConnection {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<u64>, RpcErr> {
        let header = AppendHeader {
            vote: rpc.vote,
            prev_log_id: rpc.prev_log_id,
            leader_commit: rpc.leader_commit,
        };
        let mut entries = Vec::with_capacity(rpc.entries.len());
        let mut bytes = 0;
        for e in &rpc.entries {
            let batch = encode(e).map_err(|m| RPCError::Network(NetworkError::new(&Msg(m))))?;
            bytes += batch.len();
            if bytes > MAX_APPEND_BYTES && !entries.is_empty() {
                // Too much for one round within the RPC timeout: openraft sends fewer
                // entries per request for a while (its entries hint) and retries at once.
                return Err(RPCError::PayloadTooLarge(
                    PayloadTooLarge::new_entries_hint(entries.len() as u64),
                ));
            }
            entries.push(pb::RaftEntry {
                index: e.log_id.index,
                term: e.log_id.leader_id.term,
                batch,
            });
        }
        let request = pb::AppendEntriesRequest {
            group: self.group,
            header: Bytes::from(serde_json::to_vec(&header).expect("plain data serializes")),
            entries,
        };
        self.exchange(Body::Append(request), bytes + 64, &option)
            .await
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<InstallSnapshotResponse<u64>, RpcErr<RaftError<u64, InstallSnapshotError>>> {
        let mut client = self.connect()?;
        let request = with_timeout(self.json_request(&rpc), &option);
        let reply = detached(async move { client.install_snapshot(request).await }).await;
        self.reply(reply)
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<u64>,
        option: RPCOption,
    ) -> Result<VoteResponse<u64>, RpcErr> {
        let request = self.json_request(&rpc);
        let bytes = request.json.len() + 16;
        self.exchange(Body::Vote(request), bytes, &option).await
    }
}

/// The Raft groups this broker runs, by group id.
#[derive(Clone, Default)]
pub struct RaftGroups {
    groups: Arc<RwLock<HashMap<u64, Raft<TypeConfig>>>>,
    /// The broker's view of its peers (whether a group's leader is down), once set.
    liveness: Arc<std::sync::OnceLock<Arc<Liveness>>>,
}

impl RaftGroups {
    /// Gives the groups the broker's liveness view (see `vote`).
    pub fn set_liveness(&self, liveness: Arc<Liveness>) {
        let _ = self.liveness.set(liveness);
    }

    /// Registers a group so peers' requests reach it.
    pub fn insert(&self, group: u64, raft: Raft<TypeConfig>) {
        self.groups
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(group, raft);
    }

    /// Unregisters a group.
    pub fn remove(&self, group: u64) -> Option<Raft<TypeConfig>> {
        self.groups
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&group)
    }

    fn get(&self, group: u64) -> Result<Raft<TypeConfig>, Status> {
        self.groups
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(&group)
            .cloned()
            .ok_or_else(|| Status::not_found(format!("raft group {group} is not running here")))
    }
}

/// What a broker does with a join request (see [`PeerService::with_joins`]).
pub type JoinHandler = Arc<
    dyn Fn(u32, String) -> futures::future::BoxFuture<'static, Result<(), Status>> + Send + Sync,
>;

/// The peer-facing service.
pub struct PeerService {
    groups: RaftGroups,
    joins: Option<JoinHandler>,
    liveness: Option<Arc<Liveness>>,
    /// Peer streams end when these are stopped (so a stopping server can drain).
    tasks: Option<Tasks>,
}

impl PeerService {
    /// Serves the given groups.
    pub fn new(groups: RaftGroups) -> Self {
        Self {
            groups,
            joins: None,
            liveness: None,
            tasks: None,
        }
    }

    /// Ends peer streams when `tasks` are stopped.
    pub fn with_tasks(mut self, tasks: Tasks) -> Self {
        self.tasks = Some(tasks);
        self
    }

    /// Answers node heartbeats, recording them in `liveness`.
    pub fn with_liveness(mut self, liveness: Arc<Liveness>) -> Self {
        self.liveness = Some(liveness);
        self
    }

    /// Answers join requests with `handler` (without one, they are refused).
    pub fn with_joins(mut self, handler: JoinHandler) -> Self {
        self.joins = Some(handler);
        self
    }
}

impl PeerService {
    /// The group a JSON request is for, and the request.
    fn json_rpc<T: serde::de::DeserializeOwned>(
        &self,
        request: Request<pb::RaftRequest>,
    ) -> Result<(Raft<TypeConfig>, T), Status> {
        let req = request.into_inner();
        let raft = self.groups.get(req.group)?;
        let rpc = serde_json::from_slice(&req.json).map_err(bad_request)?;
        Ok((raft, rpc))
    }
}

fn to_json<T: Serialize>(value: &T) -> Result<Bytes, Status> {
    serde_json::to_vec(value)
        .map(Bytes::from)
        .map_err(|e| Status::internal(e.to_string()))
}

fn json_reply<T: Serialize>(value: &T) -> Result<Response<pb::RaftReply>, Status> {
    Ok(Response::new(pb::RaftReply {
        json: to_json(value)?,
    }))
}

fn bad_request(e: impl std::fmt::Display) -> Status {
    Status::invalid_argument(e.to_string())
}

/// Runs one AppendEntries on its group; returns the JSON of openraft's result.
async fn append(groups: &RaftGroups, req: pb::AppendEntriesRequest) -> Result<Bytes, Status> {
    let raft = groups.get(req.group)?;
    let header: AppendHeader = serde_json::from_slice(&req.header).map_err(bad_request)?;
    let entries = req
        .entries
        .into_iter()
        .map(|e| {
            // The one check of the entry's bytes on this replica: its checksum (the
            // leader validated its records; the log store trusts what passes here).
            rafka_proto::batch::RecordBatch::parse_trusted(&e.batch)
                .map_err(|err| format!("entry {}: {err}", e.index))?;
            decode_with(
                e.batch,
                LogId::new(CommittedLeaderId::new(e.term, 0), e.index),
            )
        })
        .collect::<Result<Vec<_>, _>>()
        .map_err(bad_request)?;
    let rpc = AppendEntriesRequest {
        vote: header.vote,
        prev_log_id: header.prev_log_id,
        leader_commit: header.leader_commit,
        entries,
    };
    to_json(&raft.append_entries(rpc).await)
}

/// Runs one Vote on its group; returns the JSON of openraft's result. A refusal may make
/// this replica stand itself (see `step_up`).
async fn vote(groups: &RaftGroups, req: pb::RaftRequest) -> Result<Bytes, Status> {
    let raft = groups.get(req.group)?;
    let rpc: VoteRequest<u64> = serde_json::from_slice(&req.json).map_err(bad_request)?;
    let asked = (rpc.last_log_id, rpc.vote.leader_id().term);
    let answer = raft.vote(rpc).await;
    if let (Ok(r), Some(liveness)) = (&answer, groups.liveness.get()) {
        super::step_up::after_vote(&raft, liveness, req.group, asked, r);
    }
    to_json(&answer)
}

/// Answers one call of an `Exchange` stream.
async fn answer(groups: &RaftGroups, call: pb::PeerCall) -> pb::PeerAnswer {
    let result = match call.body {
        Some(Body::Append(req)) => {
            let started = Instant::now();
            let r = append(groups, req).await;
            crate::metrics::STAGES.peer_append.since(started);
            r
        }
        Some(Body::Vote(req)) => vote(groups, req).await,
        None => Err(Status::invalid_argument("a peer call without a body")),
    };
    match result {
        Ok(json) => pb::PeerAnswer {
            id: call.id,
            json,
            ..Default::default()
        },
        Err(status) => pb::PeerAnswer {
            id: call.id,
            code: status.code() as i32,
            error: status.message().to_string(),
            ..Default::default()
        },
    }
}

/// Answers a peer's calls from `inbound` as each is ready, batching answers that are
/// ready together, until the peer closes its side or this broker stops.
fn exchange_stream(
    groups: RaftGroups,
    mut inbound: tonic::Streaming<pb::PeerCalls>,
    tasks: Option<Tasks>,
) -> ExchangeStream {
    let (tx, rx) = mpsc::unbounded_channel::<pb::PeerAnswer>();
    let reader = async move {
        while let Ok(Some(message)) = inbound.message().await {
            for call in message.calls {
                let (groups, tx) = (groups.clone(), tx.clone());
                tokio::spawn(async move {
                    let _ = tx.send(answer(&groups, call).await);
                });
            }
        }
    };
    match tasks {
        Some(tasks) => tasks.spawn_until_stopped(reader),
        None => {
            tokio::spawn(reader);
        }
    }
    Box::pin(futures::stream::unfold(rx, |mut rx| async move {
        let first = rx.recv().await?;
        let mut answers = vec![first];
        while answers.len() < MAX_ANSWERS {
            match rx.try_recv() {
                Ok(a) => answers.push(a),
                Err(_) => break,
            }
        }
        Some((Ok(pb::PeerAnswers { answers }), rx))
    }))
}

/// Answers one `Exchange` message carries at most.
const MAX_ANSWERS: usize = 1024;

/// The stream of answers of one `Exchange`.
type ExchangeStream =
    std::pin::Pin<Box<dyn futures::Stream<Item = Result<pb::PeerAnswers, Status>> + Send>>;

#[tonic::async_trait]
impl RaftPeer for PeerService {
    type ExchangeStream = ExchangeStream;

    async fn exchange(
        &self,
        request: Request<tonic::Streaming<pb::PeerCalls>>,
    ) -> Result<Response<ExchangeStream>, Status> {
        Ok(Response::new(exchange_stream(
            self.groups.clone(),
            request.into_inner(),
            self.tasks.clone(),
        )))
    }

    async fn install_snapshot(
        &self,
        request: Request<pb::RaftRequest>,
    ) -> Result<Response<pb::RaftReply>, Status> {
        let (raft, rpc) = self.json_rpc::<InstallSnapshotRequest<TypeConfig>>(request)?;
        json_reply(&raft.install_snapshot(rpc).await)
    }

    async fn join(
        &self,
        request: Request<pb::JoinRequest>,
    ) -> Result<Response<pb::JoinReply>, Status> {
        let req = request.into_inner();
        let handler = self
            .joins
            .as_ref()
            .ok_or_else(|| Status::unimplemented("this broker takes no join requests"))?;
        handler(req.id, req.address).await?;
        Ok(Response::new(pb::JoinReply {}))
    }

    async fn node_heartbeat(
        &self,
        request: Request<pb::NodeStatus>,
    ) -> Result<Response<pb::NodeStatus>, Status> {
        let liveness = self
            .liveness
            .as_ref()
            .ok_or_else(|| Status::unimplemented("this broker takes no node heartbeats"))?;
        let req = request.into_inner();
        let now = Instant::now();
        liveness.heard(req.from, req.incarnation, req.leading, req.opening, now);
        liveness.heard_sees(req.from, req.alive);
        Ok(Response::new(pb::NodeStatus {
            from: liveness.me(),
            incarnation: liveness.incarnation(),
            leading: liveness.leading_for(req.from),
            opening: liveness.is_opening(),
            alive: liveness.alive_peers(now),
        }))
    }

    async fn propose_metadata(
        &self,
        request: Request<pb::ProposeRequest>,
    ) -> Result<Response<pb::RaftReply>, Status> {
        let batch = request.into_inner().batch;
        rafka_proto::batch::RecordBatch::parse(&batch).map_err(bad_request)?;
        let raft = self.groups.get(METADATA_GROUP)?;
        let result: MetadataWriteResult = raft.client_write(BatchData(batch)).await.map(|r| r.data);
        json_reply(&result)
    }
}
