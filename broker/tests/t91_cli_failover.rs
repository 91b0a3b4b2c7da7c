//! `rafka consume` against a cluster that just lost a partition leader: three `rafka
//! start` processes, kill -9 of the broker leading partition 0, and at once a
//! consumer of every partition from the two that are left. It reads what it can, waits
//! out the leaderless partition and then reads it too; it does not give up.

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rafka_client::{Admin, Producer, ProducerConfig, ProducerRecord};

const RAFKA: &str = env!("CARGO_BIN_EXE_rafka");
const DEADLINE: Duration = Duration::from_secs(60);
const PER_PARTITION: u32 = 100;

/// Addresses with free ports (bound, then released for the brokers to take).
fn free_addresses(n: usize) -> Vec<String> {
    let listeners: Vec<_> = (0..n)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0").unwrap())
        .collect();
    listeners
        .iter()
        .map(|l| l.local_addr().unwrap().to_string())
        .collect()
}

struct Cluster {
    addrs: Vec<String>,
    children: Vec<Option<Child>>,
    _dir: tempfile::TempDir,
}

impl Cluster {
    fn start(n: usize) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let addrs = free_addresses(n);
        let peers: Vec<String> = addrs
            .iter()
            .enumerate()
            .map(|(i, a)| format!("{}={a}", i + 1))
            .collect();
        let peers = peers.join(",");
        let children = addrs
            .iter()
            .enumerate()
            .map(|(i, addr)| {
                let mut child = Command::new(RAFKA)
                    .args(["start", "--node-id", &(i + 1).to_string(), "--listen", addr])
                    .args(["--peers", &peers, "--data-dir"])
                    .arg(dir.path().join(format!("node-{}", i + 1)))
                    .env("RUST_LOG", "warn,openraft=off")
                    .stdout(Stdio::piped())
                    .stderr(Stdio::inherit())
                    .spawn()
                    .expect("spawn rafka start");
                // Its last line says it serves (a Kafka listener's line comes first).
                let mut out = BufReader::new(child.stdout.take().unwrap());
                loop {
                    let mut line = String::new();
                    let n = out.read_line(&mut line).expect("read the listening line");
                    assert!(n > 0, "rafka start exited before printing its address");
                    if line.starts_with("rafka broker listening on") {
                        break;
                    }
                    assert!(line.contains("listening on"), "unexpected `{line}`");
                }
                Some(child)
            })
            .collect();
        Self {
            addrs,
            children,
            _dir: dir,
        }
    }

    fn kill(&mut self, id: u32) {
        let mut child = self.children[id as usize - 1].take().expect("running");
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for c in self.children.iter_mut().flatten() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// The leader of `topic`/`partition` as broker `id` (a replica) reports it, once known.
async fn leader_seen_by(admin: &Admin, id: u32, topic: &str, partition: u32) -> u32 {
    let start = Instant::now();
    loop {
        if let Ok(m) = admin.metadata_from(id, &[topic]).await {
            let leader = m.topics[0].partitions[partition as usize].leader;
            if leader != 0 {
                return leader;
            }
        }
        assert!(
            start.elapsed() < DEADLINE,
            "no leader for {topic}-{partition}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consume_reads_around_a_killed_leader_and_then_its_partition() {
    let mut cluster = Cluster::start(3);
    let bootstrap = cluster.addrs.join(",");
    let admin = Admin::connect(&bootstrap).await.unwrap();
    admin
        .create_topic("orders", 3, 3, Default::default())
        .await
        .unwrap();
    let producer = Producer::connect(&bootstrap, ProducerConfig::default())
        .await
        .unwrap();
    let mut acks = Vec::new();
    for p in 0..3 {
        for i in 0..PER_PARTITION {
            let record = ProducerRecord::new("orders", format!("p{p}-{i}")).partition(p);
            acks.push(producer.send(record).await.unwrap());
        }
    }
    producer.flush().await;
    for a in acks {
        a.await.unwrap();
    }
    let leader = leader_seen_by(&admin, 1, "orders", 0).await;
    cluster.kill(leader);
    let others: Vec<&str> = (1..=3u32)
        .filter(|&id| id != leader)
        .map(|id| cluster.addrs[id as usize - 1].as_str())
        .collect();

    let total = 3 * PER_PARTITION;
    let mut consume = Command::new(RAFKA)
        .args(["--bootstrap", &others.join(",")])
        .args(["consume", "orders", "--from-beginning"])
        .args(["--max-messages", &total.to_string()])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn rafka consume");
    let start = Instant::now();
    let status = loop {
        if let Some(status) = consume.try_wait().unwrap() {
            break status;
        }
        if start.elapsed() > DEADLINE {
            let _ = consume.kill();
            panic!("rafka consume did not finish within {DEADLINE:?}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let out = consume.wait_with_output().unwrap();
    assert!(
        status.success(),
        "rafka consume failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<String> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect();
    let distinct: BTreeSet<&String> = lines.iter().collect();
    assert_eq!(lines.len(), total as usize);
    assert_eq!(distinct.len(), total as usize, "every record once");
    for p in 0..3 {
        assert!(
            (0..PER_PARTITION).all(|i| distinct.contains(&format!("p{p}-{i}"))),
            "partition {p} read whole"
        );
    }
}
