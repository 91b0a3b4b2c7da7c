//! The broker's metrics: lock-free latency histograms for each stage a record passes
//! through, and their Prometheus text (via `prometheus-client`'s encoder).
//!
//! A histogram is a fixed row of atomic bucket counters, so an observation costs one
//! clock read, a short search and two relaxed atomic adds: no lock, no allocation.
//! The stages are process-wide statics (`STAGES`), observed where the work happens.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use prometheus_client::encoding::{EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;

/// Upper bounds of the latency buckets, in seconds: fine below 10 ms, where the stages
/// of a healthy request live, and coarse above it up to 10 s.
pub const LATENCY_BOUNDS: [f64; 30] = [
    0.000_025, 0.000_05, 0.000_1, 0.000_15, 0.000_2, 0.000_3, 0.000_4, 0.000_5, 0.000_75, 0.001,
    0.001_25, 0.001_5, 0.002, 0.002_5, 0.003, 0.004, 0.005, 0.007_5, 0.01, 0.015, 0.02, 0.03, 0.05,
    0.075, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0,
];

/// Bucket bounds in nanoseconds, for the search on the hot path.
const BOUNDS_NS: [u64; 30] = {
    let mut out = [0u64; 30];
    let mut i = 0;
    while i < 30 {
        out[i] = (LATENCY_BOUNDS[i] * 1e9) as u64;
        i += 1;
    }
    out
};

/// Whether the hot path counts and times (`rafka start --metrics false` turns it off).
static ENABLED: AtomicBool = AtomicBool::new(true);

/// Turns the hot path's counting and timing on or off for the whole process.
pub fn set_enabled(on: bool) {
    ENABLED.store(on, Ordering::Relaxed);
}

/// Whether the hot path counts and times.
#[inline]
pub fn enabled() -> bool {
    ENABLED.load(Ordering::Relaxed)
}

/// A latency histogram with `LATENCY_BOUNDS` buckets (and one past the last).
#[derive(Debug)]
pub struct Histogram {
    buckets: [AtomicU64; 31],
    sum_ns: AtomicU64,
}

impl Histogram {
    /// An empty histogram (usable in a `static`).
    pub const fn new() -> Self {
        Self {
            buckets: [const { AtomicU64::new(0) }; 31],
            sum_ns: AtomicU64::new(0),
        }
    }

    /// Counts one duration.
    pub fn observe(&self, d: Duration) {
        if !enabled() {
            return;
        }
        let ns = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        let i = BOUNDS_NS.partition_point(|&b| b < ns);
        self.buckets[i].fetch_add(1, Ordering::Relaxed);
        self.sum_ns.fetch_add(ns, Ordering::Relaxed);
    }

    /// Counts the time since `start`.
    pub fn since(&self, start: Instant) {
        self.observe(start.elapsed());
    }

    /// A guard that counts the time until it is dropped (for functions of many returns).
    pub fn timer(&'static self) -> Timer {
        Timer(self, Instant::now())
    }

    /// Per-bucket counts (not cumulative) with their upper bounds, the last `+Inf`.
    pub fn buckets(&self) -> Vec<(f64, u64)> {
        self.buckets
            .iter()
            .enumerate()
            .map(|(i, c)| {
                let bound = LATENCY_BOUNDS.get(i).copied().unwrap_or(f64::INFINITY);
                (bound, c.load(Ordering::Relaxed))
            })
            .collect()
    }

    /// Sum of the observations in seconds.
    pub fn sum_seconds(&self) -> f64 {
        self.sum_ns.load(Ordering::Relaxed) as f64 / 1e9
    }
}

impl Default for Histogram {
    fn default() -> Self {
        Self::new()
    }
}

/// Counts its lifetime into a histogram when dropped.
#[must_use = "the timer counts when dropped"]
pub struct Timer(&'static Histogram, Instant);

impl Drop for Timer {
    fn drop(&mut self) {
        self.0.since(self.1);
    }
}

/// A static histogram as a registered metric.
#[derive(Debug)]
struct Static(&'static Histogram);

impl EncodeMetric for Static {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        let buckets = self.0.buckets();
        let count = buckets.iter().map(|(_, c)| c).sum();
        encoder.encode_histogram::<NoLabelSet>(self.0.sum_seconds(), count, &buckets, None)
    }

    fn metric_type(&self) -> MetricType {
        MetricType::Histogram
    }
}

/// A label set: (name, value) pairs.
pub type LabelSet = Vec<(&'static str, String)>;

/// Histograms told apart by labels, as one registered metric.
#[derive(Debug)]
pub struct Labeled(pub Vec<(LabelSet, std::sync::Arc<Histogram>)>);

impl EncodeMetric for Labeled {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        for (labels, h) in &self.0 {
            let buckets = h.buckets();
            let count = buckets.iter().map(|(_, c)| c).sum();
            encoder
                .encode_family(labels)?
                .encode_histogram::<NoLabelSet>(h.sum_seconds(), count, &buckets, None)?;
        }
        Ok(())
    }

    fn metric_type(&self) -> MetricType {
        MetricType::Histogram
    }
}

/// Where a produced record spends its time, stage by stage, on the broker.
#[derive(Debug)]
pub struct Stages {
    /// A produce request from decoded to answered (validation and every partition).
    pub produce_request: Histogram,
    /// Checking a produce request's batches (CRC, sizes, topic and partitions).
    pub produce_validate: Histogram,
    /// An `acks=all` batch from proposed to committed and applied on its leader.
    pub raft_commit: Histogram,
    /// An `acks=leader` batch from proposed to in the leader's log per its flush policy.
    pub leader_append: Histogram,
    /// The Raft log store writing entries into the partition log (no sync).
    pub log_write: Histogram,
    /// A log append from queued at the flusher to reported durable (queue and sync).
    pub log_durable: Histogram,
    /// One fdatasync of a flusher round (appends queued together share it).
    pub log_sync: Histogram,
    /// A call to a peer (AppendEntries or Vote) from sent on its link to answered.
    pub peer_call: Histogram,
    /// A peer's AppendEntries handled here: from received to answer ready.
    pub peer_append: Histogram,
    /// A fetch request from decoded to answered, waiting for data included.
    pub fetch_request: Histogram,
}

/// The process's stage histograms.
pub static STAGES: Stages = Stages {
    produce_request: Histogram::new(),
    produce_validate: Histogram::new(),
    raft_commit: Histogram::new(),
    leader_append: Histogram::new(),
    log_write: Histogram::new(),
    log_durable: Histogram::new(),
    log_sync: Histogram::new(),
    peer_call: Histogram::new(),
    peer_append: Histogram::new(),
    fetch_request: Histogram::new(),
};

/// Every stage with its metric name (under `rafka_`, with `_seconds`) and help text.
pub fn stages() -> [(&'static str, &'static str, &'static Histogram); 10] {
    let s = &STAGES;
    [
        (
            "produce_request",
            "Produce requests from decoded to answered",
            &s.produce_request,
        ),
        (
            "produce_validate",
            "Validation of produce requests",
            &s.produce_validate,
        ),
        (
            "raft_commit",
            "acks=all batches from proposed to committed and applied",
            &s.raft_commit,
        ),
        (
            "leader_append",
            "acks=leader batches from proposed to in the leader's log",
            &s.leader_append,
        ),
        (
            "log_write",
            "Raft log entries written into the partition log (no sync)",
            &s.log_write,
        ),
        (
            "log_durable",
            "Log appends from queued at the flusher to reported durable",
            &s.log_durable,
        ),
        (
            "log_sync",
            "fdatasync calls of the log flusher",
            &s.log_sync,
        ),
        (
            "peer_call",
            "Calls to peers (AppendEntries, Vote) from sent to answered",
            &s.peer_call,
        ),
        (
            "peer_append",
            "Peers' AppendEntries handled here, received to answer ready",
            &s.peer_append,
        ),
        (
            "fetch_request",
            "Fetch requests from decoded to answered, waits included",
            &s.fetch_request,
        ),
    ]
}

/// A registry holding every metric of this process.
pub fn registry() -> Registry {
    let mut registry = Registry::with_prefix("rafka");
    for (name, help, h) in stages() {
        registry.register_with_unit(
            name,
            help,
            prometheus_client::registry::Unit::Seconds,
            Static(h),
        );
    }
    registry
}

/// The metrics in the Prometheus (OpenMetrics) text format.
pub fn text() -> String {
    let mut out = String::new();
    // Writing into a String cannot fail.
    let _ = prometheus_client::encoding::text::encode(&mut out, &registry());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn observations_land_in_the_bucket_of_their_bound() {
        let h = Histogram::new();
        h.observe(Duration::from_micros(20)); // <= 25 µs
        h.observe(Duration::from_micros(25)); // == bound: same bucket (le)
        h.observe(Duration::from_micros(26)); // next
        h.observe(Duration::from_secs(60)); // past the last bound
        let b = h.buckets();
        assert_eq!(b[0], (0.000_025, 2));
        assert_eq!(b[1], (0.000_05, 1));
        assert_eq!(b[30], (f64::INFINITY, 1));
        assert_eq!(b.iter().map(|(_, c)| c).sum::<u64>(), 4);
        assert!((h.sum_seconds() - 60.000_071).abs() < 1e-9);
    }

    #[test]
    fn text_has_cumulative_buckets_per_stage() {
        STAGES.log_sync.observe(Duration::from_micros(300));
        let text = text();
        assert!(
            text.contains("# TYPE rafka_log_sync_seconds histogram"),
            "{text}"
        );
        assert!(
            text.contains("rafka_log_sync_seconds_bucket{le=\"+Inf\"}"),
            "{text}"
        );
        assert!(
            text.contains("rafka_produce_request_seconds_count"),
            "{text}"
        );
    }
}
