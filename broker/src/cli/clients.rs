//! The client-side commands: topic, produce, consume, cluster.

use std::collections::BTreeMap;
use std::io::{BufRead, Write};
use std::time::Duration;

use super::Connection;
use anyhow::{bail, Context};
use bytes::Bytes;
use rafka_client::{
    Admin, Compression, Consumer, ConsumerConfig, ConsumerRecord, OffsetReset, Producer,
    ProducerConfig, ProducerRecord, SeekTo, TopicPartition,
};

/// `rafka topic ...`
#[derive(clap::Subcommand)]
pub enum TopicCommand {
    /// Create a topic.
    Create {
        /// Topic name.
        name: String,
        /// Number of partitions (0: the broker's `default_partitions`; at most its
        /// `max_partitions_per_topic`, 10,000 unless configured).
        #[arg(long, default_value_t = 1)]
        partitions: u32,
        /// Replicas of each partition (0: the cluster's default, up to 3).
        #[arg(long, default_value_t = 0)]
        replication_factor: u32,
        /// Topic config `key=value` (repeatable), e.g. `retention.ms=86400000`.
        #[arg(long = "config", value_parser = parse_kv)]
        configs: Vec<(String, String)>,
    },
    /// List topics.
    List,
    /// Show a topic's partitions and configs.
    Describe {
        /// Topic name.
        name: String,
    },
    /// Change topic configs, or raise the partition count.
    Alter {
        /// Topic name.
        name: String,
        /// Topic config `key=value` (repeatable).
        #[arg(long = "config", value_parser = parse_kv)]
        configs: Vec<(String, String)>,
        /// Raise the partition count to this many (keys are routed over the new count
        /// from then on; records written stay where they are).
        #[arg(long)]
        partitions: Option<u32>,
        /// Change the replication factor (partitions move while they take writes; the
        /// command waits until they are done).
        #[arg(long)]
        replication_factor: Option<u32>,
    },
    /// Move a partition to other brokers while it takes writes (learners catch up, then
    /// become the voters; the brokers left out delete their copy).
    Reassign {
        /// Topic name.
        name: String,
        /// Partition number.
        #[arg(long)]
        partition: u32,
        /// The new replica set, broker ids `1,2,4` (the first is the preferred leader).
        #[arg(long, value_delimiter = ',', required = true)]
        replicas: Vec<u32>,
        /// Return once the move is recorded instead of waiting until it completes.
        #[arg(long)]
        no_wait: bool,
    },
    /// Delete a topic and its data.
    Delete {
        /// Topic name.
        name: String,
    },
}

/// `rafka cluster ...`
#[derive(clap::Subcommand)]
pub enum ClusterCommand {
    /// Brokers, and each partition's leader, high watermark and replica lag.
    Status,
    /// Even out replicas and preferred leaders per broker: plan moves, run them, wait,
    /// then elect the preferred leaders.
    Rebalance {
        /// Print the plan only.
        #[arg(long)]
        dry_run: bool,
    },
    /// Move every replica off a broker, then remove it from the cluster (it stops and
    /// deletes its data).
    Decommission {
        /// The broker's id.
        id: u32,
        /// Return once the moves are recorded, without waiting for the broker to leave.
        #[arg(long)]
        no_wait: bool,
    },
}

fn print_moves(moves: &[rafka_proto::v1::PartitionMove]) {
    for m in moves {
        println!("  {}-{}: {:?} -> {:?}", m.topic, m.partition, m.from, m.to);
    }
}

/// Options of `rafka produce`.
#[derive(clap::Args)]
pub struct ProduceArgs {
    /// Topic to write to.
    topic: String,
    /// Split each line at the first occurrence of this into key and value.
    #[arg(long)]
    key_separator: Option<String>,
    /// Write every record to this partition.
    #[arg(long)]
    partition: Option<u32>,
    /// all, leader or none.
    #[arg(long, default_value = "all")]
    acks: String,
    /// none, gzip, snappy, lz4 or zstd.
    #[arg(long, default_value = "none")]
    compression: String,
}

/// Options of `rafka consume`.
#[derive(clap::Args)]
pub struct ConsumeArgs {
    /// Topic to read.
    topic: String,
    /// Start from the oldest record (default: only new records).
    #[arg(long, conflicts_with = "offset")]
    from_beginning: bool,
    /// Start at this offset.
    #[arg(long)]
    offset: Option<u64>,
    /// Read only this partition.
    #[arg(long)]
    partition: Option<u32>,
    /// Stop after this many records.
    #[arg(long)]
    max_messages: Option<u64>,
    /// Stop after this long without records (ms).
    #[arg(long)]
    timeout_ms: Option<u64>,
    /// Output per record; placeholders {topic} {partition} {offset} {timestamp} {key}
    /// {value} {headers} (`key=value` pairs joined by commas, as kcat's `%h`).
    #[arg(long, default_value = "{value}")]
    format: String,
    /// Consumer group: resume from its committed offsets (partitions without one start
    /// per --from-beginning / --offset) and commit what was printed.
    #[arg(long)]
    group: Option<String>,
}

fn parse_kv(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .ok_or_else(|| format!("expected key=value, got `{s}`"))
}

fn parse_compression(s: &str) -> anyhow::Result<Compression> {
    s.parse().map_err(anyhow::Error::msg)
}

pub async fn topic(conn: &Connection, cmd: TopicCommand) -> anyhow::Result<()> {
    let admin = conn.admin().await?;
    match cmd {
        TopicCommand::Create {
            name,
            partitions,
            replication_factor,
            configs,
        } => {
            let configs: BTreeMap<_, _> = configs.into_iter().collect();
            admin
                .create_topic(&name, partitions, replication_factor, configs)
                .await?;
            println!("created topic {name} with {partitions} partition(s)");
        }
        TopicCommand::List => {
            for t in admin.describe_topics(&[]).await? {
                println!("{}", t.name);
            }
        }
        TopicCommand::Describe { name } => {
            let topics = admin.describe_topics(&[&name]).await?;
            for t in topics {
                println!("topic {}  partitions {}", t.name, t.partitions.len());
                let mut configs: Vec<_> = t.configs.iter().collect();
                configs.sort();
                for (k, v) in configs {
                    println!("  {k} = {v}");
                }
                println!(
                    "  {:>9} {:>6} {:>10} {:>14} {:>14} {:>12}",
                    "partition", "leader", "replicas", "log start", "high watermark", "size"
                );
                for p in &t.partitions {
                    let list = |ids: &[u32]| -> String {
                        ids.iter().map(u32::to_string).collect::<Vec<_>>().join(",")
                    };
                    let moving = match p.moving_to.as_slice() {
                        [] => String::new(),
                        to => format!("  moving to {}", list(to)),
                    };
                    println!(
                        "  {:>9} {:>6} {:>10} {:>14} {:>14} {:>12}{moving}",
                        p.partition,
                        p.leader,
                        list(&p.replicas),
                        p.log_start_offset,
                        p.high_watermark,
                        p.size_bytes
                    );
                }
            }
        }
        TopicCommand::Alter {
            name,
            configs,
            partitions,
            replication_factor,
        } => {
            if configs.is_empty() && partitions.is_none() && replication_factor.is_none() {
                bail!("give --config key=value, --partitions N and/or --replication-factor N");
            }
            if !configs.is_empty() {
                admin
                    .alter_topic_config(&name, configs.into_iter().collect())
                    .await?;
            }
            if let Some(n) = partitions {
                admin.create_partitions(&name, n).await?;
            }
            if let Some(rf) = replication_factor {
                admin.alter_replication_factor(&name, rf).await?;
                admin.wait_for_moves(&name).await?;
            }
            println!("altered topic {name}");
        }
        TopicCommand::Reassign {
            name,
            partition,
            replicas,
            no_wait,
        } => {
            admin
                .reassign_partition(&name, partition, &replicas)
                .await?;
            println!("moving {name}-{partition} to {replicas:?}");
            if !no_wait {
                let t = admin.wait_for_moves(&name).await?;
                let p = t
                    .partitions
                    .get(partition as usize)
                    .context("the partition disappeared during the move")?;
                println!("{name}-{partition} runs on {:?}", p.replicas);
            }
        }
        TopicCommand::Delete { name } => {
            admin.delete_topic(&name).await?;
            println!("deleted topic {name}");
        }
    }
    Ok(())
}

pub async fn cluster(conn: &Connection, cmd: ClusterCommand) -> anyhow::Result<()> {
    let admin = conn.admin().await?;
    match cmd {
        ClusterCommand::Status => status(&admin).await,
        ClusterCommand::Rebalance { dry_run } => {
            let moves = admin.rebalance(dry_run).await?;
            if moves.is_empty() {
                println!("the cluster is balanced: nothing to move");
            } else {
                let what = if dry_run { "would move" } else { "moving" };
                println!("{what} {} partition(s):", moves.len());
                print_moves(&moves);
            }
            if dry_run {
                return Ok(());
            }
            admin.wait_for_all_moves().await?;
            let (elected, failed) = admin.elect_preferred_leaders().await?;
            println!("preferred leaders elected: {}", elected.len());
            for f in &failed {
                println!("  not elected: {f}");
            }
            Ok(())
        }
        ClusterCommand::Decommission { id, no_wait } => {
            let moves = admin.decommission_broker(id).await?;
            println!(
                "decommissioning broker {id}: moving {} partition(s)",
                moves.len()
            );
            print_moves(&moves);
            if !no_wait {
                admin.wait_for_decommission(id).await?;
                println!("broker {id} left the cluster");
            }
            Ok(())
        }
    }
}

async fn status(admin: &Admin) -> anyhow::Result<()> {
    let meta = admin.metadata(&[]).await?;
    println!("metadata leader: {}", meta.controller_id);
    // Each broker knows the replicas it holds; a leader also knows its followers' lag.
    let mut views = BTreeMap::new();
    println!("brokers:");
    for b in &meta.brokers {
        let view = admin.metadata_from(b.node_id, &[]).await;
        let state = if view.is_ok() { "up" } else { "unreachable" };
        println!("  {:>4}  {:<24} {state}", b.node_id, b.address);
        if let Ok(v) = view {
            views.insert(b.node_id, v);
        }
    }
    println!("partitions:");
    println!(
        "  {:<28} {:>6} {:>14}  replicas (lag in entries)",
        "topic-partition", "leader", "high watermark"
    );
    for t in &meta.topics {
        for p in &t.partitions {
            // The leader's own view, when it answered.
            let led = views
                .iter()
                .filter_map(|(id, v)| {
                    let tp = v.topics.iter().find(|x| x.name == t.name)?;
                    let info = tp.partitions.get(p.partition as usize)?;
                    (info.leader == *id).then_some(info.clone())
                })
                .next();
            let info = led.clone().unwrap_or_else(|| p.clone());
            let replicas: Vec<String> = info
                .replicas
                .iter()
                .map(|r| {
                    if led.is_none() {
                        return format!("{r}(?)");
                    }
                    if *r == info.leader {
                        return format!("{r}(leader)");
                    }
                    match info.replica_progress.iter().find(|x| x.broker == *r) {
                        Some(x) => format!("{r}({})", x.lag_entries),
                        None => format!("{r}(?)"),
                    }
                })
                .collect();
            let leader = match (led.is_some(), info.leader) {
                (true, l) => l.to_string(),
                (false, _) => "none".to_string(),
            };
            println!(
                "  {:<28} {:>6} {:>14}  {}",
                format!("{}-{}", t.name, p.partition),
                leader,
                info.high_watermark,
                replicas.join(" ")
            );
        }
    }
    Ok(())
}

pub async fn produce(conn: &Connection, args: ProduceArgs) -> anyhow::Result<()> {
    let config = ProducerConfig {
        acks: args.acks.parse()?,
        compression: parse_compression(&args.compression)?,
        ..ProducerConfig::default()
    };
    let producer = Producer::connect(
        &conn.bootstrap,
        ProducerConfig {
            tls: conn.tls.clone(),
            credentials: conn.credentials.clone(),
            ..config
        },
    )
    .await?;
    let (tx, mut rx) = tokio::sync::mpsc::channel::<String>(1024);
    // Read stdin on a blocking thread; lines flow to the async side.
    let reader = tokio::task::spawn_blocking(move || -> std::io::Result<()> {
        for line in std::io::stdin().lock().lines() {
            if tx.blocking_send(line?).is_err() {
                break;
            }
        }
        Ok(())
    });
    let mut deliveries = Vec::new();
    let mut count = 0u64;
    while let Some(line) = rx.recv().await {
        let (key, value) = match &args.key_separator {
            Some(sep) => match line.split_once(sep.as_str()) {
                Some((k, v)) => (Some(Bytes::from(k.to_string())), v.to_string()),
                None => (None, line),
            },
            None => (None, line),
        };
        let mut record = ProducerRecord::new(args.topic.clone(), value);
        record.key = key;
        record.partition = args.partition;
        deliveries.push(producer.send(record).await?);
        count += 1;
    }
    reader.await.context("stdin reader")??;
    producer.flush().await;
    let mut failed = 0;
    let mut first_error = None;
    for d in deliveries {
        if let Err(e) = d.await {
            failed += 1;
            first_error.get_or_insert(e);
        }
    }
    if let Some(e) = first_error {
        bail!("{failed} of {count} records were not written: {e}");
    }
    eprintln!("produced {count} record(s) to {}", args.topic);
    Ok(())
}

fn render(format: &str, r: &ConsumerRecord) -> String {
    let text = |b: &Option<Bytes>| {
        b.as_deref()
            .map(String::from_utf8_lossy)
            .unwrap_or_default()
            .into_owned()
    };
    format
        .replace("{topic}", &r.topic)
        .replace("{partition}", &r.partition.to_string())
        .replace("{offset}", &r.offset.to_string())
        .replace("{timestamp}", &r.timestamp.to_string())
        .replace("{key}", &text(&r.key))
        .replace(
            "{headers}",
            &r.headers
                .iter()
                .map(|h| format!("{}={}", h.key, text(&h.value)))
                .collect::<Vec<_>>()
                .join(","),
        )
        .replace("{value}", &text(&r.value))
}

pub async fn consume(conn: &Connection, args: ConsumeArgs) -> anyhow::Result<()> {
    // With a group and no explicit partition or offset, join the group: its members
    // share the topic's partitions.
    let member = args.group.is_some() && args.partition.is_none() && args.offset.is_none();
    let config = ConsumerConfig {
        group_id: args.group.clone(),
        auto_offset_reset: if args.from_beginning {
            OffsetReset::Earliest
        } else {
            OffsetReset::Latest
        },
        auto_commit_interval: None,
        ..Default::default()
    };
    let mut consumer = Consumer::connect(
        &conn.bootstrap,
        ConsumerConfig {
            tls: conn.tls.clone(),
            credentials: conn.credentials.clone(),
            ..config
        },
    )
    .await?;
    if member {
        consumer.subscribe(&[&args.topic])?;
    } else {
        let partitions: Vec<TopicPartition> = match args.partition {
            Some(p) => vec![TopicPartition::new(args.topic.clone(), p)],
            None => consumer.partitions_of(&args.topic).await?,
        };
        consumer.assign(partitions.clone());
        // Without an offset, each partition starts at the group's commit or, failing
        // that, per --from-beginning, resolved as the consumer first reads it: a
        // partition whose leader is down is picked up once it has one, and the others
        // are read meanwhile.
        if let Some(o) = args.offset {
            for tp in &partitions {
                consumer.seek(tp, SeekTo::Offset(o)).await?;
            }
        }
    }
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    let mut seen = 0u64;
    let idle_limit = args.timeout_ms.map(Duration::from_millis);
    let mut idle = Duration::ZERO;
    let step = Duration::from_millis(500);
    while args.max_messages.is_none_or(|m| seen < m) {
        let records = consumer.poll(step).await?;
        if records.is_empty() {
            idle += step;
            if idle_limit.is_some_and(|l| idle >= l) {
                break;
            }
            out.flush()?;
            continue;
        }
        idle = Duration::ZERO;
        let mut printed = std::collections::BTreeMap::new();
        for r in records {
            if args.max_messages.is_some_and(|m| seen >= m) {
                break;
            }
            writeln!(out, "{}", render(&args.format, &r))?;
            printed.insert(TopicPartition::new(&*r.topic, r.partition), r.offset + 1);
            seen += 1;
        }
        if consumer.group_id().is_some() {
            out.flush()?;
            consumer.commit_offsets(&printed).await?;
        }
    }
    out.flush()?;
    if member {
        consumer.close().await?;
    }
    Ok(())
}
