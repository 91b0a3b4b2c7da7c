//! The broker's view of its replicas as metrics: read when `/metrics` is scraped, so the
//! produce and fetch paths pay only for the traffic counters (a few relaxed atomic adds
//! per request and partition, none per record).
//!
//! Per partition replica on this broker (labels `topic`, `partition`): log start and end
//! offsets, high watermark, size, segments, Raft term, the leader as known here, whether
//! this broker leads, records and bytes in (appended as leader) and out (fetched from
//! this replica); per follower of a partition led here, its lag in Raft entries. Per
//! broker: partitions led, under-replicated partitions (led here, with a voter down),
//! offline partitions (replicas here that know no live leader).

use std::sync::atomic::{AtomicU64, Ordering};

use prometheus_client::encoding::EncodeMetric;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::TypedMetric;
use prometheus_client::registry::{Registry, Unit};

use super::node::ClusterNode;
use crate::raft::types::typ;

/// A replica's traffic, counted where requests are answered.
#[derive(Debug, Default)]
pub struct Traffic {
    records_in: AtomicU64,
    bytes_in: AtomicU64,
    records_out: AtomicU64,
    bytes_out: AtomicU64,
}

impl Traffic {
    /// Counts records appended here as leader.
    pub fn appended(&self, records: u64, bytes: u64) {
        if !crate::metrics::enabled() {
            return;
        }
        self.records_in.fetch_add(records, Ordering::Relaxed);
        self.bytes_in.fetch_add(bytes, Ordering::Relaxed);
    }

    /// Counts records served by a fetch from this replica.
    pub fn fetched(&self, records: u64, bytes: u64) {
        if !crate::metrics::enabled() {
            return;
        }
        self.records_out.fetch_add(records, Ordering::Relaxed);
        self.bytes_out.fetch_add(bytes, Ordering::Relaxed);
    }
}

/// Sums of [`Traffic`] over a broker's replicas.
#[derive(Debug, Default, Clone, Copy, serde::Serialize)]
pub struct TrafficTotals {
    /// Records appended as leader.
    pub records_in: u64,
    /// Batch bytes appended as leader.
    pub bytes_in: u64,
    /// Records served by fetches.
    pub records_out: u64,
    /// Batch bytes served by fetches.
    pub bytes_out: u64,
}

type Labels = Vec<(&'static str, String)>;

/// A family of metrics `M` registered under `name` (a counter's gets `_total`).
fn family<M>(
    registry: &mut Registry,
    name: &str,
    help: &str,
    unit: Option<Unit>,
) -> Family<Labels, M>
where
    M: EncodeMetric + TypedMetric + Default + std::fmt::Debug + Send + Sync + 'static,
{
    let family = Family::<Labels, M>::default();
    match unit {
        Some(u) => registry.register_with_unit(name, help, u, family.clone()),
        None => registry.register(name, help, family.clone()),
    }
    family
}

fn gauges(r: &mut Registry, name: &str, help: &str, unit: Option<Unit>) -> Family<Labels, Gauge> {
    family(r, name, help, unit)
}

fn counters(
    r: &mut Registry,
    name: &str,
    help: &str,
    unit: Option<Unit>,
) -> Family<Labels, Counter> {
    family(r, name, help, unit)
}

impl ClusterNode {
    /// Adds this broker's replica and partition metrics, as they are now, to `registry`.
    pub fn register_metrics(&self, registry: &mut Registry) {
        let r = registry;
        let log_start = gauges(
            r,
            "partition_log_start_offset",
            "First offset the replica holds",
            None,
        );
        let log_end = gauges(
            r,
            "partition_log_end_offset",
            "Offset the replica's next record gets",
            None,
        );
        let hw = gauges(
            r,
            "partition_high_watermark",
            "Offsets below this are committed, as the replica knows",
            None,
        );
        let size = gauges(
            r,
            "partition_size",
            "Bytes of the replica's log segments",
            Some(Unit::Bytes),
        );
        let segments = gauges(r, "partition_segments", "Log segments of the replica", None);
        let term = gauges(
            r,
            "partition_raft_term",
            "The Raft term of the partition's group on this replica",
            None,
        );
        let leader = gauges(
            r,
            "partition_leader",
            "The partition's leader as this replica knows it (0: none)",
            None,
        );
        let is_leader = gauges(
            r,
            "partition_is_leader",
            "1 where this broker leads the partition",
            None,
        );
        let lag = gauges(
            r,
            "partition_follower_lag_entries",
            "Raft entries a follower lacks, as its leader here sees it",
            None,
        );
        let records_in = counters(
            r,
            "partition_produced_records",
            "Records appended as leader",
            None,
        );
        let bytes_in = counters(
            r,
            "partition_produced",
            "Record batch bytes appended as leader",
            Some(Unit::Bytes),
        );
        let records_out = counters(
            r,
            "partition_fetched_records",
            "Records served by fetches from this replica",
            None,
        );
        let bytes_out = counters(
            r,
            "partition_fetched",
            "Record batch bytes served by fetches",
            Some(Unit::Bytes),
        );
        let elections = counters(
            r,
            "partition_leader_elections",
            "Leaders elected for the partition's group (each new leader's first entry, applied here)",
            None,
        );
        let installs = counters(
            r,
            "partition_snapshot_installs",
            "Snapshots installed here from the leader (the replica had fallen below its log start)",
            None,
        );
        let broker = gauges(r, "broker_partitions", "Partitions on this broker by state: replicas, leading, under_replicated (led here, a voter down), offline (no live leader known)", None);
        let me = self.id();
        let (mut replicas, mut leading, mut under, mut offline) = (0, 0, 0, 0);
        let now = std::time::Instant::now();
        for p in self.running_replicas() {
            let labels: Labels = vec![
                ("topic", p.topic.clone()),
                ("partition", p.partition.to_string()),
            ];
            let reader = p.reader();
            log_start
                .get_or_create(&labels)
                .set(reader.log_start_offset() as i64);
            log_end
                .get_or_create(&labels)
                .set(reader.log_end_offset() as i64);
            hw.get_or_create(&labels).set(p.high_watermark() as i64);
            size.get_or_create(&labels).set(reader.size_bytes() as i64);
            segments
                .get_or_create(&labels)
                .set(reader.segment_count() as i64);
            let (current_term, voters, leads) = {
                let m = p.raft.metrics();
                let m = m.borrow();
                let voters: Vec<u64> = m.membership_config.voter_ids().collect();
                (m.current_term, voters, m.state == typ::ServerState::Leader)
            };
            term.get_or_create(&labels).set(current_term as i64);
            let known = p.leader();
            leader.get_or_create(&labels).set(known.unwrap_or(0) as i64);
            is_leader.get_or_create(&labels).set(i64::from(leads));
            replicas += 1;
            if leads {
                leading += 1;
                for (follower, entries) in p.replica_lags() {
                    let mut l = labels.clone();
                    l.push(("follower", follower.to_string()));
                    lag.get_or_create(&l).set(entries as i64);
                }
                if voters
                    .iter()
                    .any(|&v| v != me as u64 && self.liveness().is_down(v, now))
                {
                    under += 1;
                }
            }
            if known.is_none() {
                offline += 1;
            }
            let counts = p.sm.counts();
            elections
                .get_or_create(&labels)
                .inc_by(counts.leader_elections.load(Ordering::Relaxed));
            installs
                .get_or_create(&labels)
                .inc_by(counts.snapshot_installs.load(Ordering::Relaxed));
            let t = &p.traffic;
            records_in
                .get_or_create(&labels)
                .inc_by(t.records_in.load(Ordering::Relaxed));
            bytes_in
                .get_or_create(&labels)
                .inc_by(t.bytes_in.load(Ordering::Relaxed));
            records_out
                .get_or_create(&labels)
                .inc_by(t.records_out.load(Ordering::Relaxed));
            bytes_out
                .get_or_create(&labels)
                .inc_by(t.bytes_out.load(Ordering::Relaxed));
        }
        if let Some((free, total)) = disk_space(self.data_dir()) {
            let help = "Bytes available to the broker on its data directory's file system";
            let free_g = gauges(r, "data_dir_free", help, Some(Unit::Bytes));
            let help = "Size of the data directory's file system";
            let total_g = gauges(r, "data_dir_capacity", help, Some(Unit::Bytes));
            free_g.get_or_create(&vec![]).set(free as i64);
            total_g.get_or_create(&vec![]).set(total as i64);
        }
        for (state, n) in [
            ("replicas", replicas),
            ("leading", leading),
            ("under_replicated", under),
            ("offline", offline),
        ] {
            broker
                .get_or_create(&vec![("state", state.to_string())])
                .set(n);
        }
    }

    /// This broker's replica and partition metrics alone, in the Prometheus text format.
    pub fn metrics_text(&self) -> String {
        let mut registry = Registry::with_prefix("rafka");
        self.register_metrics(&mut registry);
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &registry);
        out
    }

    /// This broker's traffic over all its replicas: records and bytes in (appended as
    /// leader) and out (fetched), since it started.
    pub fn traffic_totals(&self) -> TrafficTotals {
        let mut t = TrafficTotals::default();
        for p in self.running_replicas() {
            let c = &p.traffic;
            t.records_in += c.records_in.load(Ordering::Relaxed);
            t.bytes_in += c.bytes_in.load(Ordering::Relaxed);
            t.records_out += c.records_out.load(Ordering::Relaxed);
            t.bytes_out += c.bytes_out.load(Ordering::Relaxed);
        }
        t
    }

    /// Whether broker `id` is alive as this broker sees it (itself always is).
    pub fn is_broker_up(&self, id: u32) -> bool {
        id == self.id()
            || !self
                .liveness()
                .is_down(id as u64, std::time::Instant::now())
    }

    /// Whether this broker is ready for traffic: it knows the cluster's metadata (a
    /// metadata leader) and has opened every replica placed on it.
    pub fn is_ready(&self) -> bool {
        self.metadata_leader().is_some() && !self.liveness().is_opening()
    }
}

/// Bytes available (to an unprivileged writer) and in all on the file system of `dir`.
fn disk_space(dir: &std::path::Path) -> Option<(u64, u64)> {
    use std::os::unix::ffi::OsStrExt;
    let path = std::ffi::CString::new(dir.as_os_str().as_bytes()).ok()?;
    let mut st = std::mem::MaybeUninit::<libc::statvfs>::uninit();
    // SAFETY: `path` is a NUL-terminated string and `st` is written by statvfs on success.
    let rc = unsafe { libc::statvfs(path.as_ptr(), st.as_mut_ptr()) };
    if rc != 0 {
        return None;
    }
    // SAFETY: statvfs succeeded, so it filled `st`.
    let st = unsafe { st.assume_init() };
    // fsblkcnt_t and c_ulong are 64-bit on the Linux targets rafka builds for.
    let unit = st.f_frsize;
    Some((st.f_bavail * unit, st.f_blocks * unit))
}
