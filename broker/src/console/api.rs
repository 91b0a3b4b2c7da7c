//! The console's JSON API. Errors are `{"error": "..."}` with the HTTP status of the
//! cluster's answer (400 bad input, 404 unknown topic or partition, 409 a stopped group
//! required, 503 no leader now).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use base64::Engine;
use rafka_client::{Admin, ClientError, Consumer, ConsumerConfig, ResetTo, SeekTo, TopicPartition};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use tokio::sync::OnceCell;
use tonic::Code;

use crate::cluster::node::ClusterNode;
use crate::error::shown;

/// Most records one browse returns.
const MAX_MESSAGES: usize = 500;
/// Bytes of a key, value or header value shown; the rest is cut (and flagged).
const MAX_SHOWN: usize = 64 << 10;
/// Longest a browse waits for records.
const BROWSE_WAIT: Duration = Duration::from_secs(2);
/// Longest a scrape waits for other leaders' high watermarks (groups' lag).
const ENDS_WAIT: Duration = Duration::from_secs(1);

/// What the API handlers share: this broker and a client of its cluster.
#[derive(Clone)]
pub struct Console {
    node: Arc<ClusterNode>,
    address: String,
    admin: Arc<OnceCell<Admin>>,
    /// TLS to `address` (the broker's own CA and certificate), when it speaks TLS.
    tls: Option<rafka_client::TlsConfig>,
    /// With auth on, every API call acts as the user whose bearer token it carries
    /// (from the console's login), so the user sees and does what the ACLs allow them.
    auth: bool,
    /// Admin clients by bearer token (a few users at a time).
    by_token: Arc<tokio::sync::Mutex<std::collections::HashMap<String, Admin>>>,
}

tokio::task_local! {
    /// The bearer token of the API request being served.
    static BEARER: Option<String>;
}

/// Admin clients kept per token at most.
const TOKEN_CLIENTS: usize = 64;

/// Runs an API request with its bearer token in scope (see [`Console::admin`]).
pub(super) async fn with_bearer(
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let token = request
        .headers()
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(|t| t.trim().to_string())
        .filter(|t| !t.is_empty());
    BEARER.scope(token, next.run(request)).await
}

impl Console {
    /// A console of `node`, reaching the cluster through `address` (connected on first
    /// use: the gRPC port may not serve yet when the HTTP port opens).
    pub fn new(
        node: Arc<ClusterNode>,
        address: String,
        tls: Option<rafka_client::TlsConfig>,
        auth: bool,
    ) -> Self {
        Self {
            node,
            address,
            admin: Arc::default(),
            tls,
            auth,
            by_token: Arc::default(),
        }
    }

    /// The credentials of the request being served (with auth on: its bearer token).
    fn credentials(&self) -> Option<rafka_client::Credentials> {
        if !self.auth {
            return None;
        }
        BEARER
            .try_with(|t| t.clone())
            .ok()
            .flatten()
            .map(rafka_client::Credentials::Token)
    }

    /// The high watermark of each of `wanted`: from this broker's replica where it has
    /// one, else from the partition's leader (asked at most [`ENDS_WAIT`]); partitions
    /// not answered for are left out.
    pub async fn partition_ends(
        &self,
        wanted: &BTreeSet<(String, u32)>,
    ) -> BTreeMap<(String, u32), u64> {
        let mut ends = BTreeMap::new();
        let mut remote: BTreeSet<&str> = BTreeSet::new();
        for (t, p) in wanted {
            match self.node.partition(t, *p).await {
                Some(r) => {
                    ends.insert((t.clone(), *p), r.high_watermark());
                }
                None => {
                    remote.insert(t);
                }
            }
        }
        if remote.is_empty() {
            return ends;
        }
        let asked = async {
            let admin = self.admin().await.ok()?;
            let topics: Vec<&str> = remote.into_iter().collect();
            let meta = admin.metadata(&topics).await.ok()?;
            let leaders: BTreeSet<u32> = meta
                .topics
                .iter()
                .flat_map(|t| t.partitions.iter().map(|p| p.leader))
                .filter(|&l| l != 0 && l != self.node.id())
                .collect();
            let mut found = Vec::new();
            for leader in leaders {
                if let Ok(m) = admin.metadata_from(leader, &topics).await {
                    for t in m.topics {
                        for p in t.partitions.into_iter().filter(|p| p.leader == leader) {
                            found.push(((t.name.clone(), p.partition), p.high_watermark));
                        }
                    }
                }
            }
            Some(found)
        };
        if let Ok(Some(found)) = tokio::time::timeout(ENDS_WAIT, asked).await {
            for (tp, hw) in found {
                if wanted.contains(&tp) {
                    ends.entry(tp).or_insert(hw);
                }
            }
        }
        ends
    }

    /// An admin client acting for the request's user (with auth on), else the
    /// console's own.
    async fn admin(&self) -> Result<Admin, ApiError> {
        if !self.auth {
            return Ok(self
                .admin
                .get_or_try_init(|| {
                    Admin::connect_with(
                        &self.address,
                        rafka_client::AdminConfig {
                            tls: self.tls.clone(),
                            credentials: None,
                        },
                    )
                })
                .await?
                .clone());
        }
        let Some(rafka_client::Credentials::Token(token)) = self.credentials() else {
            return Err(ApiError(
                StatusCode::UNAUTHORIZED,
                "log in: this cluster needs a token".into(),
            ));
        };
        let mut clients = self.by_token.lock().await;
        if let Some(a) = clients.get(&token) {
            return Ok(a.clone());
        }
        if clients.len() >= TOKEN_CLIENTS {
            clients.clear();
        }
        let admin = Admin::connect_with(
            &self.address,
            rafka_client::AdminConfig {
                tls: self.tls.clone(),
                credentials: Some(rafka_client::Credentials::Token(token.clone())),
            },
        )
        .await?;
        clients.insert(token, admin.clone());
        Ok(admin)
    }
}

/// An API failure: its status and a message naming the problem.
pub struct ApiError(StatusCode, String);

impl ApiError {
    fn bad(message: impl Into<String>) -> Self {
        Self(StatusCode::BAD_REQUEST, message.into())
    }

    fn not_found(message: impl Into<String>) -> Self {
        Self(StatusCode::NOT_FOUND, message.into())
    }
}

impl From<ClientError> for ApiError {
    fn from(e: ClientError) -> Self {
        let status = match &e {
            ClientError::InvalidArgument(_) => StatusCode::BAD_REQUEST,
            ClientError::Connect { .. } | ClientError::NotLeader { .. } => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            _ => match e.code() {
                Some(Code::InvalidArgument | Code::OutOfRange) => StatusCode::BAD_REQUEST,
                Some(Code::NotFound) => StatusCode::NOT_FOUND,
                Some(Code::AlreadyExists | Code::FailedPrecondition | Code::Aborted) => {
                    StatusCode::CONFLICT
                }
                Some(Code::PermissionDenied) => StatusCode::FORBIDDEN,
                Some(Code::Unauthenticated) => StatusCode::UNAUTHORIZED,
                Some(Code::ResourceExhausted) => StatusCode::TOO_MANY_REQUESTS,
                Some(Code::Unavailable | Code::DeadlineExceeded) => StatusCode::SERVICE_UNAVAILABLE,
                _ => StatusCode::INTERNAL_SERVER_ERROR,
            },
        };
        Self(status, e.to_string())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, Json(json!({ "error": self.1 }))).into_response()
    }
}

type ApiResult = Result<Json<Value>, ApiError>;

pub(super) fn routes(console: Console) -> axum::Router {
    Router::new()
        .route("/cluster", get(cluster))
        .route("/topics", get(topics).post(create_topic))
        .route("/topics/{name}", get(topic).delete(delete_topic))
        .route("/topics/{name}/configs", put(alter_configs))
        .route("/topics/{name}/messages", get(messages))
        .route("/groups", get(groups))
        .route("/groups/{name}", get(group))
        .route("/groups/{name}/reset", post(reset_group))
        .fallback(|| async { ApiError::not_found("no such API route") })
        .layer(axum::middleware::from_fn(with_bearer))
        .with_state(console)
}

/// Brokers (up or down as this broker sees them), partition counts, this broker's
/// traffic counters (the overview's charts difference them).
async fn cluster(State(c): State<Console>) -> ApiResult {
    let meta = c.admin().await?.metadata(&[]).await?;
    let (mut partitions, mut under, mut offline) = (0u64, 0u64, 0u64);
    let mut leaders: BTreeMap<u32, u64> = BTreeMap::new();
    for t in &meta.topics {
        for p in &t.partitions {
            partitions += 1;
            if p.leader == 0 || !c.node.is_broker_up(p.leader) {
                offline += 1;
            } else {
                *leaders.entry(p.leader).or_default() += 1;
                if p.replicas.iter().any(|&r| !c.node.is_broker_up(r)) {
                    under += 1;
                }
            }
        }
    }
    let brokers: Vec<Value> = meta
        .brokers
        .iter()
        .map(|b| {
            json!({
                "id": b.node_id,
                "address": b.address,
                "up": c.node.is_broker_up(b.node_id),
                "voter": meta.metadata_voters.contains(&b.node_id),
                "controller": b.node_id == meta.controller_id,
                "leaders": leaders.get(&b.node_id).copied().unwrap_or(0),
            })
        })
        .collect();
    Ok(Json(json!({
        "node_id": c.node.id(),
        "controller": meta.controller_id,
        "brokers": brokers,
        "topics": meta.topics.len(),
        "partitions": partitions,
        "under_replicated": under,
        "offline": offline,
        "traffic": c.node.traffic_totals(),
    })))
}

async fn topics(State(c): State<Console>) -> ApiResult {
    let topics = c.admin().await?.describe_topics(&[]).await?;
    let list: Vec<Value> = topics
        .iter()
        .map(|t| {
            json!({
                "name": t.name,
                "partitions": t.partitions.len(),
                "replication_factor": t.partitions.first().map_or(0, |p| p.replicas.len()),
                "configs": t.configs.iter().collect::<BTreeMap<_, _>>(),
            })
        })
        .collect();
    Ok(Json(json!({ "topics": list })))
}

#[derive(Deserialize)]
struct NewTopic {
    name: String,
    #[serde(default)]
    partitions: u32,
    #[serde(default)]
    replication_factor: u32,
    #[serde(default)]
    configs: BTreeMap<String, String>,
}

async fn create_topic(
    State(c): State<Console>,
    Json(t): Json<NewTopic>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let created = c
        .admin()
        .await?
        .create_topic(&t.name, t.partitions, t.replication_factor, t.configs)
        .await?;
    Ok((StatusCode::CREATED, Json(json!({ "name": created.name }))))
}

async fn delete_topic(State(c): State<Console>, Path(name): Path<String>) -> ApiResult {
    c.admin().await?.delete_topic(&name).await?;
    Ok(Json(json!({ "deleted": name })))
}

/// A topic's configs and partitions; each partition as its leader reports it (offsets,
/// size, followers' lag).
async fn topic(State(c): State<Console>, Path(name): Path<String>) -> ApiResult {
    let admin = c.admin().await?;
    let meta = admin.metadata(&[&name]).await?;
    let Some(t) = meta.topics.into_iter().find(|t| t.name == name) else {
        return Err(ApiError::not_found(format!(
            "no topic named \"{}\"",
            shown(&name)
        )));
    };
    // Each leader knows its partitions' offsets and size; ask each leader once.
    let mut by_leader: BTreeMap<u32, BTreeMap<u32, rafka_proto::v1::PartitionInfo>> =
        BTreeMap::new();
    for id in t.partitions.iter().map(|p| p.leader).filter(|&l| l != 0) {
        if by_leader.contains_key(&id) || !c.node.is_broker_up(id) {
            continue;
        }
        if let Ok(m) = admin.metadata_from(id, &[&name]).await {
            let parts = m
                .topics
                .into_iter()
                .filter(|x| x.name == name)
                .flat_map(|x| x.partitions)
                .map(|p| (p.partition, p))
                .collect();
            by_leader.insert(id, parts);
        }
    }
    let partitions: Vec<Value> = t
        .partitions
        .iter()
        .map(|p| {
            let seen = by_leader.get(&p.leader).and_then(|m| m.get(&p.partition));
            let info = seen.unwrap_or(p);
            let down: Vec<u32> = p
                .replicas
                .iter()
                .copied()
                .filter(|&r| !c.node.is_broker_up(r))
                .collect();
            json!({
                "partition": p.partition,
                "leader": p.leader,
                "replicas": p.replicas,
                "replicas_down": down,
                "moving_to": p.moving_to,
                "log_start_offset": info.log_start_offset,
                "high_watermark": info.high_watermark,
                "size_bytes": info.size_bytes,
                "follower_lag": info.replica_progress.iter()
                    .map(|r| json!({"broker": r.broker, "entries": r.lag_entries}))
                    .collect::<Vec<_>>(),
            })
        })
        .collect();
    Ok(Json(json!({
        "name": t.name,
        "configs": t.configs.iter().collect::<BTreeMap<_, _>>(),
        "partitions": partitions,
    })))
}

#[derive(Deserialize)]
struct Configs {
    configs: BTreeMap<String, String>,
}

async fn alter_configs(
    State(c): State<Console>,
    Path(name): Path<String>,
    Json(body): Json<Configs>,
) -> ApiResult {
    let t = c
        .admin()
        .await?
        .alter_topic_config(&name, body.configs)
        .await?;
    Ok(Json(json!({
        "name": t.name,
        "configs": t.configs.iter().collect::<BTreeMap<_, _>>(),
    })))
}

#[derive(Deserialize)]
struct Browse {
    #[serde(default)]
    partition: u32,
    /// First offset shown; neither this nor `timestamp`: the oldest record.
    offset: Option<u64>,
    /// The first record at or after this time (ms since the epoch).
    timestamp: Option<i64>,
    /// Records shown (1 to 500, 50 by default).
    limit: Option<usize>,
}

/// A key, value or header value: base64 of (at most [`MAX_SHOWN`] of) its bytes.
#[derive(Serialize)]
struct Encoded {
    base64: String,
    size: usize,
    truncated: bool,
}

fn encoded(bytes: &[u8]) -> Encoded {
    let cut = &bytes[..bytes.len().min(MAX_SHOWN)];
    Encoded {
        base64: base64::engine::general_purpose::STANDARD.encode(cut),
        size: bytes.len(),
        truncated: cut.len() < bytes.len(),
    }
}

/// Records of one partition from an offset or a time, read with a group-less consumer
/// from the partition's leader; stops at `limit` records, at the high watermark, or
/// after [`BROWSE_WAIT`].
async fn messages(
    State(c): State<Console>,
    Path(name): Path<String>,
    Query(q): Query<Browse>,
) -> ApiResult {
    let limit = q.limit.unwrap_or(50);
    if !(1..=MAX_MESSAGES).contains(&limit) {
        return Err(ApiError::bad(format!(
            "limit {limit} is out of range: 1 to {MAX_MESSAGES}"
        )));
    }
    if q.offset.is_some() && q.timestamp.is_some() {
        return Err(ApiError::bad("give an offset or a timestamp, not both"));
    }
    let admin = c.admin().await?;
    let meta = admin.metadata(&[&name]).await?;
    let Some(t) = meta.topics.iter().find(|t| t.name == name) else {
        return Err(ApiError::not_found(format!(
            "no topic named \"{}\"",
            shown(&name)
        )));
    };
    if q.partition as usize >= t.partitions.len() {
        return Err(ApiError::not_found(format!(
            "topic \"{}\" has {} partition(s); there is no partition {}",
            shown(&name),
            t.partitions.len(),
            q.partition
        )));
    }
    let end = admin
        .list_offset(
            &name,
            q.partition,
            rafka_proto::v1::list_offsets_request::Spec::Latest(true),
        )
        .await?;
    let config = ConsumerConfig {
        fetch_max_wait: Duration::from_millis(200),
        max_partition_fetch_bytes: 1 << 20,
        fetch_max_bytes: 1 << 20,
        auto_commit_interval: None,
        tls: c.tls.clone(),
        credentials: c.credentials(),
        ..Default::default()
    };
    let mut consumer = Consumer::connect(&c.address, config).await?;
    let tp = TopicPartition::new(name.clone(), q.partition);
    consumer.assign([tp.clone()]);
    let from = match (q.offset, q.timestamp) {
        (Some(o), _) => SeekTo::Offset(o.max(end.log_start_offset)),
        (_, Some(ts)) => SeekTo::Timestamp(ts),
        _ => SeekTo::Earliest,
    };
    consumer.seek(&tp, from).await?;
    let deadline = Instant::now() + BROWSE_WAIT;
    let mut records = Vec::new();
    while records.len() < limit {
        if consumer
            .position(&tp)
            .is_some_and(|p| p >= end.high_watermark)
        {
            break;
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break;
        }
        records.extend(consumer.poll(left).await?);
    }
    records.truncate(limit);
    let next = records
        .last()
        .map(|r| r.offset + 1)
        .or(consumer.position(&tp));
    let list: Vec<Value> = records
        .iter()
        .map(|r| {
            json!({
                "offset": r.offset,
                "timestamp": r.timestamp,
                "key": r.key.as_deref().map(encoded),
                "value": r.value.as_deref().map(encoded),
                "headers": r.headers.iter()
                    .map(|h| json!({"key": h.key, "value": h.value.as_deref().map(encoded)}))
                    .collect::<Vec<_>>(),
            })
        })
        .collect();
    Ok(Json(json!({
        "topic": name,
        "partition": q.partition,
        "log_start_offset": end.log_start_offset,
        "high_watermark": end.high_watermark,
        "next_offset": next,
        "messages": list,
    })))
}

async fn groups(State(c): State<Console>) -> ApiResult {
    Ok(Json(
        json!({ "groups": c.admin().await?.list_groups().await? }),
    ))
}

/// A group's state, members with their partitions, and lag per committed partition.
async fn group(State(c): State<Console>, Path(name): Path<String>) -> ApiResult {
    let admin = c.admin().await?;
    let d = admin.describe_group(&name).await?;
    let lag = admin.group_lag(&name).await?;
    let members: Vec<Value> = d
        .members
        .iter()
        .map(|m| {
            json!({
                "member_id": m.member_id,
                "instance_id": m.instance_id,
                "topics": m.topics,
                "assignment": m.assignment.iter()
                    .map(|a| json!({"topic": a.topic, "partition": a.partition}))
                    .collect::<Vec<_>>(),
            })
        })
        .collect();
    let offsets: Vec<Value> = lag
        .iter()
        .map(|p| {
            json!({
                "topic": p.topic, "partition": p.partition, "committed": p.committed,
                "end": p.end, "lag": p.lag, "member": p.member,
            })
        })
        .collect();
    Ok(Json(json!({
        "group": name,
        "state": d.state,
        "epoch": d.epoch,
        "assignor": d.assignor,
        "members": members,
        "offsets": offsets,
        "total_lag": lag.iter().map(|p| p.lag).sum::<u64>(),
    })))
}

#[derive(Deserialize)]
struct Reset {
    topic: String,
    /// earliest | latest | offset | timestamp
    to: String,
    /// The offset or the time (ms since the epoch) for `offset` and `timestamp`.
    value: Option<i64>,
}

async fn reset_group(
    State(c): State<Console>,
    Path(name): Path<String>,
    Json(r): Json<Reset>,
) -> ApiResult {
    let to = match (r.to.as_str(), r.value) {
        ("earliest", _) => ResetTo::Earliest,
        ("latest", _) => ResetTo::Latest,
        ("offset", Some(v)) if v >= 0 => ResetTo::Offset(v as u64),
        ("timestamp", Some(v)) => ResetTo::Timestamp(v),
        ("offset" | "timestamp", _) => {
            return Err(ApiError::bad(format!(
                "`to: {}` needs a value (an offset of 0 or more, or ms since the epoch)",
                r.to
            )))
        }
        (other, _) => {
            return Err(ApiError::bad(format!(
                "unknown reset target \"{}\": earliest, latest, offset or timestamp",
                shown(other)
            )))
        }
    };
    let set = c
        .admin()
        .await?
        .reset_group_offsets(&name, &r.topic, to)
        .await?;
    let list: Vec<Value> = set
        .iter()
        .map(|(tp, o)| json!({"topic": tp.topic, "partition": tp.partition, "offset": o}))
        .collect();
    Ok(Json(json!({ "group": name, "offsets": list })))
}
