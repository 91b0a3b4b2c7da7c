//! `rafka-bench run WORKLOAD`: a workload file (in the spirit of the OpenMessaging
//! Benchmark) run against rafka or, through the same runner, against NATS JetStream:
//! producers at a target rate (or flat out) and a group of consumers reading concurrently;
//! reports produce and consume rates (overall and per second), send-to-ack and end-to-end
//! (produce to consume) latency percentiles after a warm-up, and those rates as fractions
//! of the machine's limits.
//!
//! ```text
//! Workload ──► run_with::<D: Driver> ──► D::Sender   × producers ─► produce(): pacing, timestamps,
//!                  │  (warm-up, window,                             acks awaited in order
//!                  │   per-second series)  D::Receiver × consumers ─► consume(): end-to-end latency
//!                  ▼
//!              RunResult (JSON)           drivers: rafka_driver, kafka, jetstream
//! ```
//!
//! A workload with `backlog_bytes` (the `catch-up` workload) first writes that backlog
//! flat out with no consumer running, then starts the consumers from the earliest record
//! while the producers go on at `rate`; the window ends once the consumers have read the
//! backlog (or after `duration_secs`).

use std::collections::BTreeMap;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use bytes::Bytes;
use hdrhistogram::Histogram;
use serde::Deserialize;
use tokio::task::JoinHandle;

use crate::jetstream::{JetStreamDriver, JetStreamOptions};
use crate::limits::Limits;
use crate::report::histogram;
use crate::result::{curve, quantiles, Fractions, RunResult, SeriesPoint};

/// A workload file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Workload {
    /// Name in reports.
    pub name: String,
    /// Topic (created if missing).
    pub topic: String,
    /// Partitions of the topic.
    pub partitions: u32,
    /// Replicas per partition.
    #[serde(default = "one")]
    pub replication_factor: u32,
    /// Value bytes per record.
    pub record_size: usize,
    /// Producer clients.
    #[serde(default = "one")]
    pub producers: u32,
    /// Consumers in one group (0: none).
    #[serde(default = "one")]
    pub consumers: u32,
    /// Give records keys (from a space of 10,000).
    #[serde(default)]
    pub keyed: bool,
    /// Records/s over all producers; 0: as fast as possible.
    #[serde(default)]
    pub rate: u64,
    /// Seconds before measuring.
    #[serde(default = "two")]
    pub warmup_secs: u64,
    /// Seconds measured (with a backlog: at most, the window ends when the consumers have
    /// caught up).
    pub duration_secs: u64,
    /// Bytes of values written before the consumers start, which then read from the
    /// earliest record (0: none; consumers start at the end of the topic).
    #[serde(default)]
    pub backlog_bytes: u64,
    /// all | leader | none.
    #[serde(default = "all")]
    pub acks: String,
    /// none | gzip | snappy | lz4 | zstd.
    #[serde(default = "no_compression")]
    pub compression: String,
    /// How long the producer lets a batch wait for more records (rafka's `linger`;
    /// absent: the client's default, 5 ms).
    #[serde(default)]
    pub linger_ms: Option<u64>,
    /// Topic configs (e.g. `flush = "always"`).
    #[serde(default)]
    pub topic_configs: BTreeMap<String, String>,
    /// rafka's idempotent producer (absent: the client's default, on with acks=all).
    #[serde(default)]
    pub idempotence: Option<bool>,
    /// Produce requests in flight per partition with idempotence (absent: the
    /// client's default, 5).
    #[serde(default)]
    pub in_flight_per_partition: Option<usize>,
}

fn one() -> u32 {
    1
}
fn two() -> u64 {
    2
}
fn all() -> String {
    "all".into()
}
fn no_compression() -> String {
    "none".into()
}

impl Workload {
    /// Reads and checks a workload file.
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        let w: Workload =
            toml::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
        anyhow::ensure!(
            w.record_size >= 8,
            "record_size must be at least 8 (a timestamp)"
        );
        anyhow::ensure!(
            w.partitions > 0 && w.producers > 0,
            "partitions and producers must be positive"
        );
        Ok(w)
    }

    /// The topic's flush policy: its `flush` config, else the broker's default (`always`).
    pub fn flush(&self) -> &str {
        self.topic_configs
            .get("flush")
            .map_or("always", String::as_str)
    }

    /// Records in the backlog (`backlog_bytes` rounded up to whole records).
    pub fn backlog_records(&self) -> u64 {
        self.backlog_bytes.div_ceil(self.record_size as u64)
    }
}

/// The system a run drives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum System {
    /// rafka, through `rafka-client`.
    Rafka,
    /// NATS JetStream, through `async-nats`.
    Jetstream,
    /// rafka's Kafka listener, through librdkafka (`rdkafka`).
    Kafka,
}

impl System {
    fn name(self) -> &'static str {
        match self {
            Self::Rafka => "rafka",
            Self::Jetstream => "jetstream",
            Self::Kafka => "kafka",
        }
    }
}

/// Options of `rafka-bench run`.
#[derive(clap::Args)]
pub struct RunArgs {
    /// The workload file (TOML).
    workload: PathBuf,
    /// The system to run it against.
    #[arg(long, value_enum, default_value = "rafka")]
    system: System,
    /// rafka brokers, comma-separated.
    #[arg(long, env = "RAFKA_BOOTSTRAP", default_value = "127.0.0.1:9092")]
    bootstrap: String,
    /// NATS servers, comma-separated (with `--system jetstream`).
    #[arg(long, default_value = "127.0.0.1:4222")]
    nats: String,
    /// rafka's Kafka listeners, comma-separated (with `--system kafka`).
    #[arg(long, default_value = "127.0.0.1:9093")]
    kafka: String,
    /// Write the JSON result here (stdout if absent).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Override the workload's measured seconds.
    #[arg(long)]
    duration_secs: Option<u64>,
    /// Override the workload's warm-up seconds.
    #[arg(long)]
    warmup_secs: Option<u64>,
    /// Override the workload's idempotence (`true` / `false`).
    #[arg(long)]
    idempotence: Option<bool>,
    /// Override the workload's requests in flight per partition (idempotent producers).
    #[arg(long)]
    in_flight_per_partition: Option<usize>,
    /// Override the workload's backlog bytes.
    #[arg(long, value_parser = crate::log_bench::parse_size)]
    backlog_bytes: Option<u64>,
    /// The machine's limits (what `rafka-bench limits --json` wrote); measured before the
    /// run (a second or two, smaller than `rafka-bench limits` measures) if absent.
    #[arg(long)]
    limits: Option<PathBuf>,
    /// Directory for the limits' file writes when they are measured (default: the
    /// system's temporary directory; best on the brokers' file system).
    #[arg(long)]
    limits_dir: Option<PathBuf>,
    /// The brokers' HTTP ports, `host:port,...`: their stage latencies over the window
    /// are read from `/metrics` and reported beside the clients' (rafka only).
    #[arg(long, value_delimiter = ',')]
    metrics: Vec<String>,
    /// Neither read nor measure the limits.
    #[arg(long, conflicts_with = "limits")]
    no_limits: bool,
    #[command(flatten)]
    jetstream: JetStreamOptions,
    #[command(flatten)]
    security: crate::security::Security,
}

/// A producer client of some system.
pub(crate) trait RecordSender: Send + 'static {
    /// Resolves once the record is acknowledged.
    type Ack: Future<Output = anyhow::Result<()>> + Send + 'static;
    /// Hands a record to the client (waiting only for buffer space) in the form the client
    /// takes it (a copy into its own buffer or an owned `Bytes`); the acknowledgement comes
    /// later.
    fn send(
        &mut self,
        key: Option<Bytes>,
        value: &[u8],
    ) -> impl Future<Output = anyhow::Result<Self::Ack>> + Send;
}

/// A consumer client of some system, a member of the run's group.
pub(crate) trait RecordReceiver: Send + 'static {
    /// Appends, for each record that arrives within `timeout` (none: nothing), the send
    /// time its value starts with ([`sent_at`]), read where the client holds the value.
    fn poll(
        &mut self,
        timeout: Duration,
        sent: &mut Vec<Option<u64>>,
    ) -> impl Future<Output = anyhow::Result<()>> + Send;
    /// Leaves the group.
    fn close(self) -> impl Future<Output = anyhow::Result<()>> + Send;
}

/// A system under test: creates the topic and its clients.
pub(crate) trait Driver {
    /// Its producer client.
    type Sender: RecordSender;
    /// Its consumer client.
    type Receiver: RecordReceiver;
    /// Creates the topic if it does not exist.
    fn prepare(&self, w: &Workload) -> impl Future<Output = anyhow::Result<()>>;
    /// Producer `index` of `w.producers`.
    fn sender(
        &self,
        w: &Workload,
        index: u32,
    ) -> impl Future<Output = anyhow::Result<Self::Sender>>;
    /// Member `index` of `w.consumers` in `group`, from the earliest record or from the end.
    fn receiver(
        &self,
        w: &Workload,
        index: u32,
        group: &str,
        from_earliest: bool,
    ) -> impl Future<Output = anyhow::Result<Self::Receiver>>;
}

/// What the producers and consumers share with the runner.
struct Shared {
    stop: AtomicBool,
    measuring: AtomicBool,
    /// Records handed to a client, in all phases (producers claim backlog records here).
    sent: AtomicU64,
    /// Records acknowledged, in all phases.
    acked: AtomicU64,
    /// Records acknowledged in the window.
    produced: AtomicU64,
    /// Records consumed, in all phases.
    consumed_total: AtomicU64,
    /// Records consumed in the window.
    consumed: AtomicU64,
    send_lat: Mutex<Histogram<u64>>,
    e2e_lat: Mutex<Histogram<u64>>,
    backlog_records: u64,
    /// Raised by the acknowledgement that completes the backlog.
    backlog_written: tokio::sync::Notify,
}

fn now_nanos() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

/// `rafka-bench run`.
pub async fn run(args: RunArgs) -> anyhow::Result<()> {
    let mut w = Workload::load(&args.workload)?;
    if let Some(s) = args.duration_secs {
        w.duration_secs = s;
    }
    if let Some(s) = args.warmup_secs {
        w.warmup_secs = s;
    }
    if let Some(b) = args.backlog_bytes {
        w.backlog_bytes = b;
    }
    if args.idempotence.is_some() {
        w.idempotence = args.idempotence;
    }
    if args.in_flight_per_partition.is_some() {
        w.in_flight_per_partition = args.in_flight_per_partition;
    }
    let limits = if args.no_limits {
        None
    } else if let Some(path) = &args.limits {
        Some(Limits::load(path)?)
    } else {
        eprintln!("measuring this machine's limits (--limits FILE to give them)");
        let dir = args.limits_dir.clone().unwrap_or_else(std::env::temp_dir);
        Some(crate::limits::measure(&dir, 256 << 20, 64 << 20, 1 << 20)?)
    };
    let mut result = match args.system {
        System::Rafka => {
            let (tls, credentials) = args.security.client()?;
            let driver = crate::rafka_driver::RafkaDriver {
                bootstrap: args.bootstrap.clone(),
                tls,
                credentials,
            };
            run_with(&driver, &w, System::Rafka, &args.metrics).await?
        }
        System::Jetstream => {
            let driver = JetStreamDriver::new(&args.nats, args.jetstream.clone());
            run_with(&driver, &w, System::Jetstream, &[]).await?
        }
        System::Kafka => {
            let driver = crate::kafka::KafkaDriver::new(&args.kafka);
            run_with(&driver, &w, System::Kafka, &args.metrics).await?
        }
    };
    result.limits = limits;
    result.fractions = limits.map(|l| Fractions::of(&result, &l));
    let json = serde_json::to_string(&result)?;
    match &args.out {
        Some(path) => std::fs::write(path, json + "\n")?,
        None => println!("{json}"),
    }
    print_summary(&result);
    Ok(())
}

fn print_summary(r: &RunResult) {
    eprintln!(
        "{} on {}: produced {:.0} records/s ({:.1} MB/s), consumed {:.0} records/s ({:.1} MB/s); send-to-ack p50/p99/p99.9 {:.2}/{:.2}/{:.2} ms; end-to-end {:.2}/{:.2}/{:.2} ms",
        r.workload,
        r.system,
        r.produced_records_per_sec,
        r.produced_mb_per_sec,
        r.consumed_records_per_sec,
        r.consumed_mb_per_sec,
        r.send_p50_ms,
        r.send_p99_ms,
        r.send_p999_ms,
        r.e2e_p50_ms,
        r.e2e_p99_ms,
        r.e2e_p999_ms,
    );
    if r.backlog_records > 0 {
        eprintln!(
            "  backlog {} records written in {:.1} s; consumers caught up in {}",
            r.backlog_records,
            r.backlog_write_secs.unwrap_or(f64::NAN),
            r.catch_up_secs
                .map_or("(not within the window)".into(), |s| format!("{s:.1} s")),
        );
    }
    if !r.stages.is_empty() {
        crate::stages::print(&r.stages);
    }
    if let (Some(l), Some(f)) = (&r.limits, &r.fractions) {
        eprintln!(
            "  produce {:.1} MB/s = {:.3} of {} write ({:.0} MB/s; x{} replicas: {:.3}); consume {:.1} MB/s = {:.3} of memcpy ({:.0} MB/s), {:.3} of loopback TCP ({:.0} MB/s)",
            r.produced_mb_per_sec,
            f.produce_of_write,
            if r.flush == "always" { "fdatasync'd" } else { "buffered" },
            f.produce_limit_mb_per_sec,
            r.replication_factor,
            f.produce_all_replicas_of_write,
            r.consumed_mb_per_sec,
            f.consume_of_memcpy,
            l.memcpy,
            f.consume_of_loopback_tcp,
            l.loopback_tcp,
        );
        eprintln!(
            "  the disk alone: 16 KiB write + fdatasync p50/p99/p99.9 {:.2}/{:.2}/{:.2} ms",
            l.fsync_16k_p50_ms, l.fsync_16k_p99_ms, l.fsync_16k_p999_ms,
        );
    }
}

/// Runs `w` with `driver`'s clients: the phases, the window and the measurements.
async fn run_with<D: Driver>(
    driver: &D,
    w: &Workload,
    system: System,
    metrics: &[String],
) -> anyhow::Result<RunResult> {
    driver.prepare(w).await?;
    let shared = Arc::new(Shared {
        stop: AtomicBool::new(false),
        measuring: AtomicBool::new(false),
        sent: AtomicU64::new(0),
        acked: AtomicU64::new(0),
        produced: AtomicU64::new(0),
        consumed_total: AtomicU64::new(0),
        consumed: AtomicU64::new(0),
        send_lat: Mutex::new(histogram()),
        e2e_lat: Mutex::new(histogram()),
        backlog_records: w.backlog_records(),
        backlog_written: tokio::sync::Notify::new(),
    });
    // A fresh group per run: a rerun against the same cluster starts where this workload
    // says, not at offsets an earlier run committed.
    let group = format!("bench-{}-{:x}", w.name, now_nanos() / 1_000_000);
    let catch_up = shared.backlog_records > 0;
    let mut consumers = Vec::new();
    if !catch_up {
        for i in 0..w.consumers {
            let r = driver.receiver(w, i, &group, false).await?;
            consumers.push(tokio::spawn(consume(r, shared.clone())));
        }
    }
    let mut producers = Vec::new();
    for p in 0..w.producers {
        let s = driver.sender(w, p).await?;
        producers.push(tokio::spawn(produce(s, w.clone(), p, shared.clone())));
    }

    let mut backlog_write_secs = None;
    if catch_up {
        backlog_write_secs = Some(write_backlog(w, &shared, &producers).await?);
    }
    let acked_before_consumers = shared.acked.load(Ordering::Relaxed);
    let consumers_started = Instant::now();
    if catch_up {
        for i in 0..w.consumers {
            let r = driver.receiver(w, i, &group, true).await?;
            consumers.push(tokio::spawn(consume(r, shared.clone())));
        }
    }

    tokio::time::sleep(Duration::from_secs(w.warmup_secs)).await;
    let stages_before = match metrics {
        [] => None,
        m => Some(crate::stages::scrape(m).await?),
    };
    shared.measuring.store(true, Ordering::Relaxed);
    let window = Instant::now();
    let mut series = Vec::new();
    let mut catch_up_secs = None;
    let (mut last_t, mut last_p, mut last_c) = (0.0, 0, 0);
    let mut tick = tokio::time::interval(Duration::from_millis(50));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let (produced_n, consumed_n, elapsed) = loop {
        tick.tick().await;
        let t = window.elapsed().as_secs_f64();
        let (p, c) = (
            shared.produced.load(Ordering::Relaxed),
            shared.consumed.load(Ordering::Relaxed),
        );
        if catch_up
            && catch_up_secs.is_none()
            && shared.consumed_total.load(Ordering::Relaxed) >= acked_before_consumers
        {
            catch_up_secs = Some(consumers_started.elapsed().as_secs_f64());
        }
        let done = t >= w.duration_secs as f64 || catch_up_secs.is_some();
        if t - last_t >= 1.0 || (done && t - last_t > 0.05) {
            series.push(SeriesPoint {
                t,
                produced_per_sec: (p - last_p) as f64 / (t - last_t),
                consumed_per_sec: (c - last_c) as f64 / (t - last_t),
            });
            (last_t, last_p, last_c) = (t, p, c);
        }
        if done {
            break (p, c, t);
        }
        // Only an error ends a client before `stop`: stop the others and report it.
        if producers
            .iter()
            .chain(&consumers)
            .any(JoinHandle::is_finished)
        {
            break (p, c, t);
        }
    };
    shared.measuring.store(false, Ordering::Relaxed);
    let stages = match &stages_before {
        Some(before) => crate::stages::between(before, &crate::stages::scrape(metrics).await?),
        None => Vec::new(),
    };
    shared.stop.store(true, Ordering::Relaxed);
    for p in producers {
        p.await??;
    }
    for c in consumers {
        c.await??;
    }

    let send = shared.send_lat.lock().unwrap();
    let e2e = shared.e2e_lat.lock().unwrap();
    let [s50, s99, s999] = quantiles(&send);
    let [e50, e99, e999] = quantiles(&e2e);
    let mb = |records: f64| records * w.record_size as f64 / 1e6;
    let (produced_rate, consumed_rate) = (produced_n as f64 / elapsed, consumed_n as f64 / elapsed);
    Ok(RunResult {
        system: system.name().into(),
        workload: w.name.clone(),
        seconds: (elapsed * 100.0).round() / 100.0,
        record_size: w.record_size,
        partitions: w.partitions,
        replication_factor: w.replication_factor,
        acks: w.acks.clone(),
        flush: w.flush().into(),
        produced_records_per_sec: produced_rate.round(),
        produced_mb_per_sec: mb(produced_rate),
        consumed_records_per_sec: consumed_rate.round(),
        consumed_mb_per_sec: mb(consumed_rate),
        send_p50_ms: s50,
        send_p99_ms: s99,
        send_p999_ms: s999,
        e2e_p50_ms: e50,
        e2e_p99_ms: e99,
        e2e_p999_ms: e999,
        backlog_records: shared.backlog_records,
        backlog_write_secs,
        catch_up_secs,
        series,
        send_latency_curve: curve(&send),
        e2e_latency_curve: curve(&e2e),
        limits: None,
        fractions: None,
        stages,
    })
}

/// Waits until the producers have had the backlog acknowledged; returns the seconds it took.
async fn write_backlog(
    w: &Workload,
    shared: &Shared,
    producers: &[JoinHandle<anyhow::Result<()>>],
) -> anyhow::Result<f64> {
    let started = Instant::now();
    eprintln!(
        "{}: writing a backlog of {} records ({:.2} GB)",
        w.name,
        shared.backlog_records,
        w.backlog_bytes as f64 / 1e9
    );
    while shared.acked.load(Ordering::Relaxed) < shared.backlog_records {
        anyhow::ensure!(
            !producers.iter().any(JoinHandle::is_finished),
            "a producer ended while writing the backlog"
        );
        // Woken by the acknowledgement that completes the backlog (`notify_one` keeps a
        // permit if it comes first); every 10 s, report progress and check the producers.
        let done = shared.backlog_written.notified();
        if tokio::time::timeout(Duration::from_secs(10), done)
            .await
            .is_err()
        {
            let acked = shared.acked.load(Ordering::Relaxed);
            eprintln!(
                "  {acked} records acknowledged ({:.0} records/s)",
                acked as f64 / started.elapsed().as_secs_f64()
            );
        }
    }
    let secs = started.elapsed().as_secs_f64();
    eprintln!(
        "  backlog written in {secs:.1} s ({:.0} records/s); starting the consumers",
        shared.backlog_records as f64 / secs
    );
    Ok(secs)
}

/// A record sent: when, and its acknowledgement.
type Pending<A> = (Instant, A);

/// One producer: flat out through the backlog, then at its share of the rate (or flat out);
/// acknowledgements are awaited in order by a task of their own, so each latency is taken
/// when its acknowledgement arrives.
async fn produce<S: RecordSender>(
    mut sender: S,
    w: Workload,
    index: u32,
    shared: Arc<Shared>,
) -> anyhow::Result<()> {
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Pending<S::Ack>>(100_000);
    let acker = tokio::spawn({
        let shared = shared.clone();
        async move {
            while let Some((sent_at, ack)) = rx.recv().await {
                ack.await?;
                if shared.acked.fetch_add(1, Ordering::Relaxed) + 1 == shared.backlog_records {
                    shared.backlog_written.notify_one();
                }
                // Counted when acknowledged in the window, whenever sent: with deep
                // queues an acknowledgement can take longer than the window.
                if shared.measuring.load(Ordering::Relaxed) {
                    shared
                        .send_lat
                        .lock()
                        .unwrap()
                        .saturating_record(sent_at.elapsed().as_nanos() as u64);
                    shared.produced.fetch_add(1, Ordering::Relaxed);
                }
            }
            anyhow::Ok(())
        }
    });
    let per_producer = w.rate / u64::from(w.producers);
    let mut paced_from: Option<(Instant, u64)> = None;
    let mut value = vec![b'x'; w.record_size];
    let mut i = 0u64;
    while !shared.stop.load(Ordering::Relaxed) {
        let in_backlog = shared.sent.fetch_add(1, Ordering::Relaxed) < shared.backlog_records;
        if !in_backlog && per_producer > 0 {
            let (start, first) = *paced_from.get_or_insert((Instant::now(), i));
            let due = start + Duration::from_secs_f64((i - first) as f64 / per_producer as f64);
            if let Some(wait) = due.checked_duration_since(Instant::now()) {
                tokio::time::sleep(wait).await;
            }
        }
        value[..8].copy_from_slice(&now_nanos().to_be_bytes());
        let key = w
            .keyed
            .then(|| Bytes::from(format!("key-{}", (i * 7919 + u64::from(index)) % 10_000)));
        let sent_at = Instant::now();
        let ack = sender.send(key, &value).await?;
        if tx.send((sent_at, ack)).await.is_err() {
            break;
        }
        i += 1;
    }
    drop(tx);
    acker.await?
}

/// The send time (nanoseconds since the epoch) a record's value starts with: the producer
/// writes it into the first 8 bytes (none in a shorter value).
pub(crate) fn sent_at(value: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(value.get(..8)?.try_into().ok()?))
}

/// One consumer: counts records and takes each one's end-to-end latency from the send time
/// its value starts with.
async fn consume<R: RecordReceiver>(mut receiver: R, shared: Arc<Shared>) -> anyhow::Result<()> {
    let mut sent = Vec::new();
    while !shared.stop.load(Ordering::Relaxed) {
        sent.clear();
        receiver.poll(Duration::from_millis(100), &mut sent).await?;
        shared
            .consumed_total
            .fetch_add(sent.len() as u64, Ordering::Relaxed);
        if !shared.measuring.load(Ordering::Relaxed) || sent.is_empty() {
            continue;
        }
        let now = now_nanos();
        let mut h = shared.e2e_lat.lock().unwrap();
        for t in sent.iter().flatten() {
            h.saturating_record(now.saturating_sub(*t));
        }
        drop(h);
        shared
            .consumed
            .fetch_add(sent.len() as u64, Ordering::Relaxed);
    }
    receiver.close().await
}
