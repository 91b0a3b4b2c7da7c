//! `rafka-bench reassign`: moves a partition to other brokers while a producer writes to it
//! at a fixed rate, and reports how long the move took, how many bytes it carried, and the
//! producer's send-to-ack latency before, during and after the move.

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use bytes::Bytes;
use hdrhistogram::Histogram;
use rafka_client::{Admin, Producer, ProducerConfig, ProducerRecord};

use crate::report::histogram;

/// Options of `rafka-bench reassign`.
#[derive(clap::Args)]
pub struct ReassignArgs {
    /// Brokers, comma-separated.
    #[arg(long, env = "RAFKA_BOOTSTRAP", default_value = "127.0.0.1:9092")]
    bootstrap: String,
    /// The topic (it must exist and hold the data to move).
    #[arg(long)]
    topic: String,
    /// The partition to move.
    #[arg(long, default_value_t = 0)]
    partition: u32,
    /// The brokers to move it to, comma-separated (the first is the preferred leader).
    #[arg(long, value_delimiter = ',', required_unless_present = "new_broker")]
    to: Vec<u32>,
    /// Instead of `--to`: move one replica to this broker, keeping the replication factor
    /// and the leader (a follower's replica moves; with one replica, the leader's).
    #[arg(long, conflicts_with = "to")]
    new_broker: Option<u32>,
    /// Records/s the producer sends to the partition throughout.
    #[arg(long, default_value_t = 2_000)]
    rate: u64,
    /// Value size in bytes.
    #[arg(long, default_value_t = 1024)]
    record_size: usize,
    /// all, leader or none.
    #[arg(long, default_value = "all")]
    acks: String,
    /// Producer linger in milliseconds.
    #[arg(long, default_value_t = 1)]
    linger_ms: u64,
    /// Seconds of producing before the move starts, and again after it ends.
    #[arg(long, default_value_t = 5)]
    settle_secs: u64,
    /// Give up if the move has not ended after this many seconds.
    #[arg(long, default_value_t = 600)]
    timeout_secs: u64,
}

const BEFORE: u8 = 0;
const DURING: u8 = 1;
const AFTER: u8 = 2;
const PHASES: [&str; 3] = ["before the move", "during the move", "after the move"];

/// Runs the move under load and prints what it measured.
pub async fn run(args: ReassignArgs) -> anyhow::Result<()> {
    let admin = Admin::connect(&args.bootstrap).await?;
    let before = partition_info(&admin, &args.topic, args.partition).await?;
    if !before.moving_to.is_empty() {
        bail!(
            "{}-{} is already moving to {:?}",
            args.topic,
            args.partition,
            before.moving_to
        );
    }
    let to = match args.new_broker {
        None => args.to.clone(),
        Some(n) => {
            let mut to = before.replicas.clone();
            let i = to
                .iter()
                .rposition(|&r| r != before.leader)
                .unwrap_or(to.len() - 1);
            to[i] = n;
            to
        }
    };
    wait_for_brokers(&admin, &to).await?;
    let config = ProducerConfig {
        acks: args.acks.parse()?,
        linger: Duration::from_millis(args.linger_ms),
        ..ProducerConfig::default()
    };
    let producer = Producer::connect(&args.bootstrap, config).await?;
    let phase = Arc::new(AtomicU8::new(BEFORE));
    let stop = Arc::new(tokio::sync::Notify::new());
    let load = tokio::spawn(produce(
        producer,
        Arc::from(args.topic.as_str()),
        args.partition,
        args.rate,
        Bytes::from(vec![b'x'; args.record_size]),
        phase.clone(),
        stop.clone(),
    ));

    tokio::time::sleep(Duration::from_secs(args.settle_secs)).await;
    let at_start = partition_info(&admin, &args.topic, args.partition).await?;
    println!(
        "moving {}-{}: replicas {:?} -> {:?}, {:.1} MB ({} records) at the start, {} records/s of {} B written throughout (acks={})",
        args.topic,
        args.partition,
        at_start.replicas,
        to,
        at_start.size_bytes as f64 / 1e6,
        at_start.high_watermark - at_start.log_start_offset,
        args.rate,
        args.record_size,
        args.acks
    );
    phase.store(DURING, Ordering::Relaxed);
    let started = Instant::now();
    admin
        .reassign_partition(&args.topic, args.partition, &to)
        .await
        .context("starting the move")?;
    let deadline = started + Duration::from_secs(args.timeout_secs);
    let mut last_print = started;
    let after = loop {
        let p = partition_info(&admin, &args.topic, args.partition).await?;
        if p.moving_to.is_empty() {
            break p;
        }
        if last_print.elapsed() >= Duration::from_secs(2) {
            last_print = Instant::now();
            let lag: Vec<String> = p
                .replica_progress
                .iter()
                .map(|r| format!("{}: {} behind", r.broker, r.lag_entries))
                .collect();
            println!(
                "  {:5.1} s: leader {}, followers {}",
                started.elapsed().as_secs_f64(),
                p.leader,
                lag.join(", ")
            );
        }
        if Instant::now() >= deadline {
            bail!("the move had not ended after {} s", args.timeout_secs);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let took = started.elapsed();
    phase.store(AFTER, Ordering::Relaxed);
    tokio::time::sleep(Duration::from_secs(args.settle_secs)).await;
    stop.notify_one();
    let histograms = load.await??;

    println!(
        "moved in {:.2} s: {:.1} MB at the start of the move, {:.1} MB/s; replicas now {:?}, leader {}",
        took.as_secs_f64(),
        at_start.size_bytes as f64 / 1e6,
        at_start.size_bytes as f64 / 1e6 / took.as_secs_f64(),
        after.replicas,
        after.leader
    );
    for (name, h) in PHASES.iter().zip(&histograms) {
        let ms = |q: f64| h.value_at_quantile(q) as f64 / 1e6;
        println!(
            "send-to-ack ms {name}: {} records, p50 {:.2}  p99 {:.2}  p99.9 {:.2}  max {:.2}",
            h.len(),
            ms(0.5),
            ms(0.99),
            ms(0.999),
            h.max() as f64 / 1e6
        );
    }
    Ok(())
}

/// Waits (up to a minute) until the cluster's metadata lists every broker of `ids`: a
/// broker that just joined may not be registered yet.
async fn wait_for_brokers(admin: &Admin, ids: &[u32]) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let known: Vec<u32> = admin
            .metadata(&[])
            .await?
            .brokers
            .iter()
            .map(|b| b.node_id)
            .collect();
        if ids.iter().all(|id| known.contains(id)) {
            return Ok(());
        }
        if Instant::now() >= deadline {
            bail!("brokers {ids:?} are not all in the cluster (it lists {known:?})");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn partition_info(
    admin: &Admin,
    topic: &str,
    partition: u32,
) -> anyhow::Result<rafka_proto::v1::PartitionInfo> {
    let topics = admin.describe_topics(&[topic]).await?;
    topics
        .into_iter()
        .next()
        .and_then(|t| t.partitions.into_iter().find(|p| p.partition == partition))
        .with_context(|| format!("no partition {topic}-{partition}"))
}

/// Sends `rate` records/s to the partition until `stop`; every ack's latency goes into the
/// histogram of the phase the record was sent in. A failed send ends the run with its error.
async fn produce(
    producer: Producer,
    topic: Arc<str>,
    partition: u32,
    rate: u64,
    value: Bytes,
    phase: Arc<AtomicU8>,
    stop: Arc<tokio::sync::Notify>,
) -> anyhow::Result<[Histogram<u64>; 3]> {
    let (tx, mut rx) =
        tokio::sync::mpsc::channel::<(Instant, u8, rafka_client::DeliveryFuture)>(1 << 16);
    let collector = tokio::spawn(async move {
        let mut h = [histogram(), histogram(), histogram()];
        while let Some((sent, phase, ack)) = rx.recv().await {
            ack.await?;
            h[phase as usize].saturating_record(sent.elapsed().as_nanos() as u64);
        }
        Ok::<_, rafka_client::ClientError>(h)
    });
    let start = Instant::now();
    let rate = rate.max(1) as f64;
    let stopped = stop.notified();
    tokio::pin!(stopped);
    for n in 0u64.. {
        let due = start + Duration::from_secs_f64(n as f64 / rate);
        tokio::select! {
            _ = &mut stopped => break,
            _ = tokio::time::sleep_until(due.into()) => {}
        }
        let mut record = ProducerRecord::new(topic.clone(), value.clone());
        record.partition = Some(partition);
        let sent = Instant::now();
        let ack = producer.send(record).await?;
        if tx
            .send((sent, phase.load(Ordering::Relaxed), ack))
            .await
            .is_err()
        {
            break; // the collector stopped on an error; it reports it
        }
    }
    drop(tx);
    producer.flush().await;
    Ok(collector.await??)
}
