//! `rafka-bench group`: a consumer group end to end. `--members` consumers subscribe to
//! a topic holding `--records` records and read them all (the group's consume rate);
//! then one more member joins and the time until it consumes its share of partitions
//! is measured, with the others consuming throughout.

use std::collections::{BTreeMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use rafka_client::{
    Admin, Consumer, ConsumerConfig, Producer, ProducerConfig, ProducerRecord, RebalanceListener,
    TopicPartition,
};

/// Options of `rafka-bench group`.
#[derive(clap::Args)]
pub struct GroupArgs {
    /// Brokers, comma-separated.
    #[arg(long, env = "RAFKA_BOOTSTRAP", default_value = "127.0.0.1:9092")]
    bootstrap: String,
    /// Topic (created with --partitions; filled with --records 100-byte records).
    #[arg(long, default_value = "group-bench")]
    topic: String,
    /// Partitions of the topic.
    #[arg(long, default_value_t = 48)]
    partitions: u32,
    /// Replicas per partition (0: the cluster default).
    #[arg(long, default_value_t = 0)]
    replication_factor: u32,
    /// Records to produce first.
    #[arg(long, default_value_t = 2_000_000)]
    records: u64,
    /// Members that read the records.
    #[arg(long, default_value_t = 3)]
    members: usize,
}

/// Bumped whenever a member reads records or its partitions change.
type Progress = Arc<tokio::sync::watch::Sender<u64>>;

/// Counts the partitions a member holds.
struct Holding(Arc<Mutex<HashSet<TopicPartition>>>, Progress);

impl RebalanceListener for Holding {
    fn on_assigned(&mut self, partitions: &[TopicPartition]) {
        self.0.lock().unwrap().extend(partitions.iter().cloned());
        self.1.send_modify(|n| *n += 1);
    }

    fn on_revoked(&mut self, partitions: &[TopicPartition]) {
        let mut held = self.0.lock().unwrap();
        for tp in partitions {
            held.remove(tp);
        }
        drop(held);
        self.1.send_modify(|n| *n += 1);
    }
}

struct Member {
    held: Arc<Mutex<HashSet<TopicPartition>>>,
    /// Partitions it has read a record of since it got them.
    read_from: Arc<Mutex<HashSet<u32>>>,
    stop: tokio::sync::watch::Sender<bool>,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

async fn start_member(
    args: &GroupArgs,
    group: &str,
    consumed: &Arc<AtomicU64>,
    progress: &Progress,
) -> anyhow::Result<Member> {
    let mut c = Consumer::connect(
        &args.bootstrap,
        ConsumerConfig {
            group_id: Some(group.into()),
            ..Default::default()
        },
    )
    .await?;
    c.subscribe(&[&args.topic])?;
    let held = Arc::new(Mutex::new(HashSet::new()));
    c.set_rebalance_listener(Holding(held.clone(), progress.clone()));
    let read_from = Arc::new(Mutex::new(HashSet::new()));
    let (stop, mut stopped) = tokio::sync::watch::channel(false);
    let (consumed, reads, progress) = (consumed.clone(), read_from.clone(), progress.clone());
    let task = tokio::spawn(async move {
        while !*stopped.borrow_and_update() {
            let records = c.poll(Duration::from_millis(100)).await?;
            consumed.fetch_add(records.len() as u64, Ordering::Relaxed);
            reads
                .lock()
                .unwrap()
                .extend(records.iter().map(|r| r.partition));
            if !records.is_empty() {
                progress.send_modify(|n| *n += 1);
            }
        }
        c.close().await?;
        Ok(())
    });
    Ok(Member {
        held,
        read_from,
        stop,
        task,
    })
}

pub async fn run(args: GroupArgs) -> anyhow::Result<()> {
    let admin = Admin::connect(&args.bootstrap).await?;
    admin
        .create_topic(
            &args.topic,
            args.partitions,
            args.replication_factor,
            BTreeMap::new(),
        )
        .await
        .with_context(|| format!("creating {}", args.topic))?;
    let producer = Producer::connect(&args.bootstrap, ProducerConfig::default()).await?;
    let value = vec![b'x'; 100];
    let mut acks = Vec::new();
    for i in 0..args.records {
        let r = ProducerRecord::new(args.topic.as_str(), value.clone())
            .partition((i % args.partitions as u64) as u32);
        acks.push(producer.send(r).await?);
        if acks.len() >= 100_000 {
            for a in acks.drain(..) {
                a.await?;
            }
        }
    }
    for a in acks {
        a.await?;
    }
    let group = format!("{}-readers", args.topic);
    let consumed = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let progress: Progress = Arc::new(tokio::sync::watch::channel(0).0);
    let mut changes = progress.subscribe();
    let mut members = Vec::new();
    for _ in 0..args.members {
        members.push(start_member(&args, &group, &consumed, &progress).await?);
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(300);
    wait_for(
        &mut changes,
        deadline,
        "the group to read everything",
        || consumed.load(Ordering::Relaxed) >= args.records,
    )
    .await?;
    let elapsed = started.elapsed().as_secs_f64();
    println!(
        "{} members consumed {} records in {elapsed:.2} s (join included) = {:.0} records/s, {:.1} MB/s",
        args.members,
        args.records,
        args.records as f64 / elapsed,
        args.records as f64 * 100.0 / elapsed / 1e6
    );

    // One more member joins while production goes on.
    let share = args.partitions as usize / (args.members + 1);
    let (topic, partitions) = (args.topic.clone(), args.partitions);
    let feeding = tokio::spawn(async move {
        let value = vec![b'y'; 100];
        for i in 0u64.. {
            let r = ProducerRecord::new(topic.as_str(), value.clone())
                .partition((i % partitions as u64) as u32);
            if producer.send(r).await.is_err() {
                break;
            }
        }
    });
    let joined = Instant::now();
    let newcomer = start_member(&args, &group, &consumed, &progress).await?;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    wait_for(&mut changes, deadline, "the new member's share", || {
        newcomer.held.lock().unwrap().len() >= share
    })
    .await?;
    let owned_at = joined.elapsed();
    wait_for(
        &mut changes,
        deadline,
        "the new member to read its share",
        || newcomer.read_from.lock().unwrap().len() >= share,
    )
    .await?;
    let reading_at = joined.elapsed();
    println!(
        "a member joining {} members over {} partitions: owns its {share} partitions after {:.0} ms, has read from all of them after {:.0} ms",
        args.members,
        args.partitions,
        owned_at.as_secs_f64() * 1e3,
        reading_at.as_secs_f64() * 1e3
    );
    feeding.abort();
    for m in members.into_iter().chain([newcomer]) {
        let _ = m.stop.send(true);
        m.task.await??;
    }
    Ok(())
}

/// Waits until `done` holds, re-checking whenever the members report progress.
async fn wait_for(
    changes: &mut tokio::sync::watch::Receiver<u64>,
    deadline: tokio::time::Instant,
    what: &str,
    mut done: impl FnMut() -> bool,
) -> anyhow::Result<()> {
    loop {
        changes.borrow_and_update();
        if done() {
            return Ok(());
        }
        match tokio::time::timeout_at(deadline, changes.changed()).await {
            Ok(Ok(())) => {}
            _ => anyhow::bail!("timed out waiting for {what}"),
        }
    }
}
