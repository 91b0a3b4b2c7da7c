//! `rafka-bench run WORKLOAD`: a workload file (in the spirit of the OpenMessaging
//! Benchmark) run against a cluster: producers at a target rate (or flat out) and a
//! consumer group reading concurrently; reports produce and consume rates, send-to-ack
//! and end-to-end (produce to consume) latency percentiles after a warm-up.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use hdrhistogram::Histogram;
use rafka_client::{
    Acks, Admin, Consumer, ConsumerConfig, OffsetReset, Producer, ProducerConfig, ProducerRecord,
};
use serde::Deserialize;

use crate::report::histogram;

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
    /// Seconds measured.
    pub duration_secs: u64,
    /// all | leader | none.
    #[serde(default = "all")]
    pub acks: String,
    /// none | lz4 | zstd.
    #[serde(default = "no_compression")]
    pub compression: String,
    /// Topic configs (e.g. `flush = "always"`).
    #[serde(default)]
    pub topic_configs: BTreeMap<String, String>,
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

/// Options of `rafka-bench run`.
#[derive(clap::Args)]
pub struct RunArgs {
    /// The workload file (TOML).
    workload: PathBuf,
    /// Brokers, comma-separated.
    #[arg(long, env = "RAFKA_BOOTSTRAP", default_value = "127.0.0.1:9092")]
    bootstrap: String,
    /// Write the JSON result here (stdout if absent).
    #[arg(long)]
    out: Option<PathBuf>,
}

fn now_nanos() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

fn quantiles(h: &Histogram<u64>) -> [f64; 3] {
    [0.5, 0.99, 0.999].map(|q| h.value_at_quantile(q) as f64 / 1e6)
}

pub async fn run(args: RunArgs) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(&args.workload)
        .with_context(|| format!("reading {}", args.workload.display()))?;
    let w: Workload =
        toml::from_str(&text).with_context(|| format!("parsing {}", args.workload.display()))?;
    anyhow::ensure!(
        w.record_size >= 8,
        "record_size must be at least 8 (a timestamp)"
    );
    let admin = Admin::connect(&args.bootstrap).await?;
    if admin.describe_topics(&[&w.topic]).await.is_err() {
        admin
            .create_topic(
                &w.topic,
                w.partitions,
                w.replication_factor,
                w.topic_configs.clone(),
            )
            .await?;
    }
    let measuring = Arc::new(AtomicBool::new(false));
    let stop = Arc::new(AtomicBool::new(false));
    let produced = Arc::new(AtomicU64::new(0));
    let consumed = Arc::new(AtomicU64::new(0));
    let send_lat = Arc::new(Mutex::new(histogram()));
    let e2e_lat = Arc::new(Mutex::new(histogram()));

    let mut consumers = Vec::new();
    for _ in 0..w.consumers {
        let mut c = Consumer::connect(
            &args.bootstrap,
            ConsumerConfig {
                group_id: Some(format!("bench-{}", w.name)),
                auto_offset_reset: OffsetReset::Latest,
                ..Default::default()
            },
        )
        .await?;
        c.subscribe(&[&w.topic])?;
        let (stop, measuring, consumed, e2e) = (
            stop.clone(),
            measuring.clone(),
            consumed.clone(),
            e2e_lat.clone(),
        );
        consumers.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let records = c.poll(Duration::from_millis(100)).await?;
                if !measuring.load(Ordering::Relaxed) {
                    continue;
                }
                let now = now_nanos();
                let mut h = e2e.lock().unwrap();
                for r in &records {
                    if let Some(v) = r.value.as_ref().filter(|v| v.len() >= 8) {
                        let sent = u64::from_be_bytes(v[..8].try_into().expect("8 bytes"));
                        h.saturating_record(now.saturating_sub(sent));
                    }
                }
                consumed.fetch_add(records.len() as u64, Ordering::Relaxed);
            }
            c.close().await?;
            anyhow::Ok(())
        }));
    }

    let acks = w.acks.parse::<Acks>()?;
    let compression = crate::load::compression(&w.compression)?;
    let mut producers = Vec::new();
    for p in 0..w.producers {
        let producer = Producer::connect(
            &args.bootstrap,
            ProducerConfig {
                acks,
                compression,
                ..Default::default()
            },
        )
        .await?;
        let (stop, measuring, produced, send) = (
            stop.clone(),
            measuring.clone(),
            produced.clone(),
            send_lat.clone(),
        );
        let w = w.clone();
        // Acknowledgements are awaited in order by a task of their own, so each
        // latency is taken when its acknowledgement arrives.
        let (tx, mut rx) = tokio::sync::mpsc::channel::<Pending>(100_000);
        let acker = tokio::spawn(async move {
            while let Some((sent_at, delivery, measured)) = rx.recv().await {
                delivery.await?;
                if measured {
                    send.lock()
                        .unwrap()
                        .saturating_record(sent_at.elapsed().as_nanos() as u64);
                    produced.fetch_add(1, Ordering::Relaxed);
                }
            }
            anyhow::Ok(())
        });
        producers.push(tokio::spawn(async move {
            let per_producer = w.rate / w.producers as u64;
            let started = Instant::now();
            let mut value = vec![b'x'; w.record_size];
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) {
                if per_producer > 0 {
                    let due = started + Duration::from_secs_f64(i as f64 / per_producer as f64);
                    if let Some(wait) = due.checked_duration_since(Instant::now()) {
                        tokio::time::sleep(wait).await;
                    }
                }
                value[..8].copy_from_slice(&now_nanos().to_be_bytes());
                let mut r = ProducerRecord::new(w.topic.as_str(), value.clone());
                if w.keyed {
                    r = r.key(format!("key-{}", (i * 7919 + p as u64) % 10_000));
                }
                let sent_at = Instant::now();
                let delivery = producer.send(r).await?;
                if tx
                    .send((sent_at, delivery, measuring.load(Ordering::Relaxed)))
                    .await
                    .is_err()
                {
                    break;
                }
                i += 1;
            }
            drop(tx);
            acker.await?
        }));
    }

    tokio::time::sleep(Duration::from_secs(w.warmup_secs)).await;
    measuring.store(true, Ordering::Relaxed);
    let window = Instant::now();
    tokio::time::sleep(Duration::from_secs(w.duration_secs)).await;
    let elapsed = window.elapsed().as_secs_f64();
    let (produced_n, consumed_n) = (
        produced.load(Ordering::Relaxed),
        consumed.load(Ordering::Relaxed),
    );
    stop.store(true, Ordering::Relaxed);
    for p in producers {
        p.await??;
    }
    for c in consumers {
        c.await??;
    }
    let [s50, s99, s999] = quantiles(&send_lat.lock().unwrap());
    let [e50, e99, e999] = quantiles(&e2e_lat.lock().unwrap());
    let produced_rate = produced_n as f64 / elapsed;
    let json = format!(
        "{{\"workload\":\"{}\",\"seconds\":{elapsed:.2},\"produced_records_per_sec\":{produced_rate:.0},\"produced_mb_per_sec\":{:.2},\"consumed_records_per_sec\":{:.0},\"send_p50_ms\":{s50:.3},\"send_p99_ms\":{s99:.3},\"send_p999_ms\":{s999:.3},\"e2e_p50_ms\":{e50:.3},\"e2e_p99_ms\":{e99:.3},\"e2e_p999_ms\":{e999:.3}}}",
        w.name,
        produced_rate * w.record_size as f64 / 1e6,
        consumed_n as f64 / elapsed,
    );
    match &args.out {
        Some(path) => std::fs::write(path, &json)?,
        None => println!("{json}"),
    }
    eprintln!(
        "{}: produced {produced_rate:.0} records/s, consumed {:.0} records/s; send-to-ack p50/p99/p99.9 {s50:.2}/{s99:.2}/{s999:.2} ms; end-to-end {e50:.2}/{e99:.2}/{e999:.2} ms",
        w.name,
        consumed_n as f64 / elapsed
    );
    Ok(())
}

/// A record sent: when, its acknowledgement, and whether it is in the measured window.
type Pending = (Instant, rafka_client::DeliveryFuture, bool);
