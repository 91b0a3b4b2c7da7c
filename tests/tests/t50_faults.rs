//! The fault suite: three broker processes, each in a network namespace of its own,
//! while idempotent producers write unique values and a consumer reads throughout, and a
//! nemesis breaks things on a schedule: kill -9 of a partition leader and of any broker
//! (restarted, sometimes with the tail of a log file cut off while it was down),
//! SIGSTOP/SIGCONT of a leader, a leader isolated from the other brokers (the old
//! leader in the minority), any broker isolated, a bridge (two brokers cut apart, the
//! third seeing both), a broker killed whose index files are deleted while it is
//! down, lossy links (10–30% of the packets between brokers dropped at random), and
//! delayed links (20–200 ms each way on every connection to a broker, through a
//! forwarder in front of each broker, `rafka_tests::delay`), and a broker killed that
//! finds one bit flipped in one of its sealed segments at its restart (bit rot: its
//! scrubber must find it and repair it from another replica before the replicas are
//! compared). Besides the assigned consumer, a consumer group of two members reads with
//! auto-commit, and its committed offsets are read throughout. Afterwards everything
//! heals, every replica is read whole, and the checkers of `rafka_tests::history` judge
//! the history: lost acknowledged writes, duplicates, values at other offsets than
//! acknowledged, inconsistent offsets between the consumers and the log, skipped or
//! backward polls, values never sent, divergent or short replicas, records the group
//! never delivered, committed offsets going backwards. Every count must be 0.
//! Availability (the longest time a partition acknowledged no write during each fault
//! and its recovery) is reported.
//!
//! `RAFKA_FAULT_SECS` (default 90: every nemesis once) sets the length of the nemesis
//! phase, `RAFKA_FAULT_SEED` the schedule and `RAFKA_FAULT_NEMESES` (names, comma
//! separated) limits it to some nemeses; the result is written as JSON to
//! `target/faults/result-SEED.json`. Needs root, `ip` and `nft` (as t40).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::stream::{FuturesUnordered, StreamExt};
use rafka_client::{
    Admin, Consumer, ConsumerConfig, Producer, ProducerConfig, ProducerRecord, RebalanceListener,
    SeekTo, TopicPartition,
};
use rafka_proto::batch::{BatchHeader, RecordBatch};
use rafka_proto::v1::{self, broker_client::BrokerClient};
use rafka_tests::cluster::{peer_list, WAIT};
use rafka_tests::damage;
use rafka_tests::delay::DelayProxy;
use rafka_tests::history::{check, longest_gap, Ack, History, Poll};
use rafka_tests::netns::Net;
use rafka_tests::procs::READY;
use rafka_tests::{child_arg, ChildTest};

/// A broker process: `id|address|data dir|peers`.
#[test]
fn broker_child() {
    rafka_tests::procs::peers_broker_child()
}

const TOPIC: &str = "faults";
const GROUP: &str = "faults-group";
/// Small segments, so a run seals many (and a deleted index may be a sealed one's).
const SEGMENT_BYTES: &str = "1048576";
const PARTITIONS: u32 = 3;
/// How long a fault lasts, and how long the cluster then has to recover.
const FAULT_FOR: Duration = Duration::from_secs(4);
const RECOVER_FOR: Duration = Duration::from_secs(4);

/// The brokers, their namespaces and processes.
struct Cluster {
    net: Net,
    /// Where each broker listens (port 9092), and clients bootstrap.
    addrs: Vec<String>,
    /// In front of each broker in its namespace (port 9093): the address the brokers
    /// know each other by (and advertise), so links can be delayed.
    delays: Vec<DelayProxy>,
    dirs: Vec<tempfile::TempDir>,
    peers: String,
    children: Vec<Option<ChildTest>>,
}

impl Cluster {
    fn new() -> Self {
        let net = Net::new(3);
        let addrs: Vec<String> = (1..=3).map(|id| format!("{}:9092", net.ip(id))).collect();
        let fronts: Vec<String> = (1..=3).map(|id| format!("{}:9093", net.ip(id))).collect();
        let delays = (1..=3)
            .map(|id| {
                let i = id as usize - 1;
                DelayProxy::start(
                    &net.netns(id),
                    fronts[i].parse().expect("address"),
                    addrs[i].parse().expect("address"),
                )
            })
            .collect();
        let mut c = Self {
            peers: peer_list(&fronts),
            addrs,
            delays,
            dirs: (0..3).map(|_| tempfile::tempdir().unwrap()).collect(),
            children: (0..3).map(|_| None).collect(),
            net,
        };
        for id in 1..=3 {
            c.start(id);
        }
        c
    }

    fn start(&mut self, id: u32) {
        let i = id as usize - 1;
        let arg = format!(
            "{id}|{}|{}|{}",
            self.addrs[i],
            self.dirs[i].path().display(),
            self.peers
        );
        let mut child = ChildTest::spawn_in(Some(&self.net.netns(id)), "broker_child", &arg);
        while !child.next_line().expect("broker ready").contains(READY) {}
        self.children[i] = Some(child);
    }

    fn kill(&mut self, id: u32) {
        if let Some(child) = self.children[id as usize - 1].take() {
            child.kill();
        }
    }

    fn signal(&self, id: u32, signal: i32) {
        if let Some(child) = &self.children[id as usize - 1] {
            child.signal(signal);
        }
    }

    fn isolate(&self, id: u32) {
        for other in (1..=3).filter(|o| *o != id) {
            self.net.cut(id, other);
        }
    }

    fn heal(&self, id: u32) {
        for other in (1..=3).filter(|o| *o != id) {
            self.net.heal(id, other);
        }
    }

    /// The broker's directory of `partition`.
    fn partition_dir(&self, id: u32, partition: u32) -> std::path::PathBuf {
        self.dirs[id as usize - 1]
            .path()
            .join(format!("{TOPIC}-{partition}"))
    }

    fn bootstrap(&self) -> String {
        self.addrs.join(",")
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for id in 1..=3 {
            self.signal(id, libc::SIGCONT);
            self.kill(id);
        }
    }
}

/// A small deterministic generator (the schedule is reproducible from its seed).
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u32) -> u32 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((self.0 >> 33) % n as u64) as u32
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Nemesis {
    KillLeader,
    KillAny,
    KillAndTruncate,
    KillAndDeleteIndex,
    KillAndFlipBit,
    PauseLeader,
    IsolateLeader,
    IsolateAny,
    Bridge,
    LossyLinks,
    DelayedLinks,
}

const NEMESES: [Nemesis; 11] = [
    Nemesis::KillLeader,
    Nemesis::PauseLeader,
    Nemesis::IsolateLeader,
    Nemesis::KillAndTruncate,
    Nemesis::Bridge,
    Nemesis::KillAny,
    Nemesis::IsolateAny,
    Nemesis::KillAndDeleteIndex,
    Nemesis::LossyLinks,
    Nemesis::DelayedLinks,
    Nemesis::KillAndFlipBit,
];

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|v| v.parse().ok())
}

async fn leader_of(admin: &Admin, partition: u32) -> Option<u32> {
    let m = admin.metadata(&[TOPIC]).await.ok()?;
    let l = m.topics.first()?.partitions.get(partition as usize)?.leader;
    (1..=3).contains(&l).then_some(l)
}

/// A replica's record values of `partition` below `below`, read from broker `addr`.
async fn read_values(addr: &str, partition: u32, below: u64) -> Vec<String> {
    let mut client = BrokerClient::connect(format!("http://{addr}"))
        .await
        .expect("connect")
        .max_decoding_message_size(usize::MAX);
    let mut out = Vec::new();
    let started = Instant::now();
    while (out.len() as u64) < below {
        let data = client
            .fetch(v1::FetchRequest {
                partitions: vec![v1::FetchPartition {
                    topic: TOPIC.into(),
                    partition,
                    offset: out.len() as u64,
                    max_bytes: 1 << 20,
                    min_offset: below,
                }],
                min_bytes: 0,
                max_wait_ms: 10_000,
                max_bytes: 0,
            })
            .await;
        // A replica refuses a batch whose bits flipped on its disk (DATA_LOSS) until its
        // scrubber repaired it from another replica.
        let data = match data {
            Err(s) if s.code() == tonic::Code::DataLoss && started.elapsed() < WAIT => {
                eprintln!(
                    "{addr} partition {partition}: {} (waiting for the repair)",
                    s.message()
                );
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
            other => other.expect("fetch").into_inner(),
        };
        let mut rest = &data.partitions[0].records[..];
        while !rest.is_empty() && (out.len() as u64) < below {
            let (batch, len) = RecordBatch::parse_prefix(rest).expect("a valid batch");
            let h: &BatchHeader = batch.header();
            for (i, r) in batch.records().enumerate() {
                let offset = h.base_offset as u64 + i as u64;
                if offset == out.len() as u64 && offset < below {
                    let v = r.expect("record").value.unwrap_or_default();
                    out.push(String::from_utf8_lossy(v).into_owned());
                }
            }
            rest = &rest[len..];
        }
    }
    out
}

/// One producer writing `p{k}-{i}` round the partitions, up to 200 unacknowledged.
async fn produce(
    k: usize,
    bootstrap: String,
    stop: Arc<AtomicBool>,
    h: Arc<Mutex<History>>,
    t0: Instant,
    shown: Arc<Mutex<Vec<Arc<Producer>>>>,
) {
    let producer = Producer::connect(
        &bootstrap,
        ProducerConfig {
            linger: Duration::from_millis(2),
            delivery_timeout: Duration::from_secs(30),
            ..ProducerConfig::default()
        },
    )
    .await
    .expect("producer");
    let producer = Arc::new(producer);
    shown.lock().unwrap().push(producer.clone());
    let mut pending = FuturesUnordered::new();
    let mut i = 0u64;
    let record = |r: Result<rafka_client::RecordMetadata, rafka_client::ClientError>,
                  value: String| {
        let mut h = h.lock().unwrap();
        match r {
            Ok(m) => h.acked.push(Ack {
                value,
                partition: m.partition,
                offset: m.offset,
                at: t0.elapsed(),
            }),
            Err(e) => {
                h.failed += 1;
                let e: String = e.to_string().chars().take(120).collect();
                *h.failures.entry(e).or_default() += 1;
            }
        }
    };
    while !stop.load(Ordering::Relaxed) {
        while pending.len() < 200 && !stop.load(Ordering::Relaxed) {
            let value = format!("p{k}-{i}");
            let partition = (i % PARTITIONS as u64) as u32;
            i += 1;
            h.lock().unwrap().sent.insert(value.clone());
            let r = ProducerRecord::new(TOPIC, value.clone().into_bytes()).partition(partition);
            let delivery = producer.send(r).await.expect("send");
            pending.push(async move { (delivery.await, value) });
        }
        if let Some((r, value)) = pending.next().await {
            record(r, value);
        }
    }
    while let Some((r, value)) = pending.next().await {
        record(r, value);
    }
}

/// A consumer reading every partition from the start until it has read up to the
/// offsets `until` is given (or a deadline passes after that).
async fn consume(bootstrap: String, until: Arc<Mutex<Option<Vec<u64>>>>) -> Vec<Poll> {
    let mut consumer = Consumer::connect(&bootstrap, ConsumerConfig::default())
        .await
        .expect("consumer");
    let tps: Vec<_> = (0..PARTITIONS)
        .map(|p| TopicPartition::new(TOPIC, p))
        .collect();
    consumer.assign(tps.clone());
    for tp in &tps {
        consumer.seek(tp, SeekTo::Earliest).await.expect("seek");
    }
    let mut polls = Vec::new();
    let mut next = vec![0u64; PARTITIONS as usize];
    let mut deadline = None;
    loop {
        // Errors (a leader down, an election) are retried by polling again.
        if let Ok(records) = consumer.poll(Duration::from_millis(200)).await {
            for r in records {
                next[r.partition as usize] = r.offset + 1;
                polls.push(Poll {
                    partition: r.partition,
                    offset: r.offset,
                    value: String::from_utf8_lossy(&r.value.unwrap_or_default()).into_owned(),
                });
            }
        }
        if let Some(ends) = until.lock().unwrap().as_ref() {
            if next.iter().zip(ends).all(|(n, e)| n >= e) {
                return polls;
            }
            let d = *deadline.get_or_insert_with(|| Instant::now() + WAIT);
            if Instant::now() > d {
                eprintln!("the consumer stopped at {next:?}, short of {ends:?}");
                return polls;
            }
        }
    }
}

/// Counts the member's assignments: each starts a new stream of polls.
struct Assignments(Arc<AtomicUsize>);

impl RebalanceListener for Assignments {
    fn on_revoked(&mut self, _: &[TopicPartition]) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
    fn on_assigned(&mut self, _: &[TopicPartition]) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

/// A member of the consumer group (auto-commit every 300 ms) until `done`; returns its
/// polls, one stream per assignment.
async fn group_member(bootstrap: String, done: Arc<AtomicBool>) -> Vec<Vec<Poll>> {
    let mut consumer = Consumer::connect(
        &bootstrap,
        ConsumerConfig {
            group_id: Some(GROUP.into()),
            auto_commit_interval: Some(Duration::from_millis(300)),
            ..ConsumerConfig::default()
        },
    )
    .await
    .expect("group consumer");
    consumer.subscribe(&[TOPIC]).expect("subscribe");
    let assignments = Arc::new(AtomicUsize::new(0));
    consumer.set_rebalance_listener(Assignments(assignments.clone()));
    let mut streams: BTreeMap<usize, Vec<Poll>> = BTreeMap::new();
    while !done.load(Ordering::SeqCst) {
        // Errors (a coordinator or leader down) are retried by polling again.
        if let Ok(records) = consumer.poll(Duration::from_millis(200)).await {
            let stream = streams
                .entry(assignments.load(Ordering::SeqCst))
                .or_default();
            for r in records {
                stream.push(Poll {
                    partition: r.partition,
                    offset: r.offset,
                    value: String::from_utf8_lossy(&r.value.unwrap_or_default()).into_owned(),
                });
            }
        }
    }
    let _ = consumer.close().await;
    streams.into_values().collect()
}

/// Reads the group's committed offsets every 100 ms; once the final high watermarks are
/// known (`until`) and every partition's committed offset reached them (or a deadline
/// passed), tells the members they are `done`. Returns the offsets read, per partition.
async fn watch_committed(
    bootstrap: String,
    until: Arc<Mutex<Option<Vec<u64>>>>,
    done: Arc<AtomicBool>,
) -> BTreeMap<u32, Vec<u64>> {
    let mut reader = Consumer::connect(
        &bootstrap,
        ConsumerConfig {
            group_id: Some(GROUP.into()),
            ..ConsumerConfig::default()
        },
    )
    .await
    .expect("committed-offset reader");
    let tps: Vec<_> = (0..PARTITIONS)
        .map(|p| TopicPartition::new(TOPIC, p))
        .collect();
    let mut seen: BTreeMap<u32, Vec<u64>> = BTreeMap::new();
    let mut deadline = None;
    loop {
        if let Ok(c) = reader.committed(&tps).await {
            for (tp, o) in c {
                let s = seen.entry(tp.partition).or_default();
                if s.last() != Some(&o) {
                    s.push(o);
                }
            }
        }
        if let Some(ends) = until.lock().unwrap().clone() {
            let reached = (0..PARTITIONS).all(|p| {
                seen.get(&p).and_then(|s| s.last()).copied().unwrap_or(0) >= ends[p as usize]
            });
            let d = *deadline.get_or_insert_with(|| Instant::now() + WAIT);
            if reached || Instant::now() > d {
                if !reached {
                    eprintln!(
                        "the group's committed offsets stopped at {seen:?}, short of {ends:?}"
                    );
                }
                done.store(true, Ordering::SeqCst);
                return seen;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_anomalies_under_kills_pauses_partitions_and_torn_writes() {
    if child_arg().is_some() {
        return;
    }
    rafka_tests::init_tracing();
    let secs = env_u64("RAFKA_FAULT_SECS").unwrap_or(90);
    let seed = env_u64("RAFKA_FAULT_SEED").unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_secs())
    });
    eprintln!("fault run: {secs} s of faults, seed {seed} (RAFKA_FAULT_SEED={seed} repeats it)");
    let mut rng = Rng(seed);
    let mut cluster = Cluster::new();
    let admin = Admin::connect(&cluster.bootstrap()).await.expect("admin");
    admin
        .create_topic(
            TOPIC,
            PARTITIONS,
            3,
            BTreeMap::from([("segment.bytes".to_string(), SEGMENT_BYTES.to_string())]),
        )
        .await
        .expect("create");

    let t0 = Instant::now();
    let history = Arc::new(Mutex::new(History::default()));
    let stop_producers = Arc::new(AtomicBool::new(false));
    let until = Arc::new(Mutex::new(None));
    let shown = Arc::new(Mutex::new(Vec::new()));
    let producers: Vec<_> = (0..2)
        .map(|k| {
            tokio::spawn(produce(
                k,
                cluster.bootstrap(),
                stop_producers.clone(),
                history.clone(),
                t0,
                shown.clone(),
            ))
        })
        .collect();
    let consumer = tokio::spawn(consume(cluster.bootstrap(), until.clone()));
    let group_done = Arc::new(AtomicBool::new(false));
    let members: Vec<_> = (0..2)
        .map(|_| tokio::spawn(group_member(cluster.bootstrap(), group_done.clone())))
        .collect();
    let committed = tokio::spawn(watch_committed(
        cluster.bootstrap(),
        until.clone(),
        group_done.clone(),
    ));

    // The nemesis: faults in a seeded order, each followed by time to recover.
    let mut events: Vec<(Nemesis, Duration, Duration, String)> = Vec::new();
    // `RAFKA_FAULT_NEMESES=KillLeader,PauseLeader` runs only those (to study one).
    let mut order: Vec<Nemesis> = match std::env::var("RAFKA_FAULT_NEMESES") {
        Ok(only) => NEMESES
            .iter()
            .copied()
            .filter(|n| only.split(',').any(|o| o.trim() == format!("{n:?}")))
            .collect(),
        Err(_) => NEMESES.to_vec(),
    };
    assert!(!order.is_empty(), "RAFKA_FAULT_NEMESES names no nemesis");
    let mut n = 0;
    while t0.elapsed() < Duration::from_secs(secs) {
        if n % order.len() == 0 {
            for i in (1..order.len()).rev() {
                order.swap(i, rng.below(i as u32 + 1) as usize);
            }
        }
        let nemesis = order[n % order.len()];
        n += 1;
        let leader = leader_of(&admin, rng.below(PARTITIONS)).await.unwrap_or(1);
        let any = 1 + rng.below(3);
        let start = t0.elapsed();
        let what = match nemesis {
            Nemesis::KillLeader
            | Nemesis::KillAny
            | Nemesis::KillAndTruncate
            | Nemesis::KillAndDeleteIndex
            | Nemesis::KillAndFlipBit => {
                let victim = if nemesis == Nemesis::KillLeader {
                    leader
                } else {
                    any
                };
                cluster.kill(victim);
                let mut what = format!("kill -9 broker {victim}");
                tokio::time::sleep(FAULT_FOR).await;
                let p = rng.below(PARTITIONS);
                let dir = cluster.partition_dir(victim, p);
                let pick = |n| rng.below(n);
                let damage = match nemesis {
                    Nemesis::KillAndTruncate => damage::truncate_tail(&dir, pick),
                    Nemesis::KillAndDeleteIndex => damage::delete_index(&dir, pick),
                    Nemesis::KillAndFlipBit => damage::flip_bit(&dir, pick),
                    _ => None,
                };
                if let Some(d) = damage {
                    what.push_str(&format!("; {d}"));
                }
                cluster.start(victim);
                what
            }
            Nemesis::PauseLeader => {
                cluster.signal(leader, libc::SIGSTOP);
                tokio::time::sleep(FAULT_FOR).await;
                cluster.signal(leader, libc::SIGCONT);
                format!("SIGSTOP broker {leader}")
            }
            Nemesis::IsolateLeader | Nemesis::IsolateAny => {
                let victim = if nemesis == Nemesis::IsolateLeader {
                    leader
                } else {
                    any
                };
                cluster.isolate(victim);
                tokio::time::sleep(FAULT_FOR).await;
                cluster.heal(victim);
                format!("isolate broker {victim}")
            }
            Nemesis::Bridge => {
                let (a, b) = (any, any % 3 + 1);
                cluster.net.cut(a, b);
                tokio::time::sleep(FAULT_FOR).await;
                cluster.net.heal(a, b);
                format!("cut {a} from {b} (the third sees both)")
            }
            Nemesis::LossyLinks => {
                let percent = 10 + rng.below(21);
                for (a, b) in [(1, 2), (2, 3), (1, 3)] {
                    cluster.net.lossy(a, b, percent);
                }
                tokio::time::sleep(FAULT_FOR).await;
                for (a, b) in [(1, 2), (2, 3), (1, 3)] {
                    cluster.net.heal(a, b);
                }
                format!("{percent}% of packets dropped each way on every link between brokers")
            }
            Nemesis::DelayedLinks => {
                let delay = Duration::from_millis(20 + rng.below(181) as u64);
                for d in &cluster.delays {
                    d.set_delay(delay);
                }
                tokio::time::sleep(FAULT_FOR).await;
                for d in &cluster.delays {
                    d.set_delay(Duration::ZERO);
                }
                format!("every connection to a broker delayed {delay:?} each way")
            }
        };
        tokio::time::sleep(RECOVER_FOR).await;
        eprintln!("{:>6.1}s {nemesis:?}: {what}", start.as_secs_f64());
        events.push((nemesis, start, t0.elapsed(), what));
    }

    // Everything heals; the producers finish what they have in flight.
    stop_producers.store(true, Ordering::Relaxed);
    for (k, p) in producers.into_iter().enumerate() {
        // Every delivery resolves within its delivery timeout (30 s) plus one request
        // timeout (30 s): one that does not is an anomaly of its own.
        tokio::time::timeout(Duration::from_secs(90), p)
            .await
            .unwrap_or_else(|_| {
                let states: Vec<String> =
                    shown.lock().unwrap().iter().map(|p| p.queue_state()).collect();
                let failures = history.lock().unwrap().failures.clone();
                panic!("producer {k}: deliveries still unresolved 90 s after the faults ended: {states:?}; failed deliveries so far: {failures:?}")
            })
            .expect("producer task");
    }
    let acked_end: Vec<u64> = {
        let h = history.lock().unwrap();
        (0..PARTITIONS)
            .map(|p| {
                h.acked
                    .iter()
                    .filter(|a| a.partition == p && a.offset != u64::MAX)
                    .map(|a| a.offset + 1)
                    .max()
                    .unwrap_or(0)
            })
            .collect()
    };
    // Every replica reaches the same high watermarks, at least the acknowledged ends.
    let marks;
    let start = Instant::now();
    loop {
        let mut all = Vec::new();
        for id in 1..=3 {
            let m = admin.metadata_from(id, &[TOPIC]).await;
            all.push(m.map_or_else(
                |_| vec![0; PARTITIONS as usize],
                |m| {
                    m.topics[0]
                        .partitions
                        .iter()
                        .map(|p| p.high_watermark)
                        .collect::<Vec<_>>()
                },
            ));
        }
        let agreed = all.windows(2).all(|w| w[0] == w[1])
            && all[0].iter().zip(&acked_end).all(|(hw, end)| hw >= end);
        if agreed {
            marks = all[0].clone();
            break;
        }
        if start.elapsed() > WAIT {
            eprintln!("replicas did not agree within {WAIT:?}: {all:?}");
            marks = all
                .into_iter()
                .map(|m| m.into_iter().min().unwrap_or(0))
                .collect();
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The consumer reads up to the end, then stops.
    *until.lock().unwrap() = Some(marks.clone());
    let polls = consumer.await.expect("consumer task");
    let committed = committed.await.expect("committed-offset task");
    let mut group_polls = Vec::new();
    for m in members {
        group_polls.extend(m.await.expect("group member task"));
    }

    let mut h = std::mem::take(&mut *history.lock().unwrap());
    h.polls = vec![polls];
    h.group_streams = group_polls.len();
    h.polls.extend(group_polls);
    h.committed = committed;
    for addr in &cluster.addrs {
        let mut log = BTreeMap::new();
        for p in 0..PARTITIONS {
            log.insert(p, read_values(addr, p, marks[p as usize]).await);
        }
        h.logs.push(log);
    }
    let (anomalies, notes) = check(&h);

    // Availability: the longest time a partition acknowledged no write, per nemesis
    // (over its events and the partitions).
    let mut availability: BTreeMap<String, Duration> = BTreeMap::new();
    let by_partition: Vec<Vec<Ack>> = (0..PARTITIONS)
        .map(|p| {
            h.acked
                .iter()
                .filter(|a| a.partition == p)
                .cloned()
                .collect()
        })
        .collect();
    let mut timeline = Vec::new();
    for (nemesis, from, to, what) in &events {
        let (worst, partition) = (by_partition.iter().enumerate())
            .map(|(p, acks)| (longest_gap(acks, *from, *to), p))
            .max()
            .unwrap_or_default();
        let e = availability.entry(format!("{nemesis:?}")).or_default();
        *e = (*e).max(worst);
        timeline.push(format!(
            "{{\"at_s\":{:.1},\"nemesis\":\"{nemesis:?}\",\"what\":{what:?},\"longest_unavailable_ms\":{},\"partition\":{partition}}}",
            from.as_secs_f64(),
            worst.as_millis()
        ));
    }
    let json = format!(
        "{{\"seed\":{seed},\"fault_secs\":{secs},\"events\":{},\"sent\":{},\"acked\":{},\"failed\":{},\"failures\":{:?},\"polled\":{},\"polled_by_group\":{},\"anomalies\":{},\"longest_unavailable_ms\":{{{}}},\"events_detail\":[{}],\"notes\":[{}]}}",
        events.len(),
        h.sent.len(),
        h.acked.len(),
        h.failed,
        format!("{:?}", h.failures),
        h.polls[0].len(),
        h.polls[1..].iter().map(Vec::len).sum::<usize>(),
        anomalies.json(),
        availability
            .iter()
            .map(|(k, v)| format!("\"{k}\":{}", v.as_millis()))
            .collect::<Vec<_>>()
            .join(","),
        timeline.join(","),
        notes
            .iter()
            .map(|n| format!("{:?}", n))
            .collect::<Vec<_>>()
            .join(","),
    );
    let out = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/faults");
    let _ = std::fs::create_dir_all(&out);
    let _ = std::fs::write(out.join(format!("result-{seed}.json")), &json);
    eprintln!("{json}");
    assert!(h.acked.len() > 1000, "the workload made progress: {json}");
    assert_eq!(anomalies.total(), 0, "anomalies: {json}");
}
