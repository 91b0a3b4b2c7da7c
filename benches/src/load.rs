//! The load generator: `rafka-bench produce` and `rafka-bench consume` against a running
//! broker, with throughput and latency percentiles (HdrHistogram).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use bytes::Bytes;
use hdrhistogram::Histogram;
use indicatif::{ProgressBar, ProgressStyle};
use rafka_client::{
    Admin, Compression, Consumer, ConsumerConfig, Producer, ProducerConfig, ProducerRecord, SeekTo,
    TopicPartition,
};

use crate::report::histogram;

/// Options both commands take.
#[derive(clap::Args, Clone)]
pub struct Target {
    /// Brokers, comma-separated.
    #[arg(long, env = "RAFKA_BOOTSTRAP", default_value = "127.0.0.1:9092")]
    bootstrap: String,
    /// Topic (created with --partitions if missing when producing).
    #[arg(long)]
    topic: String,
    /// Records to send or read in all.
    #[arg(long, default_value_t = 1_000_000)]
    records: u64,
    /// Print one JSON object instead of text.
    #[arg(long)]
    json: bool,
}

/// Options of `rafka-bench produce`.
#[derive(clap::Args, Clone)]
pub struct ProduceArgs {
    #[command(flatten)]
    target: Target,
    /// Stop sending after this many seconds, even if fewer records were sent.
    #[arg(long)]
    duration_secs: Option<u64>,
    /// Value size in bytes.
    #[arg(long, default_value_t = 100)]
    record_size: usize,
    /// all, leader or none.
    #[arg(long, default_value = "all")]
    acks: String,
    /// Producer clients, each with its own connection.
    #[arg(long, default_value_t = 1)]
    producers: usize,
    /// Partitions when the topic has to be created.
    #[arg(long, default_value_t = 8)]
    partitions: u32,
    /// Replicas per partition when the topic has to be created (0: the cluster default,
    /// up to 3).
    #[arg(long, default_value_t = 0)]
    replication_factor: u32,
    /// Producer batch size in bytes.
    #[arg(long, default_value_t = 256 << 10)]
    batch_size: usize,
    /// Producer linger in milliseconds.
    #[arg(long, default_value_t = 5)]
    linger_ms: u64,
    /// none, gzip, snappy, lz4 or zstd.
    #[arg(long, default_value = "none")]
    compression: String,
    /// Target records/s over all producers (0: as fast as possible).
    #[arg(long, default_value_t = 0)]
    rate: u64,
    /// Give each record a key (from a space of 10,000).
    #[arg(long)]
    keyed: bool,
}

/// Options of `rafka-bench consume` (it reads the topic from the beginning).
#[derive(clap::Args)]
pub struct ConsumeArgs {
    #[command(flatten)]
    target: Target,
}

/// A result line.
struct Summary {
    what: &'static str,
    records: u64,
    bytes: u64,
    elapsed: Duration,
    latency: Histogram<u64>,
    latency_of: &'static str,
}

impl Summary {
    fn print(&self, json: bool) {
        let secs = self.elapsed.as_secs_f64();
        let ms = |q: f64| self.latency.value_at_quantile(q) as f64 / 1e6;
        let rps = self.records as f64 / secs;
        let mbps = self.bytes as f64 / 1e6 / secs;
        if json {
            println!(
                "{{\"what\":\"{}\",\"records\":{},\"records_per_sec\":{:.0},\"mb_per_sec\":{:.2},\"p50_ms\":{:.3},\"p99_ms\":{:.3},\"p999_ms\":{:.3},\"max_ms\":{:.3},\"latency_of\":\"{}\"}}",
                self.what, self.records, rps, mbps, ms(0.5), ms(0.99), ms(0.999),
                self.latency.max() as f64 / 1e6, self.latency_of
            );
        } else {
            println!(
                "{}: {} records in {:.2} s = {:.0} records/s, {:.1} MB/s",
                self.what, self.records, secs, rps, mbps
            );
            println!(
                "{} latency ms: p50 {:.3}  p99 {:.3}  p99.9 {:.3}  max {:.3}",
                self.latency_of,
                ms(0.5),
                ms(0.99),
                ms(0.999),
                self.latency.max() as f64 / 1e6
            );
        }
    }
}

fn progress(total: u64, json: bool) -> ProgressBar {
    if json {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(total);
    bar.set_style(
        ProgressStyle::with_template("{bar:40} {pos}/{len} records  {per_sec}  eta {eta}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    bar
}

pub fn compression(s: &str) -> anyhow::Result<Compression> {
    s.parse().map_err(anyhow::Error::msg)
}

async fn ensure_topic(
    bootstrap: &str,
    topic: &str,
    partitions: u32,
    replication_factor: u32,
) -> anyhow::Result<()> {
    let admin = Admin::connect(bootstrap).await?;
    if admin.describe_topics(&[topic]).await.is_err() {
        admin
            .create_topic(topic, partitions, replication_factor, BTreeMap::new())
            .await
            .with_context(|| format!("creating topic {topic}"))?;
    }
    Ok(())
}

pub async fn produce(args: ProduceArgs) -> anyhow::Result<()> {
    ensure_topic(
        &args.target.bootstrap,
        &args.target.topic,
        args.partitions,
        args.replication_factor,
    )
    .await?;
    let config = ProducerConfig {
        acks: args.acks.parse()?,
        batch_size: args.batch_size,
        linger: Duration::from_millis(args.linger_ms),
        compression: compression(&args.compression)?,
        ..ProducerConfig::default()
    };
    let value = Bytes::from(
        (0..args.record_size)
            .map(|i| (i % 251) as u8)
            .collect::<Vec<_>>(),
    );
    let bar = progress(args.target.records, args.target.json);
    let done = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let mut tasks = Vec::new();
    let k = args.producers.max(1) as u64;
    for i in 0..k {
        let count = args.target.records / k + u64::from(i < args.target.records % k);
        let producer = Producer::connect(&args.target.bootstrap, config.clone()).await?;
        let (args, value, bar, done) = (args.clone(), value.clone(), bar.clone(), done.clone());
        tasks.push(tokio::spawn(async move {
            run_producer(producer, &args, value, count, i, k, start, &bar, &done).await
        }));
    }
    let mut latency = histogram();
    for t in tasks {
        latency.add(t.await??)?;
    }
    let elapsed = start.elapsed();
    bar.finish_and_clear();
    let records = latency.len();
    Summary {
        what: "produce",
        records,
        bytes: records * args.record_size as u64,
        elapsed,
        latency,
        latency_of: "send-to-ack",
    }
    .print(args.target.json);
    Ok(())
}

#[allow(clippy::too_many_arguments)]
async fn run_producer(
    producer: Producer,
    args: &ProduceArgs,
    value: Bytes,
    count: u64,
    index: u64,
    producers: u64,
    start: Instant,
    bar: &ProgressBar,
    done: &AtomicU64,
) -> anyhow::Result<Histogram<u64>> {
    // Acks are awaited in order on a second task, which also bounds what is outstanding.
    let (tx, mut rx) =
        tokio::sync::mpsc::channel::<(Instant, rafka_client::DeliveryFuture)>(1 << 16);
    let collector = tokio::spawn(async move {
        let mut h = histogram();
        while let Some((sent, ack)) = rx.recv().await {
            ack.await?;
            h.saturating_record(sent.elapsed().as_nanos() as u64);
        }
        Ok::<_, rafka_client::ClientError>(h)
    });
    let per_producer_rate = args.rate as f64 / producers as f64;
    let stop_at = args.duration_secs.map(|s| start + Duration::from_secs(s));
    let topic: Arc<str> = args.target.topic.as_str().into();
    for n in 0..count {
        if n % 256 == 0 && stop_at.is_some_and(|t| Instant::now() >= t) {
            break;
        }
        if per_producer_rate > 0.0 && n % 256 == 0 {
            let due = start + Duration::from_secs_f64(n as f64 / per_producer_rate);
            tokio::time::sleep_until(due.into()).await;
        }
        let mut record = ProducerRecord::new(topic.clone(), value.clone());
        if args.keyed {
            record.key = Some(Bytes::from(((n * producers + index) % 10_000).to_string()));
        }
        let sent = Instant::now();
        let ack = producer.send(record).await?;
        if tx.send((sent, ack)).await.is_err() {
            break; // the collector stopped on an error; it reports it
        }
        if n % 4096 == 4095 {
            bar.set_position(done.fetch_add(4096, Ordering::Relaxed) + 4096);
        }
    }
    drop(tx);
    producer.flush().await;
    Ok(collector.await??)
}

pub async fn consume(args: ConsumeArgs) -> anyhow::Result<()> {
    let mut consumer = Consumer::connect(&args.target.bootstrap, ConsumerConfig::default()).await?;
    let partitions: Vec<TopicPartition> = consumer.partitions_of(&args.target.topic).await?;
    consumer.assign(partitions.clone());
    for tp in &partitions {
        consumer.seek(tp, SeekTo::Earliest).await?;
    }
    let bar = progress(args.target.records, args.target.json);
    let mut latency = histogram();
    let (mut records, mut bytes) = (0u64, 0u64);
    let start = Instant::now();
    let mut idle = 0;
    while records < args.target.records {
        let t = Instant::now();
        let batch = consumer.poll(Duration::from_secs(1)).await?;
        if batch.is_empty() {
            idle += 1;
            if idle >= 10 {
                bail!(
                    "no records for 10 s after {records} of {}",
                    args.target.records
                );
            }
            continue;
        }
        idle = 0;
        latency.saturating_record(t.elapsed().as_nanos() as u64);
        records += batch.len() as u64;
        bytes += batch
            .iter()
            .map(|r| r.value.as_ref().map_or(0, |v| v.len()) as u64)
            .sum::<u64>();
        bar.set_position(records);
    }
    let elapsed = start.elapsed();
    bar.finish_and_clear();
    Summary {
        what: "consume",
        records,
        bytes,
        elapsed,
        latency,
        latency_of: "poll",
    }
    .print(args.target.json);
    Ok(())
}
