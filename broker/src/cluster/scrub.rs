//! The scrubber: every sealed segment of every replica on this broker is read whole and
//! verified in the background, soon after the broker starts (or the replica does, or the
//! segment is sealed) and every [`SCRUB_EVERY`] after, at most [`SCRUB_RATE`]; a damaged
//! one is repaired with another replica's copy of the same offsets (see `log::scrub`:
//! rewritten in place, never truncated).
//!
//! Until it is repaired, a read of the damaged batch fails with DATA_LOSS on this
//! replica (its checksum does not match): nothing damaged is ever served, and readers
//! of the leader are not affected when the damage is on a follower.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rafka_proto::v1;

use super::node::ClusterNode;
use super::replica::ReplicatedPartition;
use crate::log::{LogError, SealedRange, MAX_RAW_READ};

/// Bytes verified per second, at most: a background pass must not crowd out the
/// produce and fetch paths' disk reads and CPU.
pub const SCRUB_RATE: u64 = 128 << 20;
/// How long a verified segment is left alone before it is verified again.
pub const SCRUB_EVERY: Duration = Duration::from_secs(6 * 3600);
/// How often the scrubber looks for segments due (new replicas, newly sealed segments,
/// or verified longer than [`SCRUB_EVERY`] ago).
pub const SCRUB_TICK: Duration = Duration::from_secs(1);
/// The wait before a damaged segment is tried again when no replica could repair it
/// (the others down, or this replica's high watermark not yet past it after a restart).
const RETRY_REPAIR: Duration = Duration::from_millis(500);

impl ClusterNode {
    /// Runs scrub rounds until the broker stops: every [`SCRUB_TICK`], each sealed
    /// segment of every running replica not verified in the last [`SCRUB_EVERY`] is
    /// verified (so replicas started after the broker, or segments sealed since, are
    /// covered soon), and damaged ones are repaired.
    pub(super) async fn scrub(node: Arc<Self>) {
        let mut verified: HashMap<(u64, u64), Instant> = HashMap::new();
        loop {
            if !node.liveness().is_opening() {
                let damaged = node.scrub_round(&mut verified).await;
                if node.repair_all(damaged).await {
                    return;
                }
            }
            if node.pause(SCRUB_TICK).await {
                return;
            }
        }
    }

    /// Verifies the segments due; returns the damaged ones.
    async fn scrub_round(
        &self,
        verified: &mut HashMap<(u64, u64), Instant>,
    ) -> Vec<(Arc<ReplicatedPartition>, SealedRange)> {
        let mut damaged = Vec::new();
        let mut seen = HashSet::new();
        for p in self.running_replicas() {
            for seg in p.reader().sealed_segments() {
                let key = (p.group, seg.base);
                seen.insert(key);
                if verified
                    .get(&key)
                    .is_some_and(|t| t.elapsed() < SCRUB_EVERY)
                {
                    continue;
                }
                let reader = p.reader().clone();
                let result =
                    tokio::task::spawn_blocking(move || reader.verify_segment(seg.base)).await;
                match result {
                    Ok(Err(e @ LogError::Corrupt { .. })) => {
                        tracing::warn!(topic = %p.topic, partition = p.partition, "damaged segment found: {e}; repairing it from another replica");
                        damaged.push((p.clone(), seg));
                    }
                    // Verified, or gone meanwhile (retention): done either way.
                    _ => {
                        verified.insert(key, Instant::now());
                    }
                }
                let pace = Duration::from_secs_f64(seg.len as f64 / SCRUB_RATE as f64);
                if self.pause(pace).await {
                    return Vec::new();
                }
            }
        }
        verified.retain(|k, _| seen.contains(k));
        damaged
    }

    /// Repairs `damaged`, retrying until each is done; true if the broker stopped.
    async fn repair_all(&self, mut damaged: Vec<(Arc<ReplicatedPartition>, SealedRange)>) -> bool {
        while !damaged.is_empty() {
            let mut left = Vec::new();
            for (p, seg) in damaged {
                match p.repair_from_peers(self, seg).await {
                    Ok(from) => {
                        tracing::warn!(topic = %p.topic, partition = p.partition, base = seg.base, "repaired the damaged segment with broker {from}'s copy")
                    }
                    Err(why) => {
                        tracing::warn!(topic = %p.topic, partition = p.partition, base = seg.base, "damaged segment not repaired yet: {why}");
                        left.push((p, seg));
                    }
                }
            }
            damaged = left;
            if !damaged.is_empty() && self.pause(RETRY_REPAIR).await {
                return true;
            }
        }
        false
    }

    /// Waits `d`; true if the broker stopped meanwhile.
    async fn pause(&self, d: Duration) -> bool {
        tokio::select! {
            _ = tokio::time::sleep(d) => false,
            _ = self.tasks().stopped() => true,
        }
    }
}

impl ReplicatedPartition {
    /// Rewrites the damaged sealed segment `seg` with the first intact copy another
    /// replica serves; returns that replica's broker id.
    async fn repair_from_peers(&self, node: &ClusterNode, seg: SealedRange) -> Result<u32, String> {
        if seg.next > self.high_watermark() {
            return Err("its offsets are not all committed yet".into());
        }
        let brokers = node.state().brokers;
        let mut why = Vec::new();
        for r in self.preferred_replicas() {
            let Some(b) = brokers.get(&r).filter(|_| r as u64 != self.node) else {
                continue;
            };
            let copy = match fetch_range(node, &b.address, &self.topic, self.partition, seg).await {
                Ok(c) => c,
                Err(e) => {
                    why.push(format!("broker {r}: {e}"));
                    continue;
                }
            };
            let reader = self.reader().clone();
            let repaired =
                tokio::task::spawn_blocking(move || reader.repair_segment(seg.base, &copy)).await;
            match repaired {
                Ok(Ok(_)) => return Ok(r),
                Ok(Err(e)) => why.push(format!("broker {r}'s copy: {e}")),
                Err(e) => why.push(e.to_string()),
            }
        }
        Err(why.join("; "))
    }
}

/// Another replica's stored batches of `seg`'s offsets (control batches at both ends
/// included), from the broker at `address`.
async fn fetch_range(
    node: &ClusterNode,
    address: &str,
    topic: &str,
    partition: u32,
    seg: SealedRange,
) -> Result<Vec<u8>, String> {
    let channel = node
        .channels()
        .endpoint(address)?
        .connect_timeout(Duration::from_secs(2))
        .timeout(Duration::from_secs(10))
        .connect()
        .await
        .map_err(|e| e.to_string())?;
    let mut client = v1::admin_client::AdminClient::new(channel)
        .max_decoding_message_size(MAX_RAW_READ + (1 << 20));
    let answer = client
        .read_replica_log(v1::ReadReplicaLogRequest {
            topic: topic.to_string(),
            partition,
            from_offset: seg.base,
            to_offset: seg.next,
        })
        .await
        .map_err(|s| s.message().to_string())?;
    Ok(answer.into_inner().records.to_vec())
}
