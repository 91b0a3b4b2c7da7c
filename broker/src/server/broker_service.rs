//! Produce, Fetch, Subscribe, ListOffsets and Metadata.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use rafka_proto::batch::{BatchHeader, ValidatedBatch};
use rafka_proto::v1::{self, broker_server, list_offsets_request::Spec};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use super::{catalog, Shared};
use crate::auth::acl::Operation;
use crate::cluster::node::ReplicatedPartition;
use crate::error::BrokerError;
use crate::log::LogError;
use crate::metrics::STAGES;

/// A partition served here.
type Served = Arc<ReplicatedPartition>;

/// Longest a fetch may wait for data.
const MAX_WAIT: Duration = Duration::from_secs(30);
/// Response size when a fetch does not say.
const DEFAULT_FETCH_BYTES: usize = 50 << 20;
/// Partition size when a fetch does not say.
const DEFAULT_PARTITION_BYTES: usize = 1 << 20;

pub(crate) struct BrokerService {
    shared: Arc<Shared>,
}

impl BrokerService {
    pub fn new(shared: Arc<Shared>) -> Self {
        Self { shared }
    }

    async fn partition(&self, topic: &str, partition: u32) -> Result<Served, BrokerError> {
        catalog::partition(&self.shared.node, topic, partition).await
    }
}

/// Records in `records` (whole batches; control batches hold none): walks the headers.
fn record_count(records: &[u8]) -> u64 {
    let mut rest = records;
    let mut n = 0;
    while let Ok(h) = BatchHeader::parse(rest) {
        if !h.is_control() {
            n += h.record_count.max(0) as u64;
        }
        match rest.get(h.total_len()..) {
            Some(r) if h.total_len() > 0 => rest = r,
            _ => break,
        }
    }
    n
}

/// Offset after the last batch in `records` (which holds whole batches).
fn next_offset_after(records: &[u8]) -> Option<u64> {
    let mut rest = records;
    let mut next = None;
    while !rest.is_empty() {
        let h = BatchHeader::parse(rest).ok()?;
        next = Some(h.next_offset() as u64);
        rest = rest.get(h.total_len()..)?;
    }
    next
}

/// Reads one partition below its high watermark, or says why it cannot. A replica that
/// may be behind the reader answers an offset past its high watermark with no records.
pub(crate) fn read_partition(
    p: &Served,
    offset: u64,
    max_bytes: usize,
) -> Result<v1::PartitionData, BrokerError> {
    let reader = p.reader();
    let high_watermark = p.high_watermark();
    let log_start = reader.log_start_offset();
    if offset > high_watermark && p.may_lag(offset) {
        return Ok(v1::PartitionData {
            topic: p.topic.clone(),
            partition: p.partition,
            records: Bytes::new(),
            high_watermark,
            log_start_offset: log_start,
        });
    }
    if offset < log_start || offset > high_watermark {
        return Err(p.log_error(LogError::OffsetOutOfRange {
            offset,
            log_start,
            log_end: high_watermark,
        }));
    }
    let records = if offset >= high_watermark {
        Bytes::new()
    } else {
        reader
            .read_below(offset, max_bytes, high_watermark)
            .map_err(|e| p.log_error(e))?
    };
    if !records.is_empty() {
        p.traffic
            .fetched(record_count(&records), records.len() as u64);
    }
    Ok(v1::PartitionData {
        topic: p.topic.clone(),
        partition: p.partition,
        records,
        high_watermark,
        log_start_offset: log_start,
    })
}

/// A partition and the validated batches a produce request brings it.
pub(crate) type PartitionAppend = (Served, Vec<ValidatedBatch>);

/// Checks a whole produce request (size, partitions, every batch, leadership) before
/// anything is appended.
pub(crate) async fn validate_produce(
    shared: &Shared,
    req: &v1::ProduceRequest,
) -> Result<Vec<PartitionAppend>, BrokerError> {
    let max_request_bytes = shared.config.max_request_bytes;
    let size: usize = req.partitions.iter().map(|p| p.records.len()).sum();
    if size > max_request_bytes {
        return Err(BrokerError::RequestTooLarge {
            size,
            max: max_request_bytes,
        });
    }
    if req.partitions.is_empty() {
        return Err(BrokerError::InvalidRequest(
            "no partitions in produce request".into(),
        ));
    }
    let topic = &req.topic;
    // The broker writes its internal topics itself (commits through the Group service).
    crate::topics::check_not_internal(topic, "produce to")?;
    let mut seen = HashSet::new();
    let mut work = Vec::with_capacity(req.partitions.len());
    for p in &req.partitions {
        let partition = catalog::partition(&shared.node, topic, p.partition).await?;
        if !seen.insert(p.partition) {
            return Err(BrokerError::InvalidRequest(format!(
                "partition {} appears twice in one produce request",
                p.partition
            )));
        }
        if p.records.is_empty() {
            return Err(BrokerError::InvalidRequest(format!(
                "{topic}-{}: no records",
                p.partition
            )));
        }
        let invalid = |index, source| BrokerError::InvalidBatch {
            topic: topic.to_string(),
            partition: p.partition,
            index,
            source,
        };
        let batches =
            ValidatedBatch::parse_all(&p.records).map_err(|(index, e)| invalid(index, e))?;
        for (index, b) in batches.iter().enumerate() {
            if b.header().is_control() {
                return Err(BrokerError::InvalidRequest(format!(
                    "{topic}-{}: batch {index} is a control batch; only the broker writes those",
                    p.partition
                )));
            }
            let max = partition.segment_bytes();
            if b.bytes().len() as u64 > max {
                return Err(partition.log_error(LogError::BatchTooLarge {
                    size: b.bytes().len(),
                    max,
                }));
            }
        }
        work.push((partition, batches));
    }
    // Leadership last: a request for partitions led elsewhere appends nothing.
    for (p, _) in &work {
        p.check_writable().await?;
    }
    Ok(work)
}

#[tonic::async_trait]
impl broker_server::Broker for BrokerService {
    async fn produce(
        &self,
        request: Request<v1::ProduceRequest>,
    ) -> Result<Response<v1::ProduceResponse>, Status> {
        let started = std::time::Instant::now();
        let who = super::principal(&request);
        let req = request.into_inner();
        let only = match req.partitions.as_slice() {
            [one] => Some(one.partition),
            _ => None,
        };
        super::requests::record_target(&req.topic, only);
        self.shared
            .may_topic(who.as_ref(), Operation::Write, &req.topic)?;
        let acks = v1::Acks::try_from(req.acks)
            .map_err(|_| BrokerError::InvalidRequest(format!("unknown acks value {}", req.acks)))?;
        // Everything is validated before anything is appended.
        let work = validate_produce(&self.shared, &req).await?;
        STAGES.produce_validate.since(started);
        // Every partition runs to its own end: one that fails (its leader moved) must
        // not hide what happened to the others, which may have been appended.
        let appends = work.into_iter().map(|(partition, batches)| async move {
            let id = partition.partition;
            (id, partition.produce(batches, acks).await)
        });
        let results = futures::future::join_all(appends).await;
        STAGES.produce_request.since(started);
        if results.iter().all(|(_, r)| r.is_err()) {
            if let Some((_, Err(e))) = results.into_iter().next() {
                return Err(e.into());
            }
            return Ok(Response::new(v1::ProduceResponse::default()));
        }
        let partitions = results
            .into_iter()
            .map(|(partition, r)| match r {
                Ok(landed) => v1::ProducePartitionResult {
                    partition,
                    base_offsets: landed.base_offsets,
                    log_end_offset: landed.log_end_offset,
                    error: None,
                },
                Err(e) => v1::ProducePartitionResult {
                    partition,
                    error: Some(partition_error(e)),
                    ..Default::default()
                },
            })
            .collect();
        Ok(Response::new(v1::ProduceResponse { partitions }))
    }

    async fn fetch(
        &self,
        request: Request<v1::FetchRequest>,
    ) -> Result<Response<v1::FetchResponse>, Status> {
        let _timer = STAGES.fetch_request.timer();
        let who = super::principal(&request);
        let req = request.into_inner();
        if self.shared.auth.is_some() {
            let mut checked: Vec<&str> = Vec::new();
            for fp in &req.partitions {
                if !checked.contains(&fp.topic.as_str()) {
                    self.shared
                        .may_topic(who.as_ref(), Operation::Read, &fp.topic)?;
                    checked.push(&fp.topic);
                }
            }
        }
        if let [one] = req.partitions.as_slice() {
            super::requests::record_target(&one.topic, Some(one.partition));
        } else if let Some(first) = req.partitions.first() {
            super::requests::record_target(&first.topic, None);
        }
        if req.partitions.is_empty() {
            return Err(
                BrokerError::InvalidRequest("no partitions in fetch request".into()).into(),
            );
        }
        let mut parts = Vec::with_capacity(req.partitions.len());
        for fp in &req.partitions {
            parts.push((
                self.partition(&fp.topic, fp.partition).await?,
                fp.offset,
                fp.max_bytes,
                fp.min_offset,
            ));
        }
        let deadline = Instant::now() + Duration::from_millis(req.max_wait_ms as u64).min(MAX_WAIT);
        let total_max = match req.max_bytes {
            0 => DEFAULT_FETCH_BYTES,
            n => n as usize,
        };
        loop {
            // Watch before reading, so an append between the read and the wait is not missed.
            let mut watches: Vec<_> = parts
                .iter()
                .map(|(p, ..)| p.watch_high_watermark())
                .collect();
            for w in &mut watches {
                w.borrow_and_update();
            }
            let mut out = Vec::with_capacity(parts.len());
            let mut total = 0usize;
            // A follower read waits until this replica has what the client has seen.
            let behind = parts
                .iter()
                .find(|(p, _, _, min)| p.high_watermark() < *min);
            if let Some((p, _, _, min)) = behind {
                if Instant::now() >= deadline {
                    return Err(BrokerError::Unavailable(format!(
                        "{}-{}: this replica's high watermark {} has not reached min_offset {min}",
                        p.topic,
                        p.partition,
                        p.high_watermark()
                    ))
                    .into());
                }
                let changed =
                    futures::future::select_all(watches.iter_mut().map(|w| Box::pin(w.changed())));
                let _ = tokio::time::timeout_at(deadline, changed).await;
                continue;
            }
            for (p, offset, max, _) in &parts {
                let budget = match *max {
                    0 => DEFAULT_PARTITION_BYTES,
                    n => n as usize,
                }
                .min(total_max.saturating_sub(total));
                // Past the response budget only the first batch of a partition with data
                // would still be sent; skip the read instead.
                let budget = if budget == 0 && total > 0 {
                    0
                } else {
                    budget.max(1)
                };
                let data = if budget == 0 {
                    read_partition(p, *offset, 0).map(|mut d| {
                        d.records = Bytes::new();
                        d
                    })?
                } else {
                    read_partition(p, *offset, budget)?
                };
                total += data.records.len();
                out.push(data);
            }
            if total >= (req.min_bytes as usize).max(1)
                || req.min_bytes == 0
                || Instant::now() >= deadline
            {
                return Ok(Response::new(v1::FetchResponse { partitions: out }));
            }
            let changed =
                futures::future::select_all(watches.iter_mut().map(|w| Box::pin(w.changed())));
            if tokio::time::timeout_at(deadline, changed).await.is_err() {
                // Deadline: answer with what there is (read again: it may have moved).
                continue;
            }
        }
    }

    type SubscribeStream = ReceiverStream<Result<v1::PartitionData, Status>>;

    async fn subscribe(
        &self,
        request: Request<v1::SubscribeRequest>,
    ) -> Result<Response<Self::SubscribeStream>, Status> {
        let who = super::principal(&request);
        let req = request.into_inner();
        super::requests::record_target(&req.topic, Some(req.partition));
        self.shared
            .may_topic(who.as_ref(), Operation::Read, &req.topic)?;
        let partition = self.partition(&req.topic, req.partition).await?;
        let max_bytes = match req.max_bytes {
            0 => DEFAULT_PARTITION_BYTES,
            n => n as usize,
        };
        // Fail fast on a bad starting offset.
        read_partition(&partition, req.offset, 1)?;
        let (tx, rx) = mpsc::channel(4);
        // The stream ends when the client goes, on an error, or at broker shutdown.
        self.shared.node.tasks().spawn_until_stopped(async move {
            let mut offset = req.offset;
            let mut watch = partition.watch_high_watermark();
            loop {
                watch.borrow_and_update();
                if offset < partition.high_watermark() {
                    let item = read_partition(&partition, offset, max_bytes).map_err(Status::from);
                    let next = item
                        .as_ref()
                        .ok()
                        .and_then(|d| next_offset_after(&d.records));
                    let failed = item.is_err();
                    if tx.send(item).await.is_err() || failed {
                        return; // the client went away, or was told of an error
                    }
                    if let Some(n) = next {
                        offset = n;
                    }
                    continue;
                }
                tokio::select! {
                    changed = watch.changed() => if changed.is_err() { return },
                    _ = tx.closed() => return,
                }
            }
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }

    async fn list_offsets(
        &self,
        request: Request<v1::ListOffsetsRequest>,
    ) -> Result<Response<v1::ListOffsetsResponse>, Status> {
        let who = super::principal(&request);
        let req = request.into_inner();
        super::requests::record_target(&req.topic, Some(req.partition));
        self.shared
            .may_topic(who.as_ref(), Operation::Describe, &req.topic)?;
        let p = self.partition(&req.topic, req.partition).await?;
        let high_watermark = p.high_watermark();
        let log_start_offset = p.reader().log_start_offset();
        let offset = match req.spec {
            None => {
                return Err(BrokerError::InvalidRequest(
                    "list offsets needs earliest, latest or timestamp".into(),
                )
                .into())
            }
            Some(Spec::Earliest(_)) => Some(log_start_offset),
            Some(Spec::Latest(_)) => Some(high_watermark),
            Some(Spec::Timestamp(ts)) => p
                .reader()
                .offset_for_timestamp(ts)
                .map_err(|e| p.log_error(e))?
                .filter(|&o| o < high_watermark),
        };
        Ok(Response::new(v1::ListOffsetsResponse {
            offset,
            log_start_offset,
            high_watermark,
        }))
    }

    async fn metadata(
        &self,
        request: Request<v1::MetadataRequest>,
    ) -> Result<Response<v1::MetadataResponse>, Status> {
        let who = super::principal(&request);
        let req = request.into_inner();
        // Topics asked for by name must be describable; a listing of all shows those
        // that are (as Kafka's Metadata does).
        for t in &req.topics {
            self.shared
                .may_topic(who.as_ref(), Operation::Describe, t)?;
        }
        let mut answer = catalog::metadata(&self.shared.node, &req.topics).await?;
        if self.shared.auth.is_some() && req.topics.is_empty() {
            answer.topics.retain(|t| {
                self.shared
                    .may_topic(who.as_ref(), Operation::Describe, &t.name)
                    .is_ok()
            });
        }
        Ok(Response::new(answer))
    }

    async fn init_producer_id(
        &self,
        request: Request<v1::InitProducerIdRequest>,
    ) -> Result<Response<v1::InitProducerIdResponse>, Status> {
        if self.shared.auth.is_some() {
            let who = super::principal(&request)
                .ok_or_else(|| BrokerError::NotAuthorized("the request has no principal".into()))?;
            self.shared
                .acls
                .may_write_some_topic(&who)
                .map_err(BrokerError::NotAuthorized)?;
        }
        let producer_id = self.shared.node.init_producer_id().await?;
        Ok(Response::new(v1::InitProducerIdResponse {
            producer_id,
            producer_epoch: 0,
        }))
    }
}

/// One partition's failure, as its own status would have said it.
fn partition_error(e: BrokerError) -> v1::PartitionError {
    let leader = match &e {
        BrokerError::NotLeader { leader, .. } => Some(leader.map_or(0, |l| l as u32)),
        _ => None,
    };
    let out_of_order_sequence = matches!(e, BrokerError::OutOfOrderSequence(_));
    let status = Status::from(e);
    v1::PartitionError {
        code: status.code() as i32,
        message: status.message().to_string(),
        not_leader: leader.is_some(),
        leader: leader.unwrap_or(0),
        out_of_order_sequence,
    }
}
