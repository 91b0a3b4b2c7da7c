//! Shared harness for rafka's black-box tests.
//!
//! - [`wait_until`], [`eventually`]: poll a condition with a deadline instead of sleeping.
//! - [`TestBroker`]: a broker in this process on a free port with its own data directory.
//! - [`raft_group`]: a Raft group of in-process nodes over real gRPC.
//! - [`history`]: a fault run's history and the checkers that judge it.
//! - [`damage`]: file damage done to a stopped broker (torn tail, lost index, bit rot).
//! - [`proxy`]: a TCP proxy that loses a broker's answers on demand.
//! - [`cluster`]: brokers with `peers` in this process, stopped, restarted and cut off.
//! - [`ChildTest`]: re-run the current test binary as a child process running one named
//!   test, so a test can SIGKILL a real process in the middle of its work.

pub mod cluster;
pub mod damage;
pub mod delay;
pub mod history;
pub mod kafka;
pub mod netns;
pub mod procs;
pub mod proxy;
pub mod raft_group;

use std::io::{BufRead, BufReader};
use std::process::{Child, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

/// Polls `cond` every few milliseconds until it returns true or `deadline` passes;
/// panics with `what` on timeout.
pub fn wait_until(what: &str, deadline: Duration, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(
            start.elapsed() < deadline,
            "timed out after {deadline:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Async [`wait_until`]: polls `cond` until it yields true or `deadline` passes; panics
/// with `what` on timeout.
pub async fn eventually<F, Fut>(what: &str, deadline: Duration, mut cond: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = Instant::now();
    while !cond().await {
        assert!(
            start.elapsed() < deadline,
            "timed out after {deadline:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// [`eventually`] for a value: polls `attempt` until it yields `Some` or `deadline`
/// passes (then panics with `what` and the last failed attempt's description).
pub async fn eventually_some<T, F, Fut>(what: &str, deadline: Duration, mut attempt: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, String>>,
{
    let start = Instant::now();
    loop {
        match attempt().await {
            Ok(v) => return v,
            Err(last) => assert!(
                start.elapsed() < deadline,
                "timed out after {deadline:?} waiting for {what}: {last}"
            ),
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Sends the brokers' warnings (or what `RUST_LOG` asks for) to the test's captured
/// output, so a failing test prints what its brokers logged; idempotent.
pub fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(
            std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".into()),
        ))
        .with_test_writer()
        .try_init();
}

/// Environment variable that tells a test it runs as a child.
pub const CHILD_ENV: &str = "RAFKA_TEST_CHILD";

/// The argument a child test was started with, if this process is one.
pub fn child_arg() -> Option<String> {
    std::env::var(CHILD_ENV).ok()
}

/// A child process running one test of the current binary, with its stdout piped.
pub struct ChildTest {
    child: Child,
    lines: std::io::Lines<BufReader<ChildStdout>>,
}

impl ChildTest {
    /// Starts `test_name` (a full path such as `crash::child`) in a child process with
    /// [`CHILD_ENV`] set to `arg`.
    pub fn spawn(test_name: &str, arg: &str) -> Self {
        Self::spawn_in(None, test_name, arg)
    }

    /// As [`ChildTest::spawn`], inside network namespace `netns` when given.
    pub fn spawn_in(netns: Option<&str>, test_name: &str, arg: &str) -> Self {
        let exe = std::env::current_exe().expect("test binary path");
        let mut command = match netns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns]).arg(exe);
                c
            }
            None => Command::new(exe),
        };
        let mut child = command
            .args([test_name, "--exact", "--nocapture", "--test-threads=1"])
            .env(CHILD_ENV, arg)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn child test");
        let stdout = child.stdout.take().expect("piped stdout");
        Self {
            child,
            lines: BufReader::new(stdout).lines(),
        }
    }

    /// The next line the child printed, or `None` once its stdout is closed.
    pub fn next_line(&mut self) -> Option<String> {
        self.lines.next().map(|l| l.expect("child stdout"))
    }

    /// Sends `signal` (`libc::SIGSTOP`, `SIGCONT`, ...) to the child.
    pub fn signal(&self, signal: i32) {
        // SAFETY: kill(2) with the pid of a child this process has not reaped yet.
        unsafe {
            libc::kill(self.child.id() as i32, signal);
        }
    }

    /// Kills the child with SIGKILL and waits for it; returns the lines it had printed
    /// but that were not read yet.
    pub fn kill(mut self) -> Vec<String> {
        self.child.kill().expect("kill child");
        self.child.wait().expect("reap child");
        self.lines.map_while(Result::ok).collect()
    }
}

/// A broker running in this process on a free loopback port, with its own data directory.
pub struct TestBroker {
    /// `host:port` clients connect to.
    pub addr: String,
    /// `host:port` of its HTTP port (`/metrics`, `/health/...`).
    pub http: String,
    /// `host:port` of its Kafka-protocol listener.
    pub kafka: String,
    dir: std::sync::Arc<tempfile::TempDir>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<Result<(), rafka_broker::error::BrokerError>>>,
}

impl TestBroker {
    /// Starts a broker on a new temporary data directory.
    pub async fn start() -> Self {
        Self::start_with(
            std::sync::Arc::new(tempfile::tempdir().expect("temp dir")),
            |_| {},
        )
        .await
    }

    /// Starts a broker on `dir`, with `tweak` applied to its config.
    pub async fn start_with(
        dir: std::sync::Arc<tempfile::TempDir>,
        tweak: impl FnOnce(&mut rafka_broker::config::BrokerConfig),
    ) -> Self {
        init_tracing();
        let mut config = rafka_broker::config::BrokerConfig {
            data_dir: dir.path().to_path_buf(),
            ..Default::default()
        };
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind a free port");
        config.listen = listener.local_addr().expect("local addr");
        let kafka = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind a free port");
        let kafka_addr = kafka.local_addr().expect("local addr").to_string();
        config.kafka_listen = Some(kafka_addr.clone());
        tweak(&mut config);
        let addr = config.listen.to_string();
        let server = rafka_broker::server::Server::open(config)
            .await
            .expect("open broker");
        let http = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind a free port");
        let http_addr = http.local_addr().expect("local addr").to_string();
        server.serve_http(http);
        server.serve_kafka(kafka);
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(server.serve(listener, async {
            let _ = stopped.await;
        }));
        Self {
            addr,
            http: http_addr,
            kafka: kafka_addr,
            dir,
            stop: Some(stop),
            task: Some(task),
        }
    }

    /// The data directory (shared, so a restart can reuse it).
    pub fn dir(&self) -> std::sync::Arc<tempfile::TempDir> {
        self.dir.clone()
    }

    /// Shuts the broker down gracefully and waits until its logs are synced and closed.
    pub async fn stop(mut self) {
        self.shutdown().await;
    }

    async fn shutdown(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            task.await
                .expect("broker task")
                .expect("broker shut down cleanly");
        }
    }
}

impl Drop for TestBroker {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}
