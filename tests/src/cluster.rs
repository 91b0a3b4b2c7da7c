//! A cluster of brokers in this process, each a full `Server` with `peers` on its own
//! loopback port and data directory, talking real gRPC to each other and to clients.

use std::sync::Arc;
use std::time::Duration;

use rafka_broker::cluster::node::{ClusterNode, ReplicatedPartition};
use rafka_broker::config::BrokerConfig;
use rafka_broker::server::Server;

use crate::eventually;

/// Deadline of every wait in cluster tests.
pub const WAIT: Duration = Duration::from_secs(60);

/// One broker of a [`TestCluster`].
pub struct ClusterBroker {
    /// Broker id.
    pub id: u32,
    /// `host:port` of its gRPC services.
    pub addr: String,
    dir: Arc<tempfile::TempDir>,
    running: Option<Running>,
}

struct Running {
    node: Arc<ClusterNode>,
    kafka: String,
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<Result<(), rafka_broker::error::BrokerError>>,
}

/// N brokers in this process forming one cluster.
pub struct TestCluster {
    /// The brokers, by position (broker id = position + 1).
    pub brokers: Vec<ClusterBroker>,
    peers: String,
    tweak: Tweak,
}

/// Changes a broker's config before it starts.
pub type Tweak = fn(&mut BrokerConfig);

async fn launch(
    id: u32,
    addr: &str,
    dir: &tempfile::TempDir,
    peers: &str,
    tweak: Tweak,
) -> Running {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .unwrap_or_else(|e| panic!("bind {addr}: {e}"));
    let mut config = BrokerConfig {
        node_id: id,
        listen: listener.local_addr().expect("local addr"),
        data_dir: dir.path().to_path_buf(),
        peers: peers.to_string(),
        ..Default::default()
    };
    let kafka = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind a free port");
    let kafka_addr = kafka.local_addr().expect("local addr").to_string();
    config.kafka_listen = Some(kafka_addr.clone());
    tweak(&mut config);
    let server = Server::open(config).await.expect("open broker");
    server.serve_kafka(kafka);
    let node = server.cluster().clone();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(server.serve(listener, async {
        let _ = stopped.await;
    }));
    Running {
        node,
        kafka: kafka_addr,
        stop,
        task,
    }
}

impl TestCluster {
    /// Starts `n` brokers on free loopback ports.
    pub async fn start(n: u32) -> Self {
        Self::start_with(n, |_| {}).await
    }

    /// Starts `n` brokers with `tweak` applied to each one's config.
    pub async fn start_with(n: u32, tweak: Tweak) -> Self {
        crate::init_tracing();
        let addrs = free_addresses(n as usize);
        let peers = peer_list(&addrs);
        let mut brokers = Vec::new();
        for (i, addr) in addrs.into_iter().enumerate() {
            let dir = Arc::new(tempfile::tempdir().expect("temp dir"));
            let id = i as u32 + 1;
            let running = launch(id, &addr, &dir, &peers, tweak).await;
            brokers.push(ClusterBroker {
                id,
                addr,
                dir,
                running: Some(running),
            });
        }
        Self {
            brokers,
            peers,
            tweak,
        }
    }

    /// Every broker's address, comma-separated.
    pub fn bootstrap(&self) -> String {
        self.brokers
            .iter()
            .map(|b| b.addr.clone())
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Broker `id`'s Kafka listener (panics if it is stopped).
    pub fn kafka_addr(&self, id: u32) -> String {
        self.brokers[id as usize - 1]
            .running
            .as_ref()
            .expect("broker running")
            .kafka
            .clone()
    }

    /// Broker `id`'s cluster node (panics if it is stopped).
    pub fn node(&self, id: u32) -> &Arc<ClusterNode> {
        &self
            .broker(id)
            .running
            .as_ref()
            .expect("broker running")
            .node
    }

    fn broker(&self, id: u32) -> &ClusterBroker {
        &self.brokers[id as usize - 1]
    }

    /// Ids of the running brokers.
    pub fn running(&self) -> Vec<u32> {
        self.brokers
            .iter()
            .filter(|b| b.running.is_some())
            .map(|b| b.id)
            .collect()
    }

    /// Stops broker `id` gracefully (its data stays for a restart).
    pub async fn stop(&mut self, id: u32) {
        let running = self.brokers[id as usize - 1]
            .running
            .take()
            .expect("broker running");
        let _ = running.stop.send(());
        running
            .task
            .await
            .expect("broker task")
            .expect("broker stopped cleanly");
    }

    /// Restarts a stopped broker on its address and data directory.
    pub async fn restart(&mut self, id: u32) {
        let b = &self.brokers[id as usize - 1];
        assert!(b.running.is_none(), "broker {id} is running");
        let running = launch(id, &b.addr, &b.dir, &self.peers, self.tweak).await;
        self.brokers[id as usize - 1].running = Some(running);
    }

    /// Broker `id`'s replica of a partition, once it runs.
    pub async fn replica(&self, id: u32, topic: &str, partition: u32) -> Arc<ReplicatedPartition> {
        let node = self.node(id).clone();
        let found = std::sync::Mutex::new(None);
        eventually(
            &format!("broker {id} to run {topic}-{partition}"),
            WAIT,
            || async {
                let p = node.partition(topic, partition).await;
                let ok = p.is_some();
                *found.lock().unwrap() = p;
                ok
            },
        )
        .await;
        found.into_inner().unwrap().expect("found")
    }

    /// The broker leading a partition, once one does (as the running replicas agree).
    pub async fn leader_of(&self, topic: &str, partition: u32) -> u32 {
        let leader = std::sync::Mutex::new(0);
        eventually(
            &format!("a leader of {topic}-{partition}"),
            WAIT,
            || async {
                for id in self.running() {
                    if let Some(p) = self.node(id).partition(topic, partition).await {
                        if p.is_leader() {
                            *leader.lock().unwrap() = id;
                            return true;
                        }
                    }
                }
                false
            },
        )
        .await;
        leader.into_inner().unwrap()
    }

    /// Waits until every running replica of the partition has the same high watermark
    /// (at least `at_least`) and byte-identical logs below it; returns the watermark.
    pub async fn converged(&self, topic: &str, partition: u32, at_least: u64) -> u64 {
        let mut replicas = Vec::new();
        for id in self.running() {
            replicas.push(self.replica(id, topic, partition).await);
        }
        let hw = std::sync::Mutex::new(0);
        eventually(
            &format!("replicas of {topic}-{partition} to agree at or past {at_least}"),
            WAIT,
            || async {
                let marks: Vec<u64> = replicas.iter().map(|r| r.high_watermark()).collect();
                let same = marks.windows(2).all(|w| w[0] == w[1]);
                *hw.lock().unwrap() = marks[0];
                same && marks[0] >= at_least
            },
        )
        .await;
        let hw = hw.into_inner().unwrap();
        // Retention may run on any replica while we read: compare what all of them
        // hold from the latest log start, and read again if a start moved meanwhile.
        loop {
            let starts = || -> Vec<u64> {
                replicas
                    .iter()
                    .map(|r| r.reader().log_start_offset())
                    .collect()
            };
            let from = *starts().iter().max().expect("replicas");
            let views: Option<Vec<Vec<Vec<u8>>>> = replicas
                .iter()
                .map(|r| {
                    if from == 0 {
                        // Everything, Raft's control batches included, byte for byte.
                        replica_bytes_from(r, 0, hw).map(|b| vec![b])
                    } else {
                        data_batches(r, from, hw)
                    }
                })
                .collect();
            let Some(views) = views.filter(|_| starts().iter().all(|&s| s <= from)) else {
                continue;
            };
            for (i, v) in views.iter().enumerate().skip(1) {
                assert!(
                    *v == views[0],
                    "{topic}-{partition}: replica {i} differs from replica 0 in [{from}, {hw})"
                );
            }
            return hw;
        }
    }
}

/// The replica's record batches (not Raft's control batches) in `[from, below)`;
/// `None` if retention deleted part of it while reading.
pub fn data_batches(r: &ReplicatedPartition, from: u64, below: u64) -> Option<Vec<Vec<u8>>> {
    let bytes = replica_bytes_from(r, from, below)?;
    let mut out = Vec::new();
    let mut rest = &bytes[..];
    while !rest.is_empty() {
        let h = rafka_proto::batch::BatchHeader::parse(rest).expect("stored batch");
        if !h.is_control() && h.base_offset as u64 >= from {
            out.push(rest[..h.total_len()].to_vec());
        }
        rest = &rest[h.total_len()..];
    }
    Some(out)
}

/// The replica's log bytes from the batch holding `from` up to `below`; `None` if
/// retention deleted part of it while reading.
pub fn replica_bytes_from(r: &ReplicatedPartition, from: u64, below: u64) -> Option<Vec<u8>> {
    let reader = r.reader();
    let mut out = Vec::new();
    let mut offset = from;
    while offset < below {
        let chunk = reader.read_below(offset, 1 << 20, below).ok()?;
        assert!(!chunk.is_empty(), "no data at {offset} below {below}");
        let mut rest = &chunk[..];
        while !rest.is_empty() {
            let h = rafka_proto::batch::BatchHeader::parse(rest).expect("stored batch");
            offset = offset.max(h.next_offset() as u64);
            rest = &rest[h.total_len()..];
        }
        out.extend_from_slice(&chunk);
    }
    Some(out)
}

impl Drop for TestCluster {
    fn drop(&mut self) {
        for b in &mut self.brokers {
            if let Some(r) = b.running.take() {
                let _ = r.stop.send(());
            }
        }
    }
}

/// `n` loopback addresses with free ports (bound, then released for the brokers).
pub fn free_addresses(n: usize) -> Vec<String> {
    let listeners: Vec<_> = (0..n)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0").expect("free port"))
        .collect();
    listeners
        .iter()
        .map(|l| l.local_addr().expect("addr").to_string())
        .collect()
}

/// The `peers` setting for brokers 1..=n at these addresses.
pub fn peer_list(addrs: &[String]) -> String {
    addrs
        .iter()
        .enumerate()
        .map(|(i, a)| format!("{}={a}", i + 1))
        .collect::<Vec<_>>()
        .join(",")
}

/// A record the cluster acknowledged: where it was acknowledged, and its value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Acked {
    /// Partition.
    pub partition: u32,
    /// Offset it was acknowledged at.
    pub offset: u64,
    /// Its value.
    pub value: String,
}

/// Produces `count` keyless records `{prefix}-{i}` with acks=all in windows of
/// `window`; returns those acknowledged and the number that failed.
pub async fn produce_acked(
    producer: &rafka_client::Producer,
    topic: &str,
    prefix: &str,
    count: usize,
    window: usize,
) -> (Vec<Acked>, usize) {
    let mut acked = Vec::with_capacity(count);
    let mut failed = 0;
    let mut i = 0;
    while i < count {
        let mut pending = Vec::new();
        for j in i..(i + window).min(count) {
            let value = format!("{prefix}-{j}");
            let record = rafka_client::ProducerRecord::new(topic, value.clone().into_bytes());
            pending.push((value, producer.send(record).await.expect("send")));
        }
        i += pending.len();
        for (value, delivery) in pending {
            match delivery.await {
                Ok(m) => acked.push(Acked {
                    partition: m.partition,
                    offset: m.offset,
                    value,
                }),
                Err(e) => {
                    if failed == 0 {
                        eprintln!("first failed delivery: {e}");
                    }
                    failed += 1
                }
            }
        }
    }
    (acked, failed)
}

/// Reads every partition of `topic` from the start until each has been read past its
/// highest acknowledged offset, and asserts every acknowledged record is at its offset.
pub async fn assert_acked_readable(bootstrap: &str, topic: &str, acked: &[Acked]) {
    use std::collections::HashMap;
    let mut consumer =
        rafka_client::Consumer::connect(bootstrap, rafka_client::ConsumerConfig::default())
            .await
            .expect("consumer");
    let partitions = consumer.partitions_of(topic).await.expect("partitions");
    consumer.assign(partitions.clone());
    for tp in &partitions {
        consumer
            .seek(tp, rafka_client::SeekTo::Earliest)
            .await
            .expect("seek");
    }
    let mut need: HashMap<u32, u64> = HashMap::new();
    for a in acked {
        let n = need.entry(a.partition).or_default();
        *n = (*n).max(a.offset + 1);
    }
    let mut seen: HashMap<(u32, u64), bytes::Bytes> = HashMap::new();
    let start = std::time::Instant::now();
    while partitions.iter().any(|tp| {
        consumer.position(tp).unwrap_or(0) < need.get(&tp.partition).copied().unwrap_or(0)
    }) {
        assert!(start.elapsed() < WAIT, "timed out reading {topic} back");
        for r in consumer
            .poll(Duration::from_millis(500))
            .await
            .expect("poll")
        {
            let value = r.value.clone().unwrap_or_default();
            assert!(
                seen.insert((r.partition, r.offset), value).is_none(),
                "offset {} of partition {} read twice",
                r.offset,
                r.partition
            );
        }
    }
    for a in acked {
        let got = seen.get(&(a.partition, a.offset));
        assert_eq!(
            got.map(|v| String::from_utf8_lossy(v).into_owned()),
            Some(a.value.clone()),
            "acknowledged record {} at {}-{}@{}",
            a.value,
            topic,
            a.partition,
            a.offset
        );
    }
}

/// Sends keyless records `{prefix}-{i}` (acks=all) one every `every` until `stop` is set,
/// then waits for every acknowledgement: each send must be acknowledged.
pub fn produce_at_rate(
    producer: Arc<rafka_client::Producer>,
    topic: &str,
    prefix: &str,
    every: Duration,
    stop: Arc<std::sync::atomic::AtomicBool>,
) -> tokio::task::JoinHandle<Vec<Acked>> {
    let (topic, prefix): (Arc<str>, String) = (topic.into(), prefix.to_string());
    tokio::spawn(async move {
        let mut sent = Vec::new();
        let mut tick = tokio::time::interval(every);
        let mut i = 0;
        while !stop.load(std::sync::atomic::Ordering::SeqCst) {
            tick.tick().await;
            let value = format!("{prefix}-{i}");
            let record =
                rafka_client::ProducerRecord::new(topic.clone(), value.clone().into_bytes());
            sent.push((value, producer.send(record).await.expect("send")));
            i += 1;
        }
        let mut out = Vec::new();
        for (value, ack) in sent {
            let m = ack.await.expect("acknowledged while the cluster changed");
            out.push(Acked {
                partition: m.partition,
                offset: m.offset,
                value,
            });
        }
        out
    })
}
