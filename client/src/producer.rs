//! The producer: per-partition accumulators, one ordered pipeline per partition.
//!
//! ```text
//! send ─► partition (explicit | murmur2(key) | sticky) ─► open batch (BatchBuilder)
//!            sealed when batch_size is reached, or linger after its first record
//!                                      ▼
//!         sender task: every partition with sealed batches and nothing in flight
//!         joins a Produce request (one per topic); at most max_in_flight requests;
//!         retriable errors retry with exponential backoff, in order
//! ```
//!
//! Idempotent (the default with acks=all, Kafka's `enable.idempotence`): the producer
//! gets a producer id from the cluster, and every batch carries it with the sequence
//! number of its first record per partition. The partition leader appends each batch
//! once and in sequence order (a retried batch already written is answered with the
//! original's offsets; one ahead of a missing batch waits for it), so a partition may
//! have up to `max_in_flight_per_partition` (5 by default) requests in flight and
//! retries still neither duplicate nor reorder. A batch that fails for good would leave
//! a gap no later batch can pass: the partition's later batches move to a new producer
//! id. Without idempotence a partition has one request in flight, so retries never
//! reorder its records; batches sealed meanwhile ride together in its next request.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use rafka_proto::batch::{self, BatchBuilder, Compression};
use rafka_proto::v1;
use tokio::sync::{Notify, Semaphore};
use tokio::time::Instant;

use crate::cluster::Cluster;
use crate::delivery::{BatchResult, Completion, DeliveryFuture, Reservation};
use crate::partitioner::partition_for_key;
use crate::{ClientError, ProducerRecord, RecordMetadata};
use routing::produce_routed;

mod routing;
use rafka_proto::batch::compression::compress;

/// How many replicas must have a record before it is acknowledged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Acks {
    /// Committed by the partition's quorum (the default).
    #[default]
    All,
    /// Appended on the leader.
    Leader,
    /// Not waited for: the broker answers once the request is validated.
    None,
}

impl Acks {
    fn wire(self) -> v1::Acks {
        match self {
            Self::All => v1::Acks::All,
            Self::Leader => v1::Acks::Leader,
            Self::None => v1::Acks::None,
        }
    }
}

impl std::str::FromStr for Acks {
    type Err = ClientError;
    fn from_str(s: &str) -> Result<Self, ClientError> {
        match s {
            "all" | "-1" => Ok(Self::All),
            "leader" | "1" => Ok(Self::Leader),
            "none" | "0" => Ok(Self::None),
            _ => Err(ClientError::InvalidArgument(format!(
                "acks must be all, leader or none, not `{s}`"
            ))),
        }
    }
}

/// Producer settings.
#[derive(Debug, Clone)]
pub struct ProducerConfig {
    /// Acknowledgement level.
    pub acks: Acks,
    /// How long a batch waits for more records after its first.
    pub linger: Duration,
    /// Seal a batch once it reaches this many bytes.
    pub batch_size: usize,
    /// Codec for batches.
    pub compression: Compression,
    /// Produce requests in flight at once (over all partitions).
    pub max_in_flight: usize,
    /// Idempotent delivery (Kafka's `enable.idempotence`): `None` means on with
    /// `acks=all` and off otherwise; `Some(true)` with other acks is refused.
    pub enable_idempotence: Option<bool>,
    /// Requests in flight per partition when idempotent, 1 to 5 (Kafka's
    /// `max.in.flight.requests.per.connection`, default 5); without idempotence 1.
    pub max_in_flight_per_partition: usize,
    /// Attempts after the first for a retriable error (also bounded by
    /// `delivery_timeout`).
    pub retries: u32,
    /// How long a record may take from its first send attempt to its acknowledgement
    /// before it fails (Kafka's `delivery.timeout.ms`): retriable errors such as a
    /// leader election under load are retried until then.
    pub delivery_timeout: Duration,
    /// How long one produce request may go unanswered before it is failed and retried
    /// (Kafka's `request.timeout.ms`, 30 s): a broker that took a request and then never
    /// answers (stopped, or a connection silently gone) cannot hold records forever.
    pub request_timeout: Duration,
    /// Backoff between retries; doubles every third attempt, up to 1 s (a leader election
    /// takes about one election timeout, so waiting longer only delays the failover).
    pub retry_backoff: Duration,
    /// Bytes of records buffered but not yet acknowledged; `send` waits beyond this.
    pub buffer_memory: usize,
    /// Metadata of the topics written to is asked for again this often, so partitions
    /// added to a topic get records (Kafka's `metadata.max.age.ms`, 5 minutes).
    pub metadata_max_age: Duration,
    /// TLS to the brokers (none: plaintext).
    pub tls: Option<crate::TlsConfig>,
    /// Credentials for brokers that check bearer tokens.
    pub credentials: Option<crate::Credentials>,
}

impl Default for ProducerConfig {
    fn default() -> Self {
        Self {
            acks: Acks::All,
            linger: Duration::from_millis(5),
            batch_size: 256 << 10,
            compression: Compression::None,
            max_in_flight: 16,
            enable_idempotence: None,
            max_in_flight_per_partition: 5,
            retries: u32::MAX,
            delivery_timeout: Duration::from_secs(120),
            request_timeout: Duration::from_secs(30),
            retry_backoff: Duration::from_millis(100),
            buffer_memory: 64 << 20,
            metadata_max_age: Duration::from_secs(300),
            tls: None,
            credentials: None,
        }
    }
}

struct OpenBatch {
    builder: BatchBuilder,
    /// Every appended record holds a future of it.
    completion: Completion,
    first_at: Instant,
    reserved: Reservation,
}

struct SealedBatch {
    bytes: Bytes,
    /// Records in the batch (each holds a future of `completion`).
    records: usize,
    completion: Completion,
    _reserved: Reservation,
    /// The partition's generation when the batch was stamped (see `PartitionQueue`).
    generation: u64,
    /// Sealed because it reached `batch_size` (not by its linger or a flush).
    full: bool,
}

#[derive(Default)]
struct PartitionQueue {
    open: Option<OpenBatch>,
    ready: VecDeque<SealedBatch>,
    /// Requests in flight.
    in_flight: usize,
    /// Batches in those requests.
    batches_in_flight: usize,
    /// Sequence number of the next record (idempotent producers).
    next_seq: i32,
    /// The producer id and epoch this partition's batches are stamped with, when not
    /// the producer's own: a partition moves to a new producer id when one of its
    /// batches fails for good, since the leader would refuse every later sequence as
    /// out of order behind the missing one (Kafka bumps the epoch instead, KIP-360).
    identity: Option<(i64, i16)>,
    /// Bumped at each such move. The batches of an older generation still in flight are
    /// not retried (they could only be refused as out of order), and no batch of the new
    /// generation goes out while one of the old is in flight (order).
    generation: u64,
    /// The generation of the requests in flight.
    sent_generation: u64,
    /// A new producer id is on its way: the partition sends nothing meanwhile.
    resetting: bool,
}

#[derive(Default)]
struct State {
    /// Per topic, per partition number (looked up on every `send`: a fast hash).
    queues: foldhash::HashMap<String, Vec<PartitionQueue>>,
    sticky: foldhash::HashMap<String, u32>,
    /// Records handed to `send` and not yet acknowledged or failed.
    pending: usize,
    /// A `flush` is waiting: seal open batches without lingering.
    flushing: usize,
    closed: bool,
}

struct Inner {
    cluster: Arc<Cluster>,
    config: ProducerConfig,
    state: Mutex<State>,
    wake: Notify,
    idle: Notify,
    memory: Arc<Semaphore>,
    in_flight: Arc<Semaphore>,
    /// The producer id and epoch when idempotent.
    producer: Option<(i64, i16)>,
    /// Requests in flight per partition at most.
    per_partition: usize,
}

/// Sends records to rafka. Cheap to share behind an `Arc`; `send` takes `&self`.
pub struct Producer {
    inner: Arc<Inner>,
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

impl Producer {
    /// Connects through a comma-separated bootstrap list.
    pub async fn connect(bootstrap: &str, config: ProducerConfig) -> Result<Self, ClientError> {
        if config.batch_size == 0 || config.max_in_flight == 0 {
            return Err(ClientError::InvalidArgument(
                "batch_size and max_in_flight must be positive".into(),
            ));
        }
        let idempotent = match (config.enable_idempotence, config.acks) {
            (Some(true), acks) if acks != Acks::All => {
                return Err(ClientError::InvalidArgument(format!(
                    "enable_idempotence needs acks=all (acks is {acks:?})"
                )))
            }
            (Some(on), _) => on,
            (None, acks) => acks == Acks::All,
        };
        if idempotent && !(1..=5).contains(&config.max_in_flight_per_partition) {
            return Err(ClientError::InvalidArgument(format!(
                "max_in_flight_per_partition must be 1 to 5 with idempotence, not {}",
                config.max_in_flight_per_partition
            )));
        }
        let cluster =
            Cluster::connect(bootstrap, config.tls.clone(), config.credentials.as_ref()).await?;
        let producer = if idempotent {
            Some(init_producer_id(&cluster, &config).await?)
        } else {
            None
        };
        let inner = Arc::new(Inner {
            producer,
            per_partition: if idempotent {
                config.max_in_flight_per_partition
            } else {
                1
            },
            cluster,
            memory: Arc::new(Semaphore::new(config.buffer_memory.max(config.batch_size))),
            in_flight: Arc::new(Semaphore::new(config.max_in_flight)),
            config,
            state: Mutex::new(State::default()),
            wake: Notify::new(),
            idle: Notify::new(),
        });
        tokio::spawn(run_sender(inner.clone()));
        Ok(Self { inner })
    }

    /// Queues a record; the returned future resolves to where it landed once acknowledged.
    /// Waits only when `buffer_memory` is full.
    pub async fn send(&self, record: ProducerRecord) -> Result<DeliveryFuture, ClientError> {
        let inner = &self.inner;
        let partitions = inner.cluster.partition_count(&record.topic).await?;
        let headers: Vec<batch::Header<'_>> = record
            .headers
            .iter()
            .map(|h| batch::Header {
                key: h.key.as_bytes(),
                value: h.value.as_deref(),
            })
            .collect();
        let timestamp = record.timestamp.unwrap_or_else(now_ms);
        let rec = batch::Record {
            timestamp,
            key: record.key.as_deref(),
            value: record.value.as_deref(),
            headers: &headers,
        };
        let size = BatchBuilder::max_record_size(&rec);
        let reserved =
            Reservation::acquire(&inner.memory, size.min(inner.config.buffer_memory)).await?;
        let mut st = inner.lock();
        if st.closed {
            return Err(ClientError::Closed);
        }
        let partition = match (record.partition, &record.key) {
            (Some(p), _) if p >= partitions => {
                return Err(ClientError::InvalidArgument(format!(
                    "topic `{}` has {partitions} partitions; there is no partition {p}",
                    record.topic
                )))
            }
            (Some(p), _) => p,
            (None, Some(key)) => partition_for_key(key, partitions),
            (None, None) => match st.sticky.get(&*record.topic) {
                Some(&p) if p < partitions => p,
                _ => {
                    let p = (now_ms() as u32) % partitions;
                    st.sticky.insert(record.topic.to_string(), p);
                    p
                }
            },
        };
        let batch_size = inner.config.batch_size;
        let codec = inner.config.compression;
        if !st.queues.contains_key(&*record.topic) {
            st.queues.insert(record.topic.to_string(), Vec::new());
        }
        let queues = st.queues.get_mut(&*record.topic).expect("inserted above");
        if queues.len() < partitions as usize {
            queues.resize_with(partitions as usize, PartitionQueue::default);
        }
        let queue = &mut queues[partition as usize];
        let mut wake = false;
        let overflowed = queue
            .open
            .as_ref()
            .is_some_and(|o| o.builder.len() + size > batch_size);
        let producer = inner.producer;
        if overflowed {
            seal(queue, codec, producer, true);
            wake = true;
        }
        let open = queue.open.get_or_insert_with(|| {
            wake = true;
            OpenBatch {
                builder: BatchBuilder::with_capacity(batch_size.min(4 << 20) + 1024),
                completion: Completion::new(),
                first_at: Instant::now(),
                reserved: Reservation::empty(&inner.memory),
            }
        });
        let delta = open.builder.append(&rec);
        open.reserved.absorb(reserved);
        let delivery = open.completion.record(partition, delta, timestamp);
        let full = open.builder.len() >= batch_size;
        if full {
            seal(queue, codec, producer, true);
            wake = true;
        }
        if (full || overflowed) && record.partition.is_none() && record.key.is_none() {
            // Sticky partitioning: a full batch moves keyless records to the next partition.
            if let Some(p) = st.sticky.get_mut(&*record.topic) {
                *p = (partition + 1) % partitions;
            }
        }
        st.pending += 1;
        drop(st);
        if wake {
            inner.wake.notify_one();
        }
        Ok(delivery)
    }

    /// Sends everything buffered now and waits until every record sent so far is
    /// acknowledged or failed.
    pub async fn flush(&self) {
        /// Ends the flush even if the caller drops the future half way.
        struct Flushing<'a>(&'a Inner);
        impl Drop for Flushing<'_> {
            fn drop(&mut self) {
                self.0.lock().flushing -= 1;
            }
        }
        let inner = &*self.inner;
        inner.lock().flushing += 1;
        let _flushing = Flushing(inner);
        inner.wake.notify_one();
        loop {
            let idle = inner.idle.notified();
            tokio::pin!(idle);
            idle.as_mut().enable();
            if inner.lock().pending == 0 {
                break;
            }
            idle.await;
        }
    }

    /// What the producer holds now, for diagnostics: records not yet acknowledged and,
    /// per partition with any, its open batch, sealed batches waiting, requests in flight
    /// and next sequence number.
    pub fn queue_state(&self) -> String {
        let st = self.inner.lock();
        let mut out = format!("{} records pending", st.pending);
        for (topic, queues) in &st.queues {
            for (p, q) in queues.iter().enumerate() {
                if q.open.is_some() || !q.ready.is_empty() || q.in_flight > 0 {
                    out.push_str(&format!(
                        "; {topic}-{p}: open {}, ready {}, in flight {}, next sequence {}",
                        q.open.as_ref().map_or(0, |o| o.builder.record_count()),
                        q.ready.len(),
                        q.in_flight,
                        q.next_seq
                    ));
                }
            }
        }
        out
    }

    /// Flushes, then stops the producer; later sends fail with [`ClientError::Closed`].
    pub async fn close(&self) {
        self.flush().await;
        self.inner.lock().closed = true;
        self.inner.wake.notify_one();
    }
}

impl Drop for Producer {
    fn drop(&mut self) {
        // The sender finishes what is queued, then exits.
        self.inner.lock().closed = true;
        self.inner.wake.notify_one();
    }
}

impl Inner {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Moves the open batch, sealed (and compressed), to the ready queue.
fn seal(queue: &mut PartitionQueue, codec: Compression, producer: Option<(i64, i16)>, full: bool) {
    if let Some(mut open) = queue.open.take() {
        let records = open.builder.record_count();
        if let Some((id, epoch)) = queue.identity.or(producer) {
            let seq = queue.next_seq;
            open.builder.set_producer(id, epoch, seq);
            // Sequences wrap to 0 after i32::MAX, as Kafka's.
            queue.next_seq = seq_after(seq, records);
        }
        let bytes = open
            .builder
            .seal_compressed(codec, |records| compress(codec, records).ok());
        queue.ready.push_back(SealedBatch {
            bytes,
            records,
            completion: open.completion,
            _reserved: open.reserved,
            generation: queue.generation,
            full,
        });
    }
}

/// The sequence number after `records` records from `seq` (sequences wrap to 0 after
/// `i32::MAX`, as Kafka's).
fn seq_after(seq: i32, records: usize) -> i32 {
    ((seq as i64 + records as i64) % (i32::MAX as i64 + 1)) as i32
}

/// Batches of a partition in flight at most when pipelining: the leader's window (it
/// remembers each producer's last five batches per partition, as Kafka's).
const WINDOW: usize = 5;

/// A partition's batches in one request.
type PartitionBatches = (u32, Vec<SealedBatch>);

/// One request's worth of batches for one topic.
struct Outgoing {
    topic: String,
    partitions: Vec<PartitionBatches>,
}

async fn run_sender(inner: Arc<Inner>) {
    let mut refresh_at = Instant::now() + inner.config.metadata_max_age;
    loop {
        if Instant::now() >= refresh_at {
            refresh_at = Instant::now() + inner.config.metadata_max_age;
            let topics: Vec<String> = inner.lock().queues.keys().cloned().collect();
            let inner = inner.clone();
            tokio::spawn(async move {
                for t in topics {
                    if let Err(e) = inner.cluster.refresh(&t).await {
                        tracing::debug!(topic = %t, "metadata refresh: {e}");
                    }
                }
            });
        }
        let (outgoing, next_deadline, done) = collect(&inner);
        for out in outgoing {
            let Ok(permit) = inner.in_flight.clone().acquire_owned().await else {
                return;
            };
            let inner = inner.clone();
            tokio::spawn(async move {
                send_request(&inner, out).await;
                drop(permit);
                inner.wake.notify_one();
            });
        }
        if done {
            return;
        }
        let wake = inner.wake.notified();
        let at = next_deadline.map_or(refresh_at, |d| d.min(refresh_at));
        let at = at.checked_sub(TICK_SLACK).unwrap_or(at);
        tokio::select! {
            _ = wake => {}
            _ = tokio::time::sleep_until(at) => {}
        }
    }
}

/// tokio's timers fire on millisecond ticks and round a deadline up, so a sleep until a
/// batch's linger ends would let a 1 ms linger last 1–2 ms (1.5 on average). The sender
/// sleeps until half a tick before a batch is due and seals the batches due within half
/// a tick: each lingers as configured on average, give or take half a millisecond.
const TICK_SLACK: Duration = Duration::from_micros(500);

/// Seals lingering batches that are due and takes every sendable partition's batches:
/// one request per topic with every ready batch, or with idempotence and more than one
/// request in flight per partition, batches up to the leader's window of five in flight
/// (so a retry of any of them is still recognised as a duplicate; a retried request of
/// more than five batches gets the first ones back as written before, their offsets
/// unknown). A partition with nothing in flight sends its ready batches together; one
/// with requests in flight adds a request only for a full batch (a backlog: pipelining
/// keeps the link busy), while batches sealed by their linger wait and go together
/// with the next: under moderate load one request per round trip, not one per linger,
/// keeps the requests (and Raft entries and syncs) few and the tail latency low.
fn collect(inner: &Inner) -> (Vec<Outgoing>, Option<Instant>, bool) {
    let now = Instant::now();
    let mut st = inner.lock();
    let flushing = st.flushing > 0 || st.closed;
    let codec = inner.config.compression;
    // Per topic, the requests in the order they go out.
    let mut by_topic: HashMap<String, Vec<Vec<PartitionBatches>>> = HashMap::new();
    let mut next: Option<Instant> = None;
    let mut busy = false;
    for (topic, queues) in st.queues.iter_mut() {
        for (partition, q) in queues.iter_mut().enumerate() {
            if let Some(open) = &q.open {
                let due = open.first_at + inner.config.linger;
                if flushing || due <= now + TICK_SLACK {
                    seal(q, codec, inner.producer, false);
                } else {
                    next = Some(next.map_or(due, |n| n.min(due)));
                }
            }
            busy |= q.in_flight > 0 || !q.ready.is_empty() || q.open.is_some();
            let mut round = 0;
            // After a move to a new producer id, the old generation's requests finish
            // first.
            let pipelined = inner.producer.is_some() && inner.per_partition > 1;
            while q.in_flight < inner.per_partition
                && !q.ready.is_empty()
                && !q.resetting
                && (q.in_flight == 0
                    || (q.sent_generation == q.generation
                        && (flushing || q.ready.front().is_some_and(|b| b.full))))
                && (!pipelined || q.batches_in_flight < WINDOW)
            {
                let n = if pipelined {
                    q.ready.len().min(WINDOW - q.batches_in_flight)
                } else {
                    q.ready.len()
                };
                q.in_flight += 1;
                q.batches_in_flight += n;
                q.sent_generation = q.generation;
                let batches: Vec<SealedBatch> = q.ready.drain(..n).collect();
                let requests = by_topic.entry(topic.clone()).or_default();
                if requests.len() <= round {
                    requests.push(Vec::new());
                }
                requests[round].push((partition as u32, batches));
                round += 1;
            }
        }
    }
    let done = st.closed && !busy && st.pending == 0;
    let out = by_topic
        .into_iter()
        .flat_map(|(topic, requests)| {
            requests.into_iter().map(move |partitions| Outgoing {
                topic: topic.clone(),
                partitions,
            })
        })
        .collect();
    (out, next, done)
}

/// Result of producing one partition's batches.
type PartitionResult = Result<v1::ProducePartitionResult, ClientError>;

async fn send_request(inner: &Arc<Inner>, out: Outgoing) {
    let parts = out
        .partitions
        .iter()
        .map(|(p, batches)| match &batches[..] {
            // The common case under load: one batch, sent as it is.
            [one] => (*p, one.bytes.clone()),
            _ => {
                let mut records = Vec::with_capacity(batches.iter().map(|b| b.bytes.len()).sum());
                for b in batches {
                    records.extend_from_slice(&b.bytes);
                }
                (*p, Bytes::from(records))
            }
        })
        .collect();
    let topic = out.topic;
    let generations: HashMap<u32, u64> = out
        .partitions
        .iter()
        .map(|(p, batches)| (*p, batches.first().map_or(0, |b| b.generation)))
        .collect();
    // A partition that moved to a new producer id since: its retries would be refused.
    let superseded = |p: u32| {
        let st = inner.lock();
        let now = st
            .queues
            .get(&topic)
            .and_then(|qs| qs.get(p as usize))
            .map(|q| q.generation);
        now.is_some() && now != generations.get(&p).copied()
    };
    let mut waiting: HashMap<u32, Vec<SealedBatch>> = out.partitions.into_iter().collect();
    // Each partition's batches complete as soon as its own outcome is known: a slow
    // partition (an election) holds up no other partition of the request.
    produce_routed(inner, &topic, parts, superseded, |partition, result| {
        if let Some(batches) = waiting.remove(&partition) {
            complete_partition(inner, &topic, partition, batches, &result);
        }
    })
    .await;
    for (partition, batches) in waiting {
        complete_partition(inner, &topic, partition, batches, &Err(ClientError::Closed));
    }
}

/// Completes one partition's batches with its produce outcome and lets its next batches
/// go.
fn complete_partition(
    inner: &Arc<Inner>,
    topic: &str,
    partition: u32,
    batches: Vec<SealedBatch>,
    result: &PartitionResult,
) {
    let bases = result.as_ref().ok().map(|r| &r.base_offsets);
    let mut finished = 0;
    let generation = batches.first().map_or(0, |b| b.generation);
    let count = batches.len();
    for (i, b) in batches.into_iter().enumerate() {
        finished += b.records;
        let base = bases.and_then(|v| v.get(i)).copied();
        let outcome: BatchResult = match (result, base) {
            (Err(e), _) => Err(e.clone()),
            (Ok(_), Some(base)) => Ok(base),
            // acks=none: the broker does not report offsets.
            (Ok(_), None) if inner.config.acks == Acks::None => Ok(RecordMetadata::UNKNOWN_OFFSET),
            (Ok(_), None) => Err(ClientError::InvalidArgument(format!(
                "broker returned no offset for partition {partition}"
            ))),
        };
        b.completion.complete(outcome);
    }
    let mut st = inner.lock();
    if let Some(q) = st
        .queues
        .get_mut(topic)
        .and_then(|qs| qs.get_mut(partition as usize))
    {
        q.in_flight -= 1;
        q.batches_in_flight -= count;
        // A batch failed for good: its sequence numbers never reach the leader (or may
        // have, unknown), so the partition's later batches move to a new producer id.
        if result.is_err() && inner.producer.is_some() && generation == q.generation {
            q.generation += 1;
            q.resetting = true;
            tokio::spawn(move_to_new_producer_id(
                inner.clone(),
                topic.to_string(),
                partition,
            ));
        }
    }
    st.pending -= finished;
    if st.pending == 0 {
        inner.idle.notify_waiters();
    }
    drop(st);
    inner.wake.notify_one();
}

/// Moves a partition whose batch failed to a new producer id: the batches not sent yet
/// are stamped anew from sequence 0. While no id can be had (the cluster unreachable
/// past the delivery timeout) they fail, as Kafka's expire in its accumulator.
async fn move_to_new_producer_id(inner: Arc<Inner>, topic: String, partition: u32) {
    let identity = loop {
        match init_producer_id(&inner.cluster, &inner.config).await {
            Ok(identity) => break identity,
            Err(e) => {
                tracing::warn!(topic, partition, "no new producer id: {e}");
                let mut st = inner.lock();
                let failed: Vec<SealedBatch> = st
                    .queues
                    .get_mut(&topic)
                    .and_then(|qs| qs.get_mut(partition as usize))
                    .map(|q| q.ready.drain(..).collect())
                    .unwrap_or_default();
                let records: usize = failed.iter().map(|b| b.records).sum();
                st.pending -= records;
                if st.pending == 0 {
                    inner.idle.notify_waiters();
                }
                drop(st);
                for b in failed {
                    b.completion.complete(Err(e.clone()));
                }
            }
        }
    };
    let mut st = inner.lock();
    if let Some(q) = st
        .queues
        .get_mut(&topic)
        .and_then(|qs| qs.get_mut(partition as usize))
    {
        let mut seq = 0;
        for b in q.ready.iter_mut() {
            if let Some(bytes) = batch::restamp_producer(&b.bytes, identity.0, identity.1, seq) {
                b.bytes = bytes;
            }
            b.generation = q.generation;
            seq = seq_after(seq, b.records);
        }
        tracing::info!(
            topic,
            partition,
            "a batch failed: the partition's next batches go as producer {} from sequence 0",
            identity.0
        );
        q.next_seq = seq;
        q.identity = Some(identity);
        q.resetting = false;
    }
    drop(st);
    inner.wake.notify_one();
}

/// Asks the cluster for a producer id, retrying retriable failures (a metadata election
/// at the cluster's start) with backoff until `delivery_timeout`.
async fn init_producer_id(
    cluster: &Cluster,
    config: &ProducerConfig,
) -> Result<(i64, i16), ClientError> {
    let deadline = Instant::now() + config.delivery_timeout;
    let mut backoff = config.retry_backoff.min(Duration::from_millis(50));
    loop {
        let mut client = cluster.broker();
        let request = client.init_producer_id(v1::InitProducerIdRequest {});
        let answer = match tokio::time::timeout(config.request_timeout, request).await {
            Ok(answer) => answer.map_err(ClientError::from),
            Err(_) => Err(ClientError::Broker {
                code: tonic::Code::DeadlineExceeded,
                message: format!("no producer id within {:?}", config.request_timeout),
            }),
        };
        match answer {
            Ok(r) => {
                let r = r.into_inner();
                let epoch = i16::try_from(r.producer_epoch).map_err(|_| {
                    ClientError::InvalidArgument(format!(
                        "broker sent producer epoch {} (not an i16)",
                        r.producer_epoch
                    ))
                })?;
                return Ok((r.producer_id, epoch));
            }
            Err(e) if e.is_retriable() && Instant::now() + backoff < deadline => {
                tracing::debug!("init producer id: {e}; retrying");
                // The broker asked may be down: the next attempt asks another.
                cluster.next_default();
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(1));
            }
            Err(e) => return Err(e),
        }
    }
}
