//! Brokers in network namespaces joined by one bridge, and links cut the way a network
//! partition cuts them: nftables drops every packet between two brokers, with no reset
//! and no error, so their connections go silent. Needs root, `ip` and `nft`.

use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

/// A bridge in this namespace (tests reach every broker through it) and one namespace
/// per broker, `1..=n`, each with an address on the bridge's subnet.
pub struct Net {
    tag: String,
    subnet: String,
    n: u32,
}

static NETS: AtomicU32 = AtomicU32::new(0);

/// Runs `ip`/`nft` with `args`; panics with its output when it fails.
fn run(program: &str, args: &[&str]) {
    let out = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("running {program}: {e}"));
    assert!(
        out.status.success(),
        "{program} {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

impl Net {
    /// Creates the bridge and `n` namespaces.
    pub fn new(n: u32) -> Self {
        let k = NETS.fetch_add(1, Ordering::Relaxed);
        let pid = std::process::id();
        let tag = format!("rk{}x{k}", pid % 100_000);
        // A subnet of its own per test process and net (10.77-10.126.x).
        let seq = pid.wrapping_mul(31).wrapping_add(k);
        let subnet = format!("10.{}.{}", 77 + (seq / 250) % 50, seq % 250);
        let net = Self { tag, subnet, n };
        let br = net.bridge();
        run("ip", &["link", "add", &br, "type", "bridge"]);
        run(
            "ip",
            &["addr", "add", &format!("{}.1/24", net.subnet), "dev", &br],
        );
        run("ip", &["link", "set", &br, "up"]);
        for id in 1..=n {
            let ns = net.netns(id);
            let host = format!("{}v{id}", net.tag);
            run("ip", &["netns", "add", &ns]);
            run(
                "ip",
                &[
                    "link", "add", &host, "type", "veth", "peer", "name", "eth0", "netns", &ns,
                ],
            );
            run("ip", &["link", "set", &host, "master", &br, "up"]);
            let addr = format!("{}/24", net.ip(id));
            run("ip", &["-n", &ns, "addr", "add", &addr, "dev", "eth0"]);
            run("ip", &["-n", &ns, "link", "set", "eth0", "up"]);
            run("ip", &["-n", &ns, "link", "set", "lo", "up"]);
            let rules = "table inet cut {\n\
                chain in { type filter hook input priority 0; }\n\
                chain out { type filter hook output priority 0; }\n}\n";
            let file = std::env::temp_dir().join(format!("{ns}.nft"));
            std::fs::write(&file, rules).expect("nft rules file");
            run(
                "ip",
                &["netns", "exec", &ns, "nft", "-f", &file.to_string_lossy()],
            );
            let _ = std::fs::remove_file(file);
        }
        net
    }

    fn bridge(&self) -> String {
        format!("{}b", self.tag)
    }

    /// Broker `id`'s namespace.
    pub fn netns(&self, id: u32) -> String {
        format!("{}n{id}", self.tag)
    }

    /// Broker `id`'s address.
    pub fn ip(&self, id: u32) -> String {
        format!("{}.{}", self.subnet, 10 + id)
    }

    /// Drops every packet between brokers `a` and `b`, both ways, on both sides.
    pub fn cut(&self, a: u32, b: u32) {
        self.add_rules(a, b, &["drop"]);
    }

    /// Drops `percent` of the packets between brokers `a` and `b` at random, each way on
    /// each side (so about twice that end to end): a lossy link, the kind `netem` would
    /// make (nftables' `numgen random`; this kernel has no `sch_netem`).
    pub fn lossy(&self, a: u32, b: u32, percent: u32) {
        let p = percent.to_string();
        self.add_rules(a, b, &["numgen", "random", "mod", "100", "<", &p, "drop"]);
    }

    /// Adds `verdict` (an nftables statement) for the packets between `a` and `b`, both
    /// ways, in both namespaces.
    fn add_rules(&self, a: u32, b: u32, verdict: &[&str]) {
        for (me, other) in [(a, b), (b, a)] {
            let ns = self.netns(me);
            let ip = self.ip(other);
            for (chain, dir) in [("in", "saddr"), ("out", "daddr")] {
                let mut args = vec![
                    "netns", "exec", &ns, "nft", "add", "rule", "inet", "cut", chain, "ip", dir,
                    &ip,
                ];
                args.extend_from_slice(verdict);
                run("ip", &args);
            }
        }
    }

    /// Lifts every cut (and loss) of brokers `a` and `b`.
    pub fn heal(&self, a: u32, b: u32) {
        for id in [a, b] {
            let ns = self.netns(id);
            for chain in ["in", "out"] {
                run(
                    "ip",
                    &[
                        "netns", "exec", &ns, "nft", "flush", "chain", "inet", "cut", chain,
                    ],
                );
            }
        }
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        for id in 1..=self.n {
            let _ = Command::new("ip")
                .args(["netns", "del", &self.netns(id)])
                .output();
        }
        let _ = Command::new("ip")
            .args(["link", "del", &self.bridge()])
            .output();
    }
}

/// Brokers 1..=n as processes, each in its own namespace of a [`Net`], started with each
/// other as peers (`procs::peers_broker_child`); killed when dropped, before the
/// namespaces go.
pub struct NetBrokers {
    children: Vec<Option<crate::ChildTest>>,
    /// Each broker's data directory.
    pub dirs: Vec<tempfile::TempDir>,
    /// Each broker's address (`ip:9092`).
    pub addrs: Vec<String>,
    /// The namespaces and links.
    pub net: Net,
}

impl NetBrokers {
    /// Starts `n` brokers and waits until each serves.
    pub fn start(n: u32) -> Self {
        let net = Net::new(n);
        let addrs: Vec<String> = (1..=n).map(|id| format!("{}:9092", net.ip(id))).collect();
        let peers = crate::cluster::peer_list(&addrs);
        let dirs: Vec<tempfile::TempDir> = (0..n).map(|_| tempfile::tempdir().unwrap()).collect();
        let children = (1..=n)
            .map(|id| {
                let i = id as usize - 1;
                let arg = format!("{id}|{}|{}|{peers}", addrs[i], dirs[i].path().display());
                let mut child =
                    crate::ChildTest::spawn_in(Some(&net.netns(id)), "broker_child", &arg);
                while !child
                    .next_line()
                    .expect("broker ready")
                    .contains(crate::procs::READY)
                {}
                Some(child)
            })
            .collect();
        Self {
            children,
            dirs,
            addrs,
            net,
        }
    }

    /// The comma-separated addresses of every broker.
    pub fn bootstrap(&self) -> String {
        self.addrs.join(",")
    }

    /// Sends `signal` to broker `id`'s process.
    pub fn signal(&self, id: u32, signal: i32) {
        if let Some(child) = &self.children[id as usize - 1] {
            child.signal(signal);
        }
    }

    /// Cuts broker `id` off from every other broker (clients still reach it).
    pub fn isolate(&self, id: u32) {
        for other in (1..=self.net.n).filter(|o| *o != id) {
            self.net.cut(id, other);
        }
    }

    /// Lifts every cut of broker `id`.
    pub fn heal(&self, id: u32) {
        for other in (1..=self.net.n).filter(|o| *o != id) {
            self.net.heal(id, other);
        }
    }
}

impl Drop for NetBrokers {
    fn drop(&mut self) {
        for child in self.children.iter_mut().filter_map(Option::take) {
            // A stopped process is killed all the same (SIGKILL needs no SIGCONT).
            child.kill();
        }
    }
}
