//! The Kafka-protocol listener: existing Kafka clients (librdkafka, kcat, the Java and
//! Python clients) over the same engine as the gRPC API.
//!
//! - `frame`   length-prefixed frames, request headers, ApiVersions' v0 fallback
//! - `errors`  broker errors in Kafka's error codes
//! - `batches` Kafka's CRC-32C record batches to and from rafka's stored form
//! - `data`    Produce, Fetch, ListOffsets, InitProducerId
//! - `meta`    ApiVersions, Metadata, topic admin, configs, DescribeCluster
//! - `groups`  FindCoordinator, offsets, group listing, KIP-848's heartbeat
//! - `classic` the classic group protocol (JoinGroup, SyncGroup, Heartbeat, LeaveGroup)
//! - `sasl`    SaslHandshake and SaslAuthenticate: OAUTHBEARER and PLAIN
//!
//! Codecs are the `kafka-protocol` crate's. A connection's requests are answered in the
//! order they came, as Kafka promises (an idempotent producer's produce requests run side
//! by side meanwhile); a malformed frame closes the connection with a log line and
//! touches nothing else.

mod batches;
mod classic;
mod data;
mod errors;
mod frame;
mod groups;
mod meta;
mod sasl;

pub(crate) use groups::KafkaState;

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use futures::StreamExt;
use kafka_protocol::messages::{ApiKey, RequestHeader, RequestKind, ResponseKind};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;

use super::Shared;

/// One decoded request and what it needs to be answered.
pub(crate) struct Call {
    /// The request's header (API, version, correlation id, client id).
    pub header: RequestHeader,
    /// The principal of the connection (none with auth off or before SASL).
    pub principal: Option<Arc<crate::auth::Principal>>,
}

impl Call {
    fn api(&self) -> ApiKey {
        ApiKey::try_from(self.header.request_api_key).unwrap_or(ApiKey::ApiVersions)
    }

    fn version(&self) -> i16 {
        self.header.request_api_version
    }
}

/// Serves Kafka clients on `listener` until the broker stops.
pub(crate) async fn serve(listener: TcpListener, shared: Arc<Shared>) {
    let local = listener.local_addr().ok();
    tracing::info!(?local, tls = shared.tls.is_some(), "kafka listener serving");
    match shared.tls.clone() {
        Some(tls) => {
            let mut incoming = Box::pin(tls.incoming(listener));
            while let Some(conn) = incoming.next().await {
                let Ok(stream) = conn else { continue };
                let from = stream
                    .get_ref()
                    .0
                    .peer_addr()
                    .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)));
                spawn_connection(&shared, stream, from);
            }
        }
        None => loop {
            match listener.accept().await {
                Ok((tcp, from)) => {
                    let _ = tcp.set_nodelay(true);
                    spawn_connection(&shared, tcp, from);
                }
                Err(e) => {
                    // Out of descriptors and the like: back off, keep serving.
                    tracing::warn!("kafka accept: {e}");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                }
            }
        },
    }
}

/// Keeps this broker's Kafka address in the cluster metadata: proposes it once the
/// broker is registered, and again should it differ; retries while the metadata has no
/// leader.
pub(crate) async fn register(shared: Arc<Shared>) {
    let Some(address) = shared.kafka_address.clone() else {
        return;
    };
    let id = shared.node.id();
    let mut state = shared.node.watch_state();
    loop {
        state.borrow_and_update();
        let recorded = shared.node.with_state(|s| {
            s.brokers
                .get(&id)
                .map(|b| b.kafka.as_deref() == Some(address.as_str()))
        });
        match recorded {
            Some(true) => {}
            // Not registered yet: its registration will change the state.
            None => {}
            Some(false) => {
                let cmd = crate::cluster::Command::SetKafkaAddress {
                    id,
                    address: Some(address.clone()),
                };
                if let Err(e) = shared.node.propose(&cmd).await {
                    tracing::debug!("recording the Kafka address {address}: {e}; retrying");
                    tokio::time::sleep(REGISTER_RETRY).await;
                    continue;
                }
                tracing::info!(%address, "kafka address recorded in the cluster metadata");
                continue;
            }
        }
        if state.changed().await.is_err() {
            return;
        }
    }
}

/// Ends classic-group sessions and overdue rebalances while no request comes.
pub(crate) async fn expire_groups(shared: Arc<Shared>) {
    let mut every = tokio::time::interval(classic::EXPIRE_EVERY);
    loop {
        every.tick().await;
        shared.kafka.classic.expire_all();
    }
}

/// Wait between tries to record the Kafka address while the metadata has no leader.
const REGISTER_RETRY: std::time::Duration = std::time::Duration::from_millis(500);

fn spawn_connection<S>(shared: &Arc<Shared>, stream: S, from: SocketAddr)
where
    S: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    let shared2 = shared.clone();
    shared.node.tasks().spawn_until_stopped(async move {
        if let Err(e) = connection(shared2, stream).await {
            tracing::info!(%from, "kafka connection closed: {e}");
        }
    });
}

/// Why a connection was closed by the broker.
#[derive(Debug, thiserror::Error)]
pub(crate) enum Closed {
    /// The socket failed or the client went away mid-frame.
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// The client sent what no Kafka client sends.
    #[error("malformed request: {0}")]
    Malformed(String),
    /// The connection's token expired and it did not authenticate again.
    #[error("its token expired (a client authenticates again before: KIP-368)")]
    Expired,
    /// A request's handler failed (panicked or was cancelled as the broker stopped).
    #[error("{0}")]
    Failed(String),
}

/// Most requests of a connection read ahead of their answers (Kafka clients keep up to
/// 5 produce requests in flight per connection; librdkafka's idempotent producer 5).
const MAX_IN_FLIGHT: usize = 16;

/// A request's answer in the making, queued in request order for the writer.
enum Answer {
    /// Ready to write (none: a produce with acks=0 is answered by silence).
    Ready(Option<Bytes>),
    /// A pipelined request's handler, running beside the connection's others.
    Running(tokio::task::JoinHandle<Result<Option<Bytes>, Closed>>),
    /// Signalled once every answer queued before it is written.
    Drained(tokio::sync::oneshot::Sender<()>),
}

/// Reads requests and writes their answers in the order they came, as Kafka promises,
/// until the client leaves or misbehaves.
///
/// Kafka handles a connection's requests one at a time; here an idempotent producer's
/// produce requests run side by side (see [`pipelined`]), so a client with several in
/// flight has them replicated together instead of each waiting out the last one's
/// commit. Every other request waits for those before it, and sees their effects.
async fn connection<S>(shared: Arc<Shared>, stream: S) -> Result<(), Closed>
where
    S: AsyncRead + AsyncWrite + Send + Unpin,
{
    let (rd, wr) = tokio::io::split(stream);
    let (tx, rx) = tokio::sync::mpsc::channel(MAX_IN_FLIGHT);
    futures::future::try_join(read_requests(shared, rd, tx), write_answers(wr, rx))
        .await
        .map(drop)
}

/// Whether a request may run beside the connection's other requests: an idempotent
/// producer's produce (acks=all, every batch with a producer id), whose batches each
/// partition's sequencer takes in sequence order whatever order they arrive in. Other
/// produce requests keep Kafka's one-at-a-time order, which is their only ordering.
fn pipelined(request: &RequestKind) -> bool {
    let RequestKind::Produce(r) = request else {
        return false;
    };
    r.acks == -1
        && r.transactional_id.as_ref().is_none_or(|t| t.is_empty())
        && r.topic_data.iter().all(|t| {
            t.partition_data
                .iter()
                .all(|p| p.records.as_deref().is_some_and(batches::idempotent))
        })
}

/// The reading half: decodes each request and answers it, or starts its handler when
/// [`pipelined`]; hands the answers to the writer in request order.
async fn read_requests<R>(
    shared: Arc<Shared>,
    mut rd: R,
    answers: tokio::sync::mpsc::Sender<Answer>,
) -> Result<(), Closed>
where
    R: AsyncRead + Unpin,
{
    let max = frame::max_frame(shared.config.max_request_bytes);
    let mut buf = BytesMut::with_capacity(64 * 1024);
    let mut sasl = sasl::Sasl::default();
    // Whether a pipelined request may still be running.
    let mut running = false;
    loop {
        let Some(body) = frame::read(&mut rd, &mut buf, max).await? else {
            return Ok(()); // the client closed between requests
        };
        let answer = match frame::header(&body)? {
            frame::Parsed::Request(header, mut rest) => {
                if sasl
                    .principal
                    .as_ref()
                    .is_some_and(|p| p.expires <= crate::auth::now())
                {
                    return Err(Closed::Expired);
                }
                let call = Call {
                    header,
                    principal: sasl.principal.clone(),
                };
                let api = call.api();
                let request = RequestKind::decode(api, &mut rest, call.version()).map_err(|e| {
                    Closed::Malformed(format!(
                        "{api:?} v{} (correlation id {}): {e}",
                        call.version(),
                        call.header.correlation_id
                    ))
                })?;
                if pipelined(&request) {
                    running = true;
                    let shared = shared.clone();
                    Answer::Running(tokio::spawn(async move {
                        let response = dispatch(&shared, &call, request).await?;
                        response
                            .map(|r| frame::response(&call.header, &r))
                            .transpose()
                    }))
                } else {
                    if std::mem::take(&mut running) {
                        let (done, drained) = tokio::sync::oneshot::channel();
                        if answers.send(Answer::Drained(done)).await.is_err()
                            || drained.await.is_err()
                        {
                            return Ok(()); // the writer stopped: its error is the answer
                        }
                    }
                    let response = match request {
                        RequestKind::SaslHandshake(r) => Some(ResponseKind::SaslHandshake(
                            sasl::handshake(&shared, &mut sasl, r),
                        )),
                        RequestKind::SaslAuthenticate(r) => Some(ResponseKind::SaslAuthenticate(
                            sasl::authenticate(&shared, &mut sasl, call.version(), r).await,
                        )),
                        other => dispatch(&shared, &call, other).await?,
                    };
                    Answer::Ready(
                        response
                            .map(|r| frame::response(&call.header, &r))
                            .transpose()?,
                    )
                }
            }
            frame::Parsed::UnsupportedApiVersions(correlation_id) => Answer::Ready(Some(
                frame::api_versions_v0_error(correlation_id, meta::supported()),
            )),
        };
        if answers.send(answer).await.is_err() {
            return Ok(()); // the writer stopped: its error is the connection's
        }
    }
}

/// The writing half: each answer in request order, once it is ready.
async fn write_answers<W>(
    mut wr: W,
    mut answers: tokio::sync::mpsc::Receiver<Answer>,
) -> Result<(), Closed>
where
    W: AsyncWrite + Unpin,
{
    while let Some(answer) = answers.recv().await {
        let out = match answer {
            Answer::Ready(out) => out,
            Answer::Running(handler) => handler
                .await
                .map_err(|e| Closed::Failed(format!("a produce request's handler: {e}")))??,
            Answer::Drained(done) => {
                let _ = done.send(());
                continue;
            }
        };
        if let Some(out) = out {
            wr.write_all(&out).await?;
        }
    }
    Ok(())
}

/// Answers one request: `None` for a request answered by silence (produce, acks=0).
async fn dispatch(
    shared: &Arc<Shared>,
    call: &Call,
    request: RequestKind,
) -> Result<Option<ResponseKind>, Closed> {
    let response = match request {
        RequestKind::ApiVersions(r) => ResponseKind::ApiVersions(meta::api_versions(call, r)),
        RequestKind::Metadata(r) => ResponseKind::Metadata(meta::metadata(shared, call, r).await),
        RequestKind::Produce(r) => match data::produce(shared, call, r).await {
            Some(answer) => ResponseKind::Produce(answer),
            None => return Ok(None),
        },
        RequestKind::Fetch(r) => ResponseKind::Fetch(data::fetch(shared, call, r).await),
        RequestKind::ListOffsets(r) => {
            ResponseKind::ListOffsets(data::list_offsets(shared, call, r).await)
        }
        RequestKind::InitProducerId(r) => {
            ResponseKind::InitProducerId(data::init_producer_id(shared, call, r).await)
        }
        RequestKind::CreateTopics(r) => {
            ResponseKind::CreateTopics(meta::create_topics(shared, call, r).await)
        }
        RequestKind::DeleteTopics(r) => {
            ResponseKind::DeleteTopics(meta::delete_topics(shared, call, r).await)
        }
        RequestKind::CreatePartitions(r) => {
            ResponseKind::CreatePartitions(meta::create_partitions(shared, call, r).await)
        }
        RequestKind::DescribeConfigs(r) => {
            ResponseKind::DescribeConfigs(meta::describe_configs(shared, call, r))
        }
        RequestKind::IncrementalAlterConfigs(r) => ResponseKind::IncrementalAlterConfigs(
            meta::incremental_alter_configs(shared, call, r).await,
        ),
        RequestKind::DescribeCluster(r) => {
            ResponseKind::DescribeCluster(meta::describe_cluster(shared, call, r))
        }
        RequestKind::FindCoordinator(r) => {
            ResponseKind::FindCoordinator(groups::find_coordinator(shared, call, r).await)
        }
        RequestKind::OffsetCommit(r) => {
            ResponseKind::OffsetCommit(groups::offset_commit(shared, call, r).await)
        }
        RequestKind::OffsetFetch(r) => {
            ResponseKind::OffsetFetch(groups::offset_fetch(shared, call, r).await)
        }
        RequestKind::ListGroups(r) => {
            ResponseKind::ListGroups(groups::list_groups(shared, call, r).await)
        }
        RequestKind::DescribeGroups(r) => {
            ResponseKind::DescribeGroups(groups::describe_groups(shared, call, r).await)
        }
        RequestKind::DeleteGroups(r) => {
            ResponseKind::DeleteGroups(groups::delete_groups(shared, call, r).await)
        }
        RequestKind::ConsumerGroupHeartbeat(r) => ResponseKind::ConsumerGroupHeartbeat(
            groups::consumer_group_heartbeat(shared, call, r).await,
        ),
        RequestKind::ConsumerGroupDescribe(r) => ResponseKind::ConsumerGroupDescribe(
            groups::consumer_group_describe(shared, call, r).await,
        ),
        RequestKind::JoinGroup(r) => {
            ResponseKind::JoinGroup(classic::join_group(shared, call, r).await)
        }
        RequestKind::SyncGroup(r) => {
            ResponseKind::SyncGroup(classic::sync_group(shared, call, r).await)
        }
        RequestKind::Heartbeat(r) => {
            ResponseKind::Heartbeat(classic::heartbeat(shared, call, r).await)
        }
        RequestKind::LeaveGroup(r) => {
            ResponseKind::LeaveGroup(classic::leave_group(shared, call, r).await)
        }
        other => {
            // ApiVersions never listed it: a client that sends it anyway is broken.
            return Err(Closed::Malformed(format!(
                "{:?} is not served here (ApiVersions does not list it)",
                call.api()
            )))
            .inspect_err(|_| drop(other));
        }
    };
    Ok(Some(response))
}

/// A zero-length `Bytes` (the records of a partition with nothing to send).
pub(crate) fn no_records() -> Option<Bytes> {
    Some(Bytes::new())
}
