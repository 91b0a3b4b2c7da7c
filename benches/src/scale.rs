//! `rafka-bench scale`: how long until every partition of a (large) topic acknowledges a
//! write — after creating it, after a restart of the cluster, after a broker died.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::Context;
use rafka_client::{Acks, Admin, Producer, ProducerConfig, ProducerRecord};

use crate::report::histogram;

/// Options of `rafka-bench scale`.
#[derive(clap::Args)]
pub struct ScaleArgs {
    /// Brokers, comma-separated.
    #[arg(long, env = "RAFKA_BOOTSTRAP", default_value = "127.0.0.1:9092")]
    bootstrap: String,
    /// The topic; created with --partitions and --replication-factor if missing.
    #[arg(long)]
    topic: String,
    /// Partitions when the topic has to be created.
    #[arg(long, default_value_t = 1000)]
    partitions: u32,
    /// Replicas per partition when the topic has to be created.
    #[arg(long, default_value_t = 3)]
    replication_factor: u32,
    /// Give up after this many seconds.
    #[arg(long, default_value_t = 300)]
    timeout_secs: u64,
    /// Print one JSON object instead of text.
    #[arg(long)]
    json: bool,
}

/// Writes one record (acks=all) to every partition at once and reports when the last
/// was acknowledged, with the spread of the partitions' times.
pub async fn run(args: ScaleArgs) -> anyhow::Result<()> {
    let started = Instant::now();
    let timeout = Duration::from_secs(args.timeout_secs);
    let admin = connect_admin(&args.bootstrap, started + timeout).await?;
    let mut created = None;
    if admin.describe_topics(&[&args.topic]).await.is_err() {
        admin
            .create_topic(
                &args.topic,
                args.partitions,
                args.replication_factor,
                BTreeMap::new(),
            )
            .await
            .with_context(|| format!("creating {}", args.topic))?;
        created = Some(started.elapsed());
    }
    let config = ProducerConfig {
        acks: Acks::All,
        linger: Duration::ZERO,
        delivery_timeout: timeout.saturating_sub(started.elapsed()),
        ..ProducerConfig::default()
    };
    let producer = Producer::connect(&args.bootstrap, config).await?;
    let count = partition_count(&admin, &args.topic).await?;
    let sent = Instant::now();
    let mut acks = Vec::with_capacity(count as usize);
    for p in 0..count {
        let mut record = ProducerRecord::new(args.topic.as_str(), b"scale".to_vec());
        record.partition = Some(p);
        acks.push(producer.send(record).await?);
    }
    let mut each = histogram();
    let mut failed = 0;
    let waits = acks.into_iter().enumerate().map(|(p, ack)| async move {
        let r = ack.await;
        (p, r, sent.elapsed())
    });
    let mut failed_partitions = Vec::new();
    for (p, r, at) in futures::future::join_all(waits).await {
        match r {
            Ok(_) => each.saturating_record(at.as_nanos() as u64),
            Err(e) => {
                if failed == 0 {
                    eprintln!("first failed partition: {e}");
                }
                failed += 1;
                failed_partitions.push(p);
            }
        }
    }
    if !failed_partitions.is_empty() {
        failed_partitions.truncate(20);
        eprintln!("failed partitions (up to 20): {failed_partitions:?}");
        show_leaders(&args.bootstrap, &args.topic, &failed_partitions).await;
    }
    let all = sent.elapsed();
    let ms = |q: f64| each.value_at_quantile(q) as f64 / 1e6;
    if args.json {
        println!(
            "{{\"partitions\":{count},\"acked\":{},\"failed\":{failed},\"create_ms\":{},\"all_acked_ms\":{:.0},\"p50_ms\":{:.0},\"p99_ms\":{:.0},\"since_start_ms\":{:.0}}}",
            each.len(),
            created.map_or("null".into(), |c| format!("{:.0}", c.as_secs_f64() * 1e3)),
            all.as_secs_f64() * 1e3,
            ms(0.5),
            ms(0.99),
            started.elapsed().as_secs_f64() * 1e3,
        );
    } else {
        if let Some(c) = created {
            println!(
                "created {} ({count} partitions) in {:.2} s",
                args.topic,
                c.as_secs_f64()
            );
        }
        println!(
            "{} of {count} partitions acknowledged a write in {:.2} s (p50 {:.0} ms, p99 {:.0} ms per partition); {failed} failed; {:.2} s since start",
            each.len(),
            all.as_secs_f64(),
            ms(0.5),
            ms(0.99),
            started.elapsed().as_secs_f64()
        );
    }
    anyhow::ensure!(failed == 0, "{failed} partitions acknowledged no write");
    Ok(())
}

/// Connects, retrying until `deadline`: after a restart the brokers may still be coming up.
/// Prints the leader each broker names for `partitions`: what a client was told.
async fn show_leaders(bootstrap: &str, topic: &str, partitions: &[usize]) {
    for address in bootstrap.split(',') {
        let described = match Admin::connect(address).await {
            Ok(admin) => admin.describe_topics(&[topic]).await,
            Err(e) => Err(e),
        };
        match described {
            Ok(topics) => {
                let Some(t) = topics.first() else { continue };
                let leaders: Vec<String> = partitions
                    .iter()
                    .filter_map(|&p| t.partitions.get(p))
                    .map(|p| format!("{}: leader {} of {:?}", p.partition, p.leader, p.replicas))
                    .collect();
                eprintln!("{address} says {}", leaders.join(", "));
            }
            Err(e) => eprintln!("{address}: {e}"),
        }
    }
}

async fn connect_admin(bootstrap: &str, deadline: Instant) -> anyhow::Result<Admin> {
    loop {
        match Admin::connect(bootstrap).await {
            Ok(a) if a.metadata(&[]).await.is_ok() => return Ok(a),
            Ok(_) | Err(_) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(100)).await
            }
            Ok(_) => anyhow::bail!("no metadata from {bootstrap}"),
            Err(e) => return Err(e).context(format!("connecting to {bootstrap}")),
        }
    }
}

async fn partition_count(admin: &Admin, topic: &str) -> anyhow::Result<u32> {
    let t = admin.describe_topics(&[topic]).await?;
    let t = t.first().with_context(|| format!("no topic {topic}"))?;
    Ok(t.partitions.len() as u32)
}
