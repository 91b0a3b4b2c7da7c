//! The consumer: assigned partitions, positions, long-poll fetches and record decoding.

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::stream::FuturesUnordered;
use futures::{FutureExt, Stream, StreamExt};
use rafka_proto::batch::compression::decompress;
use rafka_proto::batch::{
    verify_stored, BatchHeader, Compression, Records, HEADER_LEN, MAX_DECOMPRESSED_LEN,
};
use rafka_proto::v1::{self, list_offsets_request::Spec};
use tonic::Code;

use crate::cluster::Cluster;
use crate::group::GroupOffsets;
use crate::{ClientError, ConsumerRecord, Header, TopicPartition};

/// How long `seek` retries a retriable failure before returning it (Kafka's
/// `default.api.timeout.ms`): a leader election after a broker's death takes seconds,
/// and a broker behind a proxy fails fast (the connection accepted, then closed), so a
/// count of attempts ran out before the new leader was there.
const SEEK_TIMEOUT: Duration = Duration::from_secs(60);
/// How long one offset lookup may go unanswered (a stopped or cut-off broker).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Pause before retrying after a retriable error (Kafka's `retry.backoff.ms`); a
/// partition that keeps failing waits twice as long each time, up to the maximum.
const RETRY_BACKOFF: Duration = Duration::from_millis(100);
/// Longest wait between tries of a partition that keeps failing (Kafka's
/// `retry.backoff.max.ms`).
const RETRY_BACKOFF_MAX: Duration = Duration::from_secs(1);

/// A partition that failed with a retriable error (no leader, leader unreachable):
/// left out of fetches until `until`.
#[derive(Debug, Clone, Copy)]
struct Backoff {
    until: Instant,
    delay: Duration,
}

/// Where to start when a partition has no valid position.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OffsetReset {
    /// The oldest record.
    #[default]
    Earliest,
    /// The next record to be written.
    Latest,
    /// Fail the poll.
    Error,
}

/// Where [`Consumer::seek`] moves a partition's position.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SeekTo {
    /// This offset.
    Offset(u64),
    /// The oldest record.
    Earliest,
    /// The end of the partition.
    Latest,
    /// The first record at or after this timestamp (ms since the epoch); the end if none.
    Timestamp(i64),
}

/// Consumer settings.
#[derive(Debug, Clone)]
pub struct ConsumerConfig {
    /// Policy for partitions without a valid position.
    pub auto_offset_reset: OffsetReset,
    /// Longest a fetch waits on the broker for `fetch_min_bytes`.
    pub fetch_max_wait: Duration,
    /// Bytes a fetch waits for.
    pub fetch_min_bytes: u32,
    /// Cap on one fetch response.
    pub fetch_max_bytes: u32,
    /// Cap per partition in one fetch.
    pub max_partition_fetch_bytes: u32,
    /// Read from a follower replica rather than the leader (spreads read load); a
    /// follower answers only once it has caught up to the consumer's position.
    pub prefer_followers: bool,
    /// Consumer group whose committed offsets positions start from (`commit` stores
    /// them); `None`: no group, positions come from `auto_offset_reset` or `seek`.
    pub group_id: Option<String>,
    /// Static membership (`group.instance.id`): a restart within the session timeout
    /// gets its partitions back without a rebalance.
    pub instance_id: Option<String>,
    /// A subscribed member silent this long is removed from its group.
    pub session_timeout: Duration,
    /// range | round-robin | cooperative-sticky.
    pub assignor: String,
    /// With a subscription, commit positions this often (and before partitions are
    /// revoked, and on close); `None`: only `commit()` commits.
    pub auto_commit_interval: Option<Duration>,
    /// TLS to the brokers (none: plaintext).
    pub tls: Option<crate::TlsConfig>,
    /// Credentials for brokers that check bearer tokens.
    pub credentials: Option<crate::Credentials>,
}

impl Default for ConsumerConfig {
    fn default() -> Self {
        Self {
            auto_offset_reset: OffsetReset::Earliest,
            fetch_max_wait: Duration::from_millis(500),
            fetch_min_bytes: 1,
            fetch_max_bytes: 64 << 20,
            max_partition_fetch_bytes: 4 << 20,
            prefer_followers: false,
            group_id: None,
            instance_id: None,
            session_timeout: Duration::from_secs(10),
            assignor: "cooperative-sticky".into(),
            auto_commit_interval: Some(Duration::from_secs(5)),
            tls: None,
            credentials: None,
        }
    }
}

/// Reads records from assigned partitions, or from the partitions its group's
/// coordinator assigns it after [`subscribe`](Consumer::subscribe).
pub struct Consumer {
    pub(crate) cluster: Arc<Cluster>,
    pub(crate) config: ConsumerConfig,
    /// Next offset to read, per partition; `None` until reset.
    pub(crate) positions: BTreeMap<TopicPartition, Option<u64>>,
    /// Read-your-writes floors: a fetch of the partition is answered only by a replica
    /// whose high watermark has reached this offset.
    min_offsets: BTreeMap<TopicPartition, u64>,
    pub(crate) buffered: Vec<ConsumerRecord>,
    pub(crate) group: Option<GroupOffsets>,
    pub(crate) subscription: Option<crate::subscription::Subscription>,
    /// Fetches in flight, kept across polls: a broker's answer is not thrown away
    /// because another broker answered first, and nothing waits a round trip to ask
    /// again. (Behind a mutex only to keep the consumer `Sync`; `&mut self` reaches it
    /// without locking.)
    in_flight: Mutex<FuturesUnordered<InFlight>>,
    /// Partitions some in-flight fetch asks for.
    covered: BTreeSet<TopicPartition>,
    /// Partitions waiting out a retriable failure; the others are read meanwhile.
    backoff: BTreeMap<TopicPartition, Backoff>,
}

/// An in-flight fetch: what it asked for (partition and offset) and its answer.
type InFlight = Pin<Box<dyn Future<Output = FetchAnswer> + Send>>;
type FetchAnswer = (
    Vec<(TopicPartition, u64)>,
    Result<tonic::Response<v1::FetchResponse>, tonic::Status>,
);

impl Consumer {
    /// Connects through a comma-separated bootstrap list.
    pub async fn connect(bootstrap: &str, config: ConsumerConfig) -> Result<Self, ClientError> {
        let cluster =
            Cluster::connect(bootstrap, config.tls.clone(), config.credentials.as_ref()).await?;
        let group = config
            .group_id
            .clone()
            .map(|g| GroupOffsets::new(cluster.clone(), g));
        Ok(Self {
            group,
            cluster,
            config,
            positions: BTreeMap::new(),
            min_offsets: BTreeMap::new(),
            buffered: Vec::new(),
            subscription: None,
            in_flight: Mutex::default(),
            covered: BTreeSet::new(),
            backoff: BTreeMap::new(),
        })
    }

    /// Reads exactly these partitions from now on; positions of partitions kept are kept.
    pub fn assign(&mut self, partitions: impl IntoIterator<Item = TopicPartition>) {
        let mut next = BTreeMap::new();
        for tp in partitions {
            let pos = self.positions.get(&tp).copied().flatten();
            next.insert(tp, pos);
        }
        self.positions = next;
        self.forget_unassigned();
        self.buffered.retain(|r| {
            self.positions
                .contains_key(&TopicPartition::new(&*r.topic, r.partition))
        });
    }

    /// Read-your-writes: fetches of `tp` are served only by a replica that has every
    /// record below `offset` committed (e.g. one past the offset a producer was just
    /// acknowledged), so a follower read never answers from an older state.
    pub fn set_min_offset(&mut self, tp: &TopicPartition, offset: u64) {
        self.min_offsets.insert(tp.clone(), offset);
    }

    /// Commits the current position of every assigned partition that has one, for the
    /// consumer's group; the positions are where a restarted consumer resumes.
    pub async fn commit(&mut self) -> Result<(), ClientError> {
        let offsets: BTreeMap<TopicPartition, u64> = self
            .positions
            .iter()
            .filter_map(|(tp, p)| p.map(|p| (tp.clone(), p)))
            .collect();
        self.commit_offsets(&offsets).await
    }

    /// Commits the current positions without waiting for the answer: the consumer goes
    /// on polling while the returned future (which may be spawned) completes once the
    /// coordinator has them.
    pub fn commit_async(
        &mut self,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), ClientError>> + Send>> {
        let offsets: BTreeMap<TopicPartition, u64> = self
            .positions
            .iter()
            .filter_map(|(tp, p)| p.map(|p| (tp.clone(), p)))
            .collect();
        match self.group_offsets() {
            Ok(g) => {
                let mut g = g.clone();
                Box::pin(async move { g.commit(&offsets).await })
            }
            Err(e) => Box::pin(async move { Err(e) }),
        }
    }

    /// Commits these offsets (the next offset to read, per partition) together.
    pub async fn commit_offsets(
        &mut self,
        offsets: &BTreeMap<TopicPartition, u64>,
    ) -> Result<(), ClientError> {
        self.group_offsets()?.commit(offsets).await
    }

    /// The group's committed offsets of `partitions` (absent where none was committed).
    pub async fn committed(
        &mut self,
        partitions: &[TopicPartition],
    ) -> Result<BTreeMap<TopicPartition, u64>, ClientError> {
        self.group_offsets()?.fetch(partitions).await
    }

    /// The consumer's group, if it has one.
    pub fn group_id(&self) -> Option<&str> {
        self.config.group_id.as_deref()
    }

    fn group_offsets(&mut self) -> Result<&mut GroupOffsets, ClientError> {
        self.group.as_mut().ok_or_else(|| {
            ClientError::InvalidArgument("the consumer has no group_id to commit for".into())
        })
    }

    /// The partitions assigned.
    pub fn assignment(&self) -> Vec<TopicPartition> {
        self.positions.keys().cloned().collect()
    }

    /// Every partition of `topic`.
    pub async fn partitions_of(&self, topic: &str) -> Result<Vec<TopicPartition>, ClientError> {
        let n = self.cluster.refresh(topic).await?;
        Ok((0..n).map(|p| TopicPartition::new(topic, p)).collect())
    }

    /// Moves an assigned partition's position. `Earliest`, `Latest` and `Timestamp` ask
    /// the partition's leader now (retrying retriable failures for up to 60 s); a
    /// consumer that should wait out a partition without a leader leaves the position to
    /// `auto_offset_reset`, which `poll` resolves per partition as leaders allow.
    pub async fn seek(&mut self, tp: &TopicPartition, to: SeekTo) -> Result<(), ClientError> {
        if !self.positions.contains_key(tp) {
            return Err(ClientError::InvalidArgument(format!(
                "{tp} is not assigned"
            )));
        }
        let offset = match to {
            SeekTo::Offset(o) => o,
            SeekTo::Earliest => {
                self.list_offset(tp, Spec::Earliest(true), SEEK_TIMEOUT)
                    .await?
                    .0
            }
            SeekTo::Latest => {
                self.list_offset(tp, Spec::Latest(true), SEEK_TIMEOUT)
                    .await?
                    .0
            }
            SeekTo::Timestamp(ts) => {
                self.list_offset(tp, Spec::Timestamp(ts), SEEK_TIMEOUT)
                    .await?
                    .0
            }
        };
        self.positions.insert(tp.clone(), Some(offset));
        let key = tp.clone();
        self.buffered
            .retain(|r| !(*r.topic == *key.topic && r.partition == key.partition));
        Ok(())
    }

    /// The next offset `poll` will return for `tp`, if known.
    pub fn position(&self, tp: &TopicPartition) -> Option<u64> {
        self.positions.get(tp).copied().flatten()
    }

    /// Resolves an offset; for a timestamp past every record, the high watermark.
    /// Retriable failures are retried for `retry_for` (backing off, with fresh metadata).
    async fn list_offset(
        &self,
        tp: &TopicPartition,
        spec: Spec,
        retry_for: Duration,
    ) -> Result<(u64, u64, u64), ClientError> {
        let request = v1::ListOffsetsRequest {
            topic: tp.topic.clone(),
            partition: tp.partition,
            spec: Some(spec),
        };
        let deadline = Instant::now() + retry_for;
        let mut backoff = RETRY_BACKOFF;
        let r = loop {
            let leader = self.cluster.partition(&tp.topic, tp.partition).await.leader;
            let mut client = self.cluster.broker_at(leader);
            let answer =
                match tokio::time::timeout(REQUEST_TIMEOUT, client.list_offsets(request.clone()))
                    .await
                {
                    Ok(answer) => answer.map_err(ClientError::from),
                    Err(_) => Err(ClientError::Broker {
                        code: tonic::Code::DeadlineExceeded,
                        message: format!("{tp}: no offset answer within {REQUEST_TIMEOUT:?}"),
                    }),
                };
            match answer {
                Ok(r) => break r.into_inner(),
                Err(e) => {
                    if !e.is_retriable() || Instant::now() + backoff > deadline {
                        return Err(e);
                    }
                    tracing::debug!(%tp, "offset lookup failed, retrying: {e}");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(RETRY_BACKOFF_MAX);
                    let _ = self.cluster.refresh(&tp.topic).await;
                }
            }
        };
        Ok((
            r.offset.unwrap_or(r.high_watermark),
            r.log_start_offset,
            r.high_watermark,
        ))
    }

    /// Gives `tp` its starting position per `auto_offset_reset`, asking its leader once.
    async fn reset(&mut self, tp: &TopicPartition) -> Result<(), ClientError> {
        let spec = match self.config.auto_offset_reset {
            OffsetReset::Earliest => Spec::Earliest(true),
            OffsetReset::Latest => Spec::Latest(true),
            OffsetReset::Error => {
                return Err(ClientError::InvalidArgument(format!(
                    "{tp} has no valid position and auto.offset.reset is error"
                )))
            }
        };
        let (offset, ..) = self.list_offset(tp, spec, Duration::ZERO).await?;
        self.positions.insert(tp.clone(), Some(offset));
        Ok(())
    }

    /// Drops the backoff state of partitions no longer assigned.
    pub(crate) fn forget_unassigned(&mut self) {
        let positions = &self.positions;
        self.backoff.retain(|tp, _| positions.contains_key(tp));
    }

    /// True while `tp` waits out a retriable failure.
    fn backing_off(&self, tp: &TopicPartition, now: Instant) -> bool {
        self.backoff.get(tp).is_some_and(|b| b.until > now)
    }

    /// Leaves `partitions` out of fetches for a while after a retriable failure (their
    /// leader is down or being elected), longer each time in a row, and asks for fresh
    /// metadata for their topics once.
    async fn back_off(&mut self, partitions: &[TopicPartition], e: &ClientError) {
        let now = Instant::now();
        let mut topics = BTreeSet::new();
        for tp in partitions {
            let delay = self
                .backoff
                .get(tp)
                .map_or(RETRY_BACKOFF, |b| (b.delay * 2).min(RETRY_BACKOFF_MAX));
            self.backoff.insert(
                tp.clone(),
                Backoff {
                    until: now + delay,
                    delay,
                },
            );
            topics.insert(tp.topic.clone());
        }
        for topic in topics {
            tracing::debug!(topic, "consumer request failed, backing off: {e}");
            let _ = self.cluster.refresh(&topic).await;
        }
    }

    /// Waits up to `timeout` for records and returns those available (possibly none).
    pub async fn poll(&mut self, timeout: Duration) -> Result<Vec<ConsumerRecord>, ClientError> {
        let timeout = self.maintain_group(timeout).await?;
        if self.buffered.is_empty() {
            self.fetch(timeout).await?;
            if !self.buffered.is_empty() {
                // Prefetch: what follows is asked for now, while the caller handles
                // these records, instead of on the next poll.
                self.dispatch(Instant::now(), timeout).await?;
            }
        }
        // Handed over whole: no copy of the records.
        Ok(std::mem::take(&mut self.buffered))
    }

    /// The records as a stream (polling in a loop); ends at the first error.
    pub fn stream(self) -> impl Stream<Item = Result<ConsumerRecord, ClientError>> {
        async_stream_records(self)
    }

    async fn fetch(&mut self, timeout: Duration) -> Result<(), ClientError> {
        if self.positions.is_empty() {
            tokio::time::sleep(timeout).await;
            return Ok(());
        }
        let started = Instant::now();
        self.dispatch(started, timeout).await?;
        self.gather(started, timeout).await
    }

    /// Sends a fetch for every partition with a position and none in flight: one request
    /// per broker (its leader, or a follower when preferred).
    async fn dispatch(&mut self, started: Instant, timeout: Duration) -> Result<(), ClientError> {
        self.resolve_positions(started).await?;
        let mut by_broker: BTreeMap<u32, Vec<v1::FetchPartition>> = BTreeMap::new();
        for (tp, pos) in &self.positions {
            let Some(pos) = *pos else { continue };
            if self.covered.contains(tp) || self.backing_off(tp, started) {
                continue;
            }
            let meta = self.cluster.partition(&tp.topic, tp.partition).await;
            let follower = meta
                .replicas
                .iter()
                .copied()
                .filter(|r| *r != meta.leader)
                .nth(tp.partition as usize % meta.replicas.len().max(1));
            let (target, min_offset) = match (self.config.prefer_followers, follower) {
                (true, Some(f)) => (f, pos),
                _ => (meta.leader, 0),
            };
            let min_offset = min_offset.max(self.min_offsets.get(tp).copied().unwrap_or(0));
            by_broker
                .entry(target)
                .or_default()
                .push(v1::FetchPartition {
                    topic: tp.topic.clone(),
                    partition: tp.partition,
                    offset: pos,
                    max_bytes: self.config.max_partition_fetch_bytes,
                    min_offset,
                });
        }
        let max_wait_ms = timeout.min(self.config.fetch_max_wait).as_millis() as u32;
        let in_flight = self.in_flight.get_mut().unwrap_or_else(|e| e.into_inner());
        for (broker, partitions) in by_broker {
            let channel = self.cluster.channel_at(broker);
            let asked: Vec<(TopicPartition, u64)> = partitions
                .iter()
                .map(|p| (TopicPartition::new(p.topic.clone(), p.partition), p.offset))
                .collect();
            self.covered.extend(asked.iter().map(|(tp, _)| tp.clone()));
            let request = v1::FetchRequest {
                partitions,
                min_bytes: self.config.fetch_min_bytes,
                max_wait_ms,
                max_bytes: self.config.fetch_max_bytes,
            };
            in_flight.push(Box::pin(async move {
                (asked, crate::direct::fetch(channel, request).await)
            }));
        }
        Ok(())
    }

    /// Takes the answers of fetches in flight into the buffer: the first within
    /// `timeout`, and any others already in.
    async fn gather(&mut self, started: Instant, timeout: Duration) -> Result<(), ClientError> {
        let in_flight = self.in_flight.get_mut().unwrap_or_else(|e| e.into_inner());
        // The first answer within the timeout, and any others already in; fetches still
        // out stay in flight for the next poll. With none out (every partition waits out
        // a failure), wait until the first may be tried again.
        let mut answers = Vec::new();
        if in_flight.is_empty() {
            let retry = self.backoff.values().map(|b| b.until).min();
            let until = retry.map_or(started + timeout, |r| r.min(started + timeout));
            tokio::time::sleep_until(until.into()).await;
        } else if let Ok(Some(first)) = tokio::time::timeout(timeout, in_flight.next()).await {
            answers.push(first);
        }
        while let Some(Some(more)) = in_flight.next().now_or_never() {
            answers.push(more);
        }
        for (asked, answer) in answers {
            for (tp, _) in &asked {
                self.covered.remove(tp);
            }
            let response = match answer {
                Ok(r) => r.into_inner(),
                Err(s) if s.code() == Code::OutOfRange => {
                    let partitions: Vec<TopicPartition> =
                        asked.into_iter().map(|(tp, _)| tp).collect();
                    self.reset_out_of_range(&partitions).await?;
                    continue;
                }
                Err(s) => {
                    let e = ClientError::from(s);
                    if !e.is_retriable() {
                        return Err(e);
                    }
                    // A moved or dead leader, an election, a lagging follower: these
                    // partitions wait and are fetched again after fresh metadata.
                    let partitions: Vec<TopicPartition> =
                        asked.into_iter().map(|(tp, _)| tp).collect();
                    self.back_off(&partitions, &e).await;
                    continue;
                }
            };
            let asked: BTreeMap<TopicPartition, u64> = asked.into_iter().collect();
            for data in response.partitions {
                let tp = TopicPartition::new(data.topic.clone(), data.partition);
                self.backoff.remove(&tp);
                // An answer for a partition since moved (seek, reset, revoked) is stale.
                let Some(Some(position)) = self.positions.get(&tp).copied() else {
                    continue;
                };
                if asked.get(&tp) != Some(&position) {
                    continue;
                }
                let next = decode(&data, position, &mut self.buffered)?;
                self.positions.insert(tp, Some(next));
            }
        }
        Ok(())
    }

    /// Gives partitions without a position one: the group's committed offset, else per
    /// `auto_offset_reset`. A partition whose leader cannot answer now backs off; the
    /// others go on.
    async fn resolve_positions(&mut self, now: Instant) -> Result<(), ClientError> {
        let unknown: Vec<TopicPartition> = self
            .positions
            .iter()
            .filter(|(tp, p)| p.is_none() && !self.backing_off(tp, now))
            .map(|(tp, _)| tp.clone())
            .collect();
        if unknown.is_empty() {
            return Ok(());
        }
        let committed = match &mut self.group {
            Some(g) => match g.fetch(&unknown).await {
                Ok(c) => c,
                Err(e) if e.is_retriable() => {
                    self.back_off(&unknown, &e).await;
                    return Ok(());
                }
                Err(e) => return Err(e),
            },
            None => BTreeMap::new(),
        };
        for tp in unknown {
            match committed.get(&tp) {
                Some(&offset) => {
                    self.positions.insert(tp, Some(offset));
                }
                None => match self.reset(&tp).await {
                    Ok(()) => {}
                    Err(e) if e.is_retriable() => self.back_off(&[tp], &e).await,
                    Err(e) => return Err(e),
                },
            }
        }
        Ok(())
    }

    /// After an out-of-range answer to a fetch of `partitions`: resets each whose
    /// position is outside its log, per `auto_offset_reset`.
    async fn reset_out_of_range(
        &mut self,
        partitions: &[TopicPartition],
    ) -> Result<(), ClientError> {
        for tp in partitions {
            let Some(&pos) = self.positions.get(tp) else {
                continue; // no longer assigned
            };
            match self
                .list_offset(tp, Spec::Earliest(true), Duration::ZERO)
                .await
            {
                Ok((_, start, end)) if pos.is_none_or(|p| p < start || p > end) => {
                    match self.reset(tp).await {
                        Err(e) if e.is_retriable() => {
                            self.back_off(std::slice::from_ref(tp), &e).await
                        }
                        other => other?,
                    }
                }
                Ok(_) => {}
                Err(e) if e.is_retriable() => self.back_off(std::slice::from_ref(tp), &e).await,
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }
}

fn async_stream_records(
    consumer: Consumer,
) -> impl Stream<Item = Result<ConsumerRecord, ClientError>> {
    let ready = Vec::new().into_iter();
    futures::stream::unfold(Some((consumer, ready)), |state| async move {
        let (mut c, mut ready) = state?;
        loop {
            if let Some(r) = ready.next() {
                return Some((Ok(r), Some((c, ready))));
            }
            if c.buffered.is_empty() {
                if let Err(e) = c.fetch(Duration::from_secs(1)).await {
                    return Some((Err(e), None));
                }
            }
            ready = std::mem::take(&mut c.buffered).into_iter();
        }
    })
}

/// Decodes the batches of one partition's fetch into `out`, skipping records before
/// `position` and control batches; returns the position after them.
fn decode(
    data: &v1::PartitionData,
    position: u64,
    out: &mut Vec<ConsumerRecord>,
) -> Result<u64, ClientError> {
    let mut next = position;
    let mut pos = 0;
    let buf = &data.records;
    let bad = |offset: u64, reason: String| ClientError::BadBatch {
        topic: data.topic.clone(),
        partition: data.partition,
        offset,
        reason,
    };
    let topic: Arc<str> = data.topic.as_str().into();
    while pos < buf.len() {
        let (h, len) = verify_stored(&buf[pos..]).map_err(|e| bad(next, e.to_string()))?;
        let batch = buf.slice(pos..pos + len);
        pos += len;
        let batch_next = h.next_offset() as u64;
        if batch_next <= position || h.is_control() {
            next = next.max(batch_next);
            continue;
        }
        let codec = h
            .compression()
            .ok_or_else(|| bad(h.base_offset as u64, "unknown compression".into()))?;
        let section: Bytes = if codec == Compression::None {
            batch.slice(HEADER_LEN..)
        } else {
            Bytes::from(
                decompress(codec, &batch[HEADER_LEN..], MAX_DECOMPRESSED_LEN)
                    .map_err(|e| bad(h.base_offset as u64, e.to_string()))?,
            )
        };
        push_records(&topic, data.partition, &h, &section, position, out)
            .map_err(|e| bad(h.base_offset as u64, e))?;
        next = next.max(batch_next);
    }
    Ok(next)
}

fn push_records(
    topic: &Arc<str>,
    partition: u32,
    h: &BatchHeader,
    section: &Bytes,
    position: u64,
    out: &mut Vec<ConsumerRecord>,
) -> Result<(), String> {
    let share = |s: Option<&[u8]>| s.map(|s| section.slice_ref(s));
    out.reserve(h.record_count as usize);
    for r in Records::new(section, h.record_count as usize) {
        let r = r.map_err(|e| e.to_string())?;
        let offset = h.base_offset as u64 + r.offset_delta as u64;
        if offset < position {
            continue;
        }
        out.push(ConsumerRecord {
            topic: topic.clone(),
            partition,
            offset,
            timestamp: h.base_timestamp + r.timestamp_delta,
            key: share(r.key),
            value: share(r.value),
            headers: r
                .headers
                .clone()
                .map(|(k, v)| Header {
                    key: String::from_utf8_lossy(k).into_owned(),
                    value: share(v),
                })
                .collect(),
        });
    }
    Ok(())
}
