//! Brokers as real child processes (the test binary re-run as its `broker_child` test),
//! for tests that kill, restart, grow and shrink clusters.
//!
//! A test binary using [`Brokers`] defines
//! `#[test] fn broker_child() { rafka_tests::procs::broker_child() }`.

use crate::{child_arg, ChildTest};

/// What a child prints once it serves.
pub const READY: &str = "broker ready";

/// The body of a `broker_child` test: runs a broker from its argument
/// `id|address|data dir|join` (join empty: alone, or as the broker remembers) until it
/// is killed or decommissioned; prints [`READY`], or `refused: ...` if it cannot start.
/// Does nothing outside a child.
pub fn broker_child() {
    run_child(|config, join| config.join = join.to_string());
}

/// The body of a `broker_child` test for a cluster of fixed brokers: as
/// [`broker_child`], from the argument `id|address|data dir|peers`.
pub fn peers_broker_child() {
    run_child(|config, peers| config.peers = peers.to_string());
}

/// Runs a broker from the child's argument `id|address|data dir|last`, where `set`
/// puts `last` into its config.
fn run_child(set: impl FnOnce(&mut rafka_broker::config::BrokerConfig, &str)) {
    let Some(arg) = child_arg() else { return };
    // To stderr (inherited), never to the stdout pipe the parent stops reading.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(
            std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".into()),
        ))
        .with_writer(std::io::stderr)
        .try_init();
    let parts: Vec<&str> = arg.split('|').collect();
    // An optional fifth field: the address of a Kafka listener to serve too.
    let (id, addr, dir, last, kafka) = match parts[..] {
        [id, addr, dir, last] => (id, addr, dir, last, None),
        [id, addr, dir, last, kafka] => (id, addr, dir, last, Some(kafka)),
        _ => panic!("bad child argument {arg}"),
    };
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        let listener = tokio::net::TcpListener::bind(addr).await.expect("bind");
        let mut config = rafka_broker::config::BrokerConfig {
            node_id: id.parse().expect("id"),
            listen: listener.local_addr().expect("addr"),
            data_dir: dir.into(),
            ..Default::default()
        };
        set(&mut config, last);
        let kafka = match kafka {
            Some(a) => {
                let l = tokio::net::TcpListener::bind(a).await.expect("bind kafka");
                config.kafka_listen = Some(l.local_addr().expect("addr").to_string());
                Some(l)
            }
            None => None,
        };
        match rafka_broker::server::Server::open(config).await {
            Ok(server) => {
                if let Some(k) = kafka {
                    server.serve_kafka(k);
                }
                println!("{READY}");
                server
                    .serve(listener, std::future::pending())
                    .await
                    .expect("serve");
                println!("broker stopped");
            }
            Err(e) => println!("refused: {e}"),
        }
    });
}

/// Brokers 1..=n: their addresses, data directories and running processes.
pub struct Brokers {
    addrs: Vec<String>,
    dirs: Vec<tempfile::TempDir>,
    children: Vec<Option<ChildTest>>,
}

impl Brokers {
    /// Free addresses and empty data directories for `n` brokers; none runs yet.
    pub fn new(n: usize) -> Self {
        Self {
            addrs: crate::cluster::free_addresses(n),
            dirs: (0..n).map(|_| tempfile::tempdir().unwrap()).collect(),
            children: (0..n).map(|_| None).collect(),
        }
    }

    /// Starts broker `id` (joining through `join`, if given); returns its first line
    /// ([`READY`] or the refusal).
    pub fn launch(&mut self, id: u32, join: &str) -> String {
        let i = id as usize - 1;
        let arg = format!(
            "{id}|{}|{}|{join}",
            self.addrs[i],
            self.dirs[i].path().display()
        );
        let mut child = ChildTest::spawn("broker_child", &arg);
        let first = loop {
            match child.next_line() {
                Some(l) if l.contains(READY) || l.contains("refused: ") => break l,
                Some(_) => continue,
                None => panic!("broker {id} exited before it was ready"),
            }
        };
        if first.contains(READY) {
            self.children[i] = Some(child);
        }
        first
    }

    /// Kills broker `id` with SIGKILL.
    pub fn kill(&mut self, id: u32) {
        self.children[id as usize - 1]
            .take()
            .expect("running")
            .kill();
    }

    /// Waits until broker `id`'s process ends on its own; returns the lines it printed.
    pub async fn exited(&mut self, id: u32) -> Vec<String> {
        let mut child = self.children[id as usize - 1].take().expect("running");
        tokio::task::spawn_blocking(move || std::iter::from_fn(|| child.next_line()).collect())
            .await
            .expect("reading the child")
    }

    /// Broker `id`'s address.
    pub fn addr(&self, id: u32) -> &str {
        &self.addrs[id as usize - 1]
    }

    /// Broker `id`'s data directory.
    pub fn dir(&self, id: u32) -> &std::path::Path {
        self.dirs[id as usize - 1].path()
    }
}

impl Drop for Brokers {
    fn drop(&mut self) {
        for c in self.children.iter_mut() {
            if let Some(c) = c.take() {
                c.kill();
            }
        }
    }
}

/// Brokers 1..=n of a cluster of fixed peers as child processes (the test binary
/// defines `#[test] fn broker_child() { rafka_tests::procs::peers_broker_child() }`),
/// each with a Kafka listener beside its gRPC one.
pub struct PeerBrokers {
    addrs: Vec<String>,
    kafka: Vec<String>,
    dirs: Vec<tempfile::TempDir>,
    peers: String,
    children: Vec<Option<ChildTest>>,
}

impl PeerBrokers {
    /// Starts `n` brokers on free ports; returns once each is ready.
    pub fn start(n: usize) -> Self {
        let mut addrs = crate::cluster::free_addresses(2 * n);
        let kafka = addrs.split_off(n);
        let peers = crate::cluster::peer_list(&addrs);
        let mut b = Self {
            addrs,
            kafka,
            dirs: (0..n).map(|_| tempfile::tempdir().unwrap()).collect(),
            peers,
            children: (0..n).map(|_| None).collect(),
        };
        for id in 1..=n as u32 {
            b.launch(id);
        }
        b
    }

    /// Starts broker `id` (again); returns once it is ready.
    pub fn launch(&mut self, id: u32) {
        let i = id as usize - 1;
        let arg = format!(
            "{id}|{}|{}|{}|{}",
            self.addrs[i],
            self.dirs[i].path().display(),
            self.peers,
            self.kafka[i]
        );
        let mut child = ChildTest::spawn("broker_child", &arg);
        loop {
            match child.next_line() {
                Some(l) if l.contains(READY) => break,
                Some(l) if l.contains("refused: ") => panic!("broker {id}: {l}"),
                Some(_) => continue,
                None => panic!("broker {id} exited before it was ready"),
            }
        }
        self.children[i] = Some(child);
    }

    /// Kills broker `id` with SIGKILL.
    pub fn kill(&mut self, id: u32) {
        self.children[id as usize - 1]
            .take()
            .expect("running")
            .kill();
    }

    /// Whether broker `id` runs.
    pub fn running(&self, id: u32) -> bool {
        self.children[id as usize - 1].is_some()
    }

    /// Every broker's gRPC address, comma-separated.
    pub fn bootstrap(&self) -> String {
        self.addrs.join(",")
    }

    /// Every broker's Kafka address, comma-separated.
    pub fn kafka_bootstrap(&self) -> String {
        self.kafka.join(",")
    }
}

impl Drop for PeerBrokers {
    fn drop(&mut self) {
        for c in self.children.iter_mut() {
            if let Some(c) = c.take() {
                c.kill();
            }
        }
    }
}
