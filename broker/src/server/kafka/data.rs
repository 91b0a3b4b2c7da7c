//! Produce, Fetch, ListOffsets and InitProducerId over the engine the gRPC API uses:
//! the same validation, sequencing, replication and reads.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use kafka_protocol::error::ResponseError as E;
use kafka_protocol::messages::fetch_response::{
    FetchableTopicResponse, LeaderIdAndEpoch as FetchLeader, PartitionData,
};
use kafka_protocol::messages::list_offsets_response::{
    ListOffsetsPartitionResponse, ListOffsetsTopicResponse,
};
use kafka_protocol::messages::produce_response::{
    LeaderIdAndEpoch, NodeEndpoint, PartitionProduceResponse, TopicProduceResponse,
};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;
use rafka_proto::batch::{BatchHeader, RecordBatch, ValidatedBatch};
use rafka_proto::v1;
use tokio::time::Instant;

use super::errors::{code, code_and_message};
use super::{batches, meta, Call};
use crate::auth::acl::Operation;
use crate::cluster::node::ReplicatedPartition;
use crate::error::BrokerError;
use crate::server::broker_service::{read_partition, validate_produce};
use crate::server::{catalog, Shared};

/// Longest a fetch may wait for data (as the gRPC Fetch).
const MAX_WAIT: Duration = Duration::from_secs(30);

/// A topic named by name or (newer versions) by id: its name, or the error to answer.
fn resolve(shared: &Shared, name: &TopicName, id: uuid::Uuid) -> Result<String, E> {
    if !name.0.is_empty() {
        return Ok(name.0.to_string());
    }
    if id.is_nil() {
        return Err(E::UnknownTopicOrPartition);
    }
    meta::name_of(shared, id).ok_or(E::UnknownTopicId)
}

/// The leader this broker knows for an error, as Kafka's `current_leader` says it.
fn leader_of(e: &BrokerError) -> Option<i32> {
    match e {
        BrokerError::NotLeader {
            leader: Some(l), ..
        } => Some(*l as i32),
        _ => None,
    }
}

/// The replica of `topic`/`partition` here if it leads it (Kafka clients read and
/// write only leaders).
async fn leader(
    shared: &Shared,
    topic: &str,
    partition: i32,
) -> Result<Arc<ReplicatedPartition>, BrokerError> {
    let index = u32::try_from(partition).map_err(|_| BrokerError::UnknownPartition {
        topic: topic.to_string(),
        partition: u32::MAX,
        count: catalog::partition_count(&shared.node, topic).unwrap_or(0),
    })?;
    let p = catalog::partition(&shared.node, topic, index).await?;
    if !p.is_leader() || p.fenced() {
        return Err(p.not_leader(p.leader_elsewhere()));
    }
    Ok(p)
}

fn epoch(p: &ReplicatedPartition) -> i32 {
    p.raft().metrics().borrow().current_term as i32
}

pub(super) async fn produce(
    shared: &Arc<Shared>,
    call: &Call,
    r: ProduceRequest,
) -> Option<ProduceResponse> {
    let acks = match r.acks {
        0 => Ok(v1::Acks::None),
        1 => Ok(v1::Acks::Leader),
        -1 => Ok(v1::Acks::All),
        _ => Err(E::InvalidRequiredAcks),
    };
    let transactional = r.transactional_id.as_ref().is_some_and(|t| !t.is_empty());
    let mut work = Vec::new();
    for t in r.topic_data {
        let topic = resolve(shared, &t.name, t.topic_id);
        let allowed = topic.as_ref().map_err(|e| *e).and_then(|name| {
            shared
                .may_topic(call.principal.as_ref(), Operation::Write, name)
                .map_err(|_| E::TopicAuthorizationFailed)
        });
        for p in t.partition_data {
            let topic = topic.clone();
            let (topic_name, topic_id) = (t.name.clone(), t.topic_id);
            work.push(async move {
                let result = match (acks, allowed, topic.as_ref()) {
                    (_, _, _) if transactional => Err((
                        E::TransactionalIdAuthorizationFailed,
                        Some("transactions are not supported by rafka".to_string()),
                        None,
                    )),
                    (Err(e), _, _) | (_, Err(e), _) => Err((e, None, None)),
                    (Ok(acks), Ok(()), Ok(name)) => {
                        append(shared, name, p.index, p.records.unwrap_or_default(), acks)
                            .await
                            .map_err(|e| (code(&e), Some(e.to_string()), leader_of(&e)))
                    }
                    (Ok(_), Ok(()), Err(e)) => Err((*e, None, None)),
                };
                (topic_name, topic_id, p.index, result)
            });
        }
    }
    let results = futures::future::join_all(work).await;
    if r.acks == 0 {
        return None;
    }
    let mut out = ProduceResponse::default();
    let mut leaders = std::collections::BTreeSet::new();
    for (name, id, index, result) in results {
        let mut part = PartitionProduceResponse::default().with_index(index);
        match result {
            Ok((base_offset, log_start)) => {
                part.base_offset = base_offset;
                part.log_start_offset = log_start;
            }
            Err((e, message, leader)) => {
                part.error_code = e.code();
                part.base_offset = -1;
                part.error_message = message.map(StrBytes::from_string);
                // The new leader's id and address come with v10 on (KIP-951).
                if let Some(l) = leader.filter(|_| call.version() >= 10) {
                    part.current_leader = LeaderIdAndEpoch::default().with_leader_id(BrokerId(l));
                    leaders.insert(l);
                }
            }
        }
        match out
            .responses
            .iter_mut()
            .find(|t| t.name == name && t.topic_id == id)
        {
            Some(t) => t.partition_responses.push(part),
            None => out.responses.push(
                TopicProduceResponse::default()
                    .with_name(name)
                    .with_topic_id(id)
                    .with_partition_responses(vec![part]),
            ),
        }
    }
    // Where the leaders are, so a client need not ask Metadata first (KIP-951).
    for l in leaders {
        if let Some((host, port)) = meta::kafka_address(shared, l as u32)
            .as_deref()
            .and_then(|a| {
                a.rsplit_once(':')
                    .map(|(h, p)| (h.to_string(), p.parse().ok()))
            })
            .and_then(|(h, p)| Some((h, p?)))
        {
            out.node_endpoints.push(
                NodeEndpoint::default()
                    .with_node_id(BrokerId(l))
                    .with_host(StrBytes::from_string(host))
                    .with_port(port),
            );
        }
    }
    Some(out)
}

/// One partition's records appended as gRPC's Produce appends them: `(base offset, log
/// start offset)`.
async fn append(
    shared: &Shared,
    topic: &str,
    partition: i32,
    records: Bytes,
    acks: v1::Acks,
) -> Result<(i64, i64), BrokerError> {
    let index = u32::try_from(partition).map_err(|_| BrokerError::UnknownPartition {
        topic: topic.to_string(),
        partition: u32::MAX,
        count: catalog::partition_count(&shared.node, topic).unwrap_or(0),
    })?;
    let stored =
        batches::from_kafka(&records).map_err(|(i, source)| BrokerError::InvalidBatch {
            topic: topic.to_string(),
            partition: index,
            index: i,
            source,
        })?;
    let request = v1::ProduceRequest {
        topic: topic.to_string(),
        partitions: vec![v1::PartitionRecords {
            partition: index,
            records: stored,
        }],
        acks: acks as i32,
    };
    let mut work = validate_produce(shared, &request).await?;
    let (p, batches): (_, Vec<ValidatedBatch>) = work.pop().expect("one partition");
    let landed = p.produce(batches, acks).await?;
    // u64::MAX: a retried batch written before, its offset no longer kept.
    let base = landed
        .base_offsets
        .first()
        .and_then(|&o| i64::try_from(o).ok())
        .unwrap_or(-1);
    Ok((base, p.reader().log_start_offset() as i64))
}

/// One partition a fetch asks for.
struct Asked {
    topic: TopicName,
    topic_id: uuid::Uuid,
    partition: i32,
    offset: i64,
    max_bytes: i32,
    /// The replica, or the error to answer.
    replica: Result<Arc<ReplicatedPartition>, (E, Option<i32>)>,
}

pub(super) async fn fetch(shared: &Arc<Shared>, call: &Call, r: FetchRequest) -> FetchResponse {
    let mut asked = Vec::new();
    for t in &r.topics {
        let topic = resolve(shared, &t.topic, t.topic_id);
        let allowed = topic.as_ref().map_err(|e| *e).and_then(|name| {
            shared
                .may_topic(call.principal.as_ref(), Operation::Read, name)
                .map_err(|_| E::TopicAuthorizationFailed)
        });
        for p in &t.partitions {
            let replica = match (&topic, &allowed) {
                (Ok(name), Ok(())) => leader(shared, name, p.partition)
                    .await
                    .map_err(|e| (code(&e), leader_of(&e))),
                (_, Err(e)) | (Err(e), _) => Err((*e, None)),
            };
            asked.push(Asked {
                topic: t.topic.clone(),
                topic_id: t.topic_id,
                partition: p.partition,
                offset: p.fetch_offset,
                max_bytes: p.partition_max_bytes,
                replica,
            });
        }
    }
    let deadline = Instant::now()
        + Duration::from_millis(u64::try_from(r.max_wait_ms).unwrap_or(0)).min(MAX_WAIT);
    let total_max = usize::try_from(r.max_bytes).unwrap_or(0).max(1);
    let min_bytes = usize::try_from(r.min_bytes).unwrap_or(0);
    let read = loop {
        // Watch before reading: an append between the read and the wait is not missed.
        let mut watches: Vec<_> = asked
            .iter()
            .filter_map(|a| a.replica.as_ref().ok())
            .map(|p| p.watch_high_watermark())
            .collect();
        for w in &mut watches {
            w.borrow_and_update();
        }
        let mut total = 0usize;
        let mut errors = false;
        let mut read = Vec::with_capacity(asked.len());
        for a in &asked {
            let Ok(p) = &a.replica else {
                read.push(None);
                continue;
            };
            let budget = usize::try_from(a.max_bytes)
                .unwrap_or(0)
                .min(total_max.saturating_sub(total));
            // Kafka sends a partition's first batch whole even past the limits, so a
            // consumer is never stuck behind a batch larger than it asked for.
            let budget = if budget == 0 && total > 0 {
                0
            } else {
                budget.max(1)
            };
            let offset = u64::try_from(a.offset).unwrap_or(u64::MAX);
            let data = if budget == 0 {
                read_partition(p, offset, 0).map(|mut d| {
                    d.records = Bytes::new();
                    d
                })
            } else {
                read_partition(p, offset, budget)
            };
            if let Ok(d) = &data {
                total += d.records.len();
            } else {
                errors = true;
            }
            read.push(Some(data));
        }
        if total >= min_bytes.max(1) || min_bytes == 0 || errors || Instant::now() >= deadline {
            break read;
        }
        if watches.is_empty() {
            break read;
        }
        let changed =
            futures::future::select_all(watches.iter_mut().map(|w| Box::pin(w.changed())));
        let _ = tokio::time::timeout_at(deadline, changed).await;
    };
    let mut out = FetchResponse::default();
    for (a, data) in asked.into_iter().zip(read) {
        let mut part = PartitionData::default().with_partition_index(a.partition);
        part.records = super::no_records();
        match (a.replica, data) {
            (Err((e, leader)), _) => {
                part.error_code = e.code();
                part.high_watermark = -1;
                if let Some(l) = leader.filter(|_| call.version() >= 12) {
                    part.current_leader = FetchLeader::default().with_leader_id(BrokerId(l));
                }
            }
            (Ok(p), Some(Ok(d))) => {
                part.high_watermark = d.high_watermark as i64;
                // No transactions: everything below the high watermark is stable.
                part.last_stable_offset = d.high_watermark as i64;
                part.log_start_offset = d.log_start_offset as i64;
                part.records = Some(batches::to_kafka(d.records));
                if call.version() >= 12 {
                    part.current_leader = FetchLeader::default()
                        .with_leader_id(BrokerId(shared.node.id() as i32))
                        .with_leader_epoch(epoch(&p));
                }
            }
            (Ok(p), Some(Err(e))) => {
                part.error_code = code(&e).code();
                part.high_watermark = p.high_watermark() as i64;
                part.log_start_offset = p.reader().log_start_offset() as i64;
            }
            (Ok(_), None) => unreachable!("a served partition is read"),
        }
        match out
            .responses
            .iter_mut()
            .find(|t| t.topic == a.topic && t.topic_id == a.topic_id)
        {
            Some(t) => t.partitions.push(part),
            None => out.responses.push(
                FetchableTopicResponse::default()
                    .with_topic(a.topic)
                    .with_topic_id(a.topic_id)
                    .with_partitions(vec![part]),
            ),
        }
    }
    out
}

/// ListOffsets' special timestamps.
const LATEST: i64 = -1;
const EARLIEST: i64 = -2;
const MAX_TIMESTAMP: i64 = -3;
const EARLIEST_LOCAL: i64 = -4;

pub(super) async fn list_offsets(
    shared: &Arc<Shared>,
    call: &Call,
    r: ListOffsetsRequest,
) -> ListOffsetsResponse {
    let mut out = ListOffsetsResponse::default();
    for t in r.topics {
        let name = t.name.0.to_string();
        let allowed = shared
            .may_topic(call.principal.as_ref(), Operation::Describe, &name)
            .map_err(|_| E::TopicAuthorizationFailed);
        let mut topic = ListOffsetsTopicResponse::default().with_name(t.name.clone());
        for p in t.partitions {
            let mut part = ListOffsetsPartitionResponse::default()
                .with_partition_index(p.partition_index)
                .with_timestamp(-1)
                .with_offset(-1);
            let found = match allowed {
                Err(e) => Err(e),
                Ok(()) => match leader(shared, &name, p.partition_index).await {
                    Err(e) => Err(code(&e)),
                    Ok(replica) => {
                        if call.version() >= 4 {
                            part.leader_epoch = epoch(&replica);
                        }
                        offset_for(&replica, p.timestamp).map_err(|e| code(&e))
                    }
                },
            };
            match found {
                Ok(Some((offset, timestamp))) => {
                    part.offset = offset;
                    part.timestamp = timestamp;
                }
                Ok(None) => {}
                Err(e) => part.error_code = e.code(),
            }
            topic.partitions.push(part);
        }
        out.topics.push(topic);
    }
    out
}

/// The offset (and its record's timestamp) ListOffsets answers for `timestamp`.
fn offset_for(p: &ReplicatedPartition, timestamp: i64) -> Result<Option<(i64, i64)>, BrokerError> {
    let high_watermark = p.high_watermark();
    let reader = p.reader();
    match timestamp {
        LATEST => Ok(Some((high_watermark as i64, -1))),
        EARLIEST | EARLIEST_LOCAL => Ok(Some((reader.log_start_offset() as i64, -1))),
        // KIP-734: the (first) record with the largest timestamp, which is the first
        // record at or after that timestamp.
        MAX_TIMESTAMP => match reader.max_timestamp() {
            Some(max) => offset_for(p, max),
            None => Ok(None),
        },
        ts if ts < 0 => Err(BrokerError::InvalidRequest(format!(
            "ListOffsets timestamp {ts} is not one Kafka defines"
        ))),
        ts => {
            let Some(offset) = reader
                .offset_for_timestamp(ts)
                .map_err(|e| p.log_error(e))?
                .filter(|&o| o < high_watermark)
            else {
                return Ok(None);
            };
            let records = reader
                .read_below(offset, 1, high_watermark)
                .map_err(|e| p.log_error(e))?;
            Ok(Some(record_at(&records, offset, ts)))
        }
    }
}

/// The first record at or after `offset` with a timestamp of at least `ts` in the
/// batch `records` starts with: its offset and timestamp. A compressed batch answers
/// with the batch's offset and largest timestamp.
fn record_at(records: &[u8], offset: u64, ts: i64) -> (i64, i64) {
    let Ok(h) = BatchHeader::parse(records) else {
        return (offset as i64, -1);
    };
    if h.compression().is_some_and(|c| c.bits() != 0) {
        return (offset as i64, h.max_timestamp);
    }
    let Ok(batch) = RecordBatch::parse_trusted(&records[..h.total_len().min(records.len())]) else {
        return (offset as i64, h.max_timestamp);
    };
    for r in batch.records().flatten() {
        let at = h.base_offset + i64::from(r.offset_delta);
        let time = h.base_timestamp + r.timestamp_delta;
        if at >= offset as i64 && time >= ts {
            return (at, time);
        }
    }
    (offset as i64, h.max_timestamp)
}

pub(super) async fn init_producer_id(
    shared: &Arc<Shared>,
    call: &Call,
    r: InitProducerIdRequest,
) -> InitProducerIdResponse {
    let mut out = InitProducerIdResponse::default();
    out.producer_id = ProducerId(-1);
    out.producer_epoch = -1;
    if r.transactional_id.as_ref().is_some_and(|t| !t.is_empty()) {
        out.error_code = E::TransactionalIdAuthorizationFailed.code();
        tracing::info!(
            "InitProducerId with a transactional id refused: transactions are not supported"
        );
        return out;
    }
    if shared.auth.is_some() {
        let allowed = match &call.principal {
            None => Err("no principal".to_string()),
            Some(who) => shared.acls.may_write_some_topic(who),
        };
        if allowed.is_err() {
            out.error_code = E::ClusterAuthorizationFailed.code();
            return out;
        }
    }
    match shared.node.init_producer_id().await {
        Ok(id) => {
            out.producer_id = ProducerId(id);
            out.producer_epoch = 0;
        }
        Err(e) => out.error_code = code_and_message(&e).0,
    }
    out
}
