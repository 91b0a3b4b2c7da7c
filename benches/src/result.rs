//! The JSON result of one `rafka-bench run`: the same fields whichever system ran it, so
//! `rafka-bench compare` and `chart` can read a rafka and a JetStream run side by side.

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

use crate::limits::Limits;

/// One run of a workload against one system.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunResult {
    /// `rafka` or `jetstream`.
    pub system: String,
    /// The workload's name.
    pub workload: String,
    /// Length of the measured window in seconds.
    pub seconds: f64,
    /// Value bytes per record.
    pub record_size: usize,
    /// Partitions (JetStream: subjects `<topic>.<partition>` of one stream).
    pub partitions: u32,
    /// Replicas per partition (JetStream: the stream's replicas).
    pub replication_factor: u32,
    /// The acks the workload asked for (JetStream always answers after its replication quorum).
    pub acks: String,
    /// The topic's flush policy (JetStream: the servers were started with
    /// `sync_interval: always` when this is `always`).
    pub flush: String,
    /// Records acknowledged per second in the window.
    pub produced_records_per_sec: f64,
    /// Value bytes acknowledged per second in the window, in MB/s.
    pub produced_mb_per_sec: f64,
    /// Records consumed per second in the window.
    pub consumed_records_per_sec: f64,
    /// Value bytes consumed per second in the window, in MB/s.
    pub consumed_mb_per_sec: f64,
    /// Send-to-acknowledgement latency percentiles, ms.
    pub send_p50_ms: f64,
    /// See `send_p50_ms`.
    pub send_p99_ms: f64,
    /// See `send_p50_ms`.
    pub send_p999_ms: f64,
    /// Produce-to-consume latency percentiles (the value carries its send time), ms.
    pub e2e_p50_ms: f64,
    /// See `e2e_p50_ms`.
    pub e2e_p99_ms: f64,
    /// See `e2e_p50_ms`.
    pub e2e_p999_ms: f64,
    /// Records written before the consumers started (the `catch-up` workload), else 0.
    pub backlog_records: u64,
    /// Seconds the backlog took to write and acknowledge.
    pub backlog_write_secs: Option<f64>,
    /// Seconds from the consumers' start until they had read every record acknowledged
    /// before they started; `None` when there was no backlog or they did not get there.
    pub catch_up_secs: Option<f64>,
    /// Produced and consumed records per second over the window, one point per second.
    pub series: Vec<SeriesPoint>,
    /// Send-to-acknowledgement latency by percentile.
    pub send_latency_curve: Vec<CurvePoint>,
    /// Produce-to-consume latency by percentile.
    pub e2e_latency_curve: Vec<CurvePoint>,
    /// This machine's limits, when measured or given.
    pub limits: Option<Limits>,
    /// The rates as fractions of those limits.
    pub fractions: Option<Fractions>,
    /// The brokers' stage latencies over the window (with `--metrics`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub stages: Vec<crate::stages::StageStat>,
}

/// Rates over one interval of the measured window.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SeriesPoint {
    /// Seconds from the window's start to the interval's end.
    pub t: f64,
    /// Records acknowledged per second in the interval.
    pub produced_per_sec: f64,
    /// Records consumed per second in the interval.
    pub consumed_per_sec: f64,
}

/// A point of a latency percentile curve.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CurvePoint {
    /// Percentile, 0 to 100.
    pub percentile: f64,
    /// Latency at it, ms.
    pub ms: f64,
}

/// Rates as fractions of the machine's limits measured in the same run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Fractions {
    /// The write bandwidth produce is held against: fdatasync'd writes when the flush
    /// policy is `always`, else buffered writes (MB/s).
    pub produce_limit_mb_per_sec: f64,
    /// Produced MB/s / that limit.
    pub produce_of_write: f64,
    /// Produced MB/s times the replication factor (every replica writes on this one
    /// machine) / that limit.
    pub produce_all_replicas_of_write: f64,
    /// Consumed MB/s / memory copy bandwidth.
    pub consume_of_memcpy: f64,
    /// Consumed MB/s / one loopback TCP connection's bandwidth.
    pub consume_of_loopback_tcp: f64,
}

impl Fractions {
    /// The fractions of `limits` that the rates of `r` are.
    pub fn of(r: &RunResult, limits: &Limits) -> Self {
        let write = if r.flush == "always" {
            limits.fsync_write
        } else {
            limits.buffered_write
        };
        Self {
            produce_limit_mb_per_sec: write,
            produce_of_write: r.produced_mb_per_sec / write,
            produce_all_replicas_of_write: r.produced_mb_per_sec * f64::from(r.replication_factor)
                / write,
            consume_of_memcpy: r.consumed_mb_per_sec / limits.memcpy,
            consume_of_loopback_tcp: r.consumed_mb_per_sec / limits.loopback_tcp,
        }
    }
}

/// Percentiles of the latency curves: dense up to the median, then towards the tail by
/// halving the remainder (90, 95, 97.5, ...), as HdrHistogram's percentile output does.
pub const CURVE_PERCENTILES: &[f64] = &[
    0.0, 10.0, 20.0, 30.0, 40.0, 50.0, 60.0, 70.0, 75.0, 80.0, 85.0, 90.0, 92.5, 95.0, 96.25, 97.5,
    98.125, 98.75, 99.0, 99.375, 99.5, 99.6875, 99.75, 99.84375, 99.9, 99.92, 99.95, 99.96, 99.97,
    99.98, 99.99, 99.995, 99.999, 100.0,
];

/// The latency curve of `h` (ns) in ms; empty if nothing was recorded.
pub fn curve(h: &Histogram<u64>) -> Vec<CurvePoint> {
    if h.is_empty() {
        return Vec::new();
    }
    CURVE_PERCENTILES
        .iter()
        .map(|&p| CurvePoint {
            percentile: p,
            ms: h.value_at_quantile(p / 100.0) as f64 / 1e6,
        })
        .collect()
}

/// p50, p99 and p99.9 of `h` (ns) in ms.
pub fn quantiles(h: &Histogram<u64>) -> [f64; 3] {
    [0.5, 0.99, 0.999].map(|q| h.value_at_quantile(q) as f64 / 1e6)
}
