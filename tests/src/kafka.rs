//! Real Kafka clients against rafka's Kafka listener: `kcat` (Debian's package, librdkafka
//! inside) and Python's `confluent-kafka` (librdkafka) and `kafka-python`, from a virtual
//! environment under `target/` that is made on first use.

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

/// The Python packages the tests drive, pinned.
pub const PYTHON_PACKAGES: [&str; 2] = ["confluent-kafka==2.16.1", "kafka-python==3.0.12"];

/// Longest one client command may run.
pub const CLIENT_WAIT: Duration = Duration::from_secs(120);

fn target_dir() -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(d) => PathBuf::from(d),
        None => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target"),
    }
}

/// Runs `cmd` with `stdin`, killing it after `limit`; panics naming it if it cannot run.
pub fn run(cmd: &mut Command, stdin: &[u8], limit: Duration) -> Output {
    let shown = format!("{cmd:?}");
    // Cargo runs tests with its build's native library paths in LD_LIBRARY_PATH, among
    // them the librdkafka rafka-bench builds: a client would load that one, not its own.
    let mut child = cmd
        .env_remove("LD_LIBRARY_PATH")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {shown}: {e} (bash .ci/run installs it)"));
    let mut input = child.stdin.take().expect("stdin");
    let data = stdin.to_vec();
    let writer = std::thread::spawn(move || {
        let _ = input.write_all(&data);
    });
    let pid = child.id();
    let (tx, rx) = std::sync::mpsc::channel::<()>();
    let killer = std::thread::spawn(move || {
        if rx.recv_timeout(limit).is_err() {
            // SAFETY: kill(2) on the child's pid; a reaped pid gets ESRCH at worst.
            unsafe { libc::kill(pid as i32, libc::SIGKILL) };
        }
    });
    let out = child.wait_with_output().expect("wait for the client");
    let _ = tx.send(());
    let _ = killer.join();
    let _ = writer.join();
    out
}

/// `kcat` with `args`, `stdin` fed to it; panics with its stderr unless it succeeds.
pub fn kcat(args: &[&str], stdin: &[u8]) -> Vec<u8> {
    let out = run(Command::new("kcat").args(args), stdin, CLIENT_WAIT);
    assert!(
        out.status.success(),
        "kcat {args:?} failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// The virtual environment's Python with [`PYTHON_PACKAGES`], made if missing (one
/// process makes it; others racing it use the one that lands first).
pub fn python() -> PathBuf {
    let venv = target_dir().join("kafka-venv");
    let python = venv.join("bin/python");
    if ready(&python) {
        return python;
    }
    let building = target_dir().join(format!("kafka-venv.{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&building);
    let status = Command::new("python3")
        .env_remove("LD_LIBRARY_PATH")
        .args(["-m", "venv"])
        .arg(&building)
        .status()
        .expect("python3 -m venv (Debian: python3-venv)");
    assert!(status.success(), "python3 -m venv failed");
    let out = run(
        Command::new(building.join("bin/pip"))
            .args(["install", "--quiet", "--disable-pip-version-check"])
            .args(PYTHON_PACKAGES),
        b"",
        Duration::from_secs(600),
    );
    assert!(
        out.status.success(),
        "pip install {PYTHON_PACKAGES:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    if std::fs::rename(&building, &venv).is_err() {
        let _ = std::fs::remove_dir_all(&building);
    }
    assert!(ready(&python), "no usable {}", python.display());
    python
}

fn ready(python: &std::path::Path) -> bool {
    python.exists()
        && Command::new(python)
            .env_remove("LD_LIBRARY_PATH")
            .args(["-c", "import confluent_kafka, kafka"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
}

/// Runs a Python `script` with `args` (as `sys.argv[1:]`); panics with its output unless
/// it exits 0. Returns its standard output.
pub fn python_script(script: &str, args: &[&str]) -> String {
    let out = run(
        Command::new(python()).arg("-c").arg(script).args(args),
        b"",
        CLIENT_WAIT,
    );
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "python script failed ({}):\n--- stdout\n{stdout}\n--- stderr\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// A raw Kafka-protocol connection: requests encoded by the `kafka-protocol` crate, one
/// at a time, for tests of exact answers and of malformed frames.
pub struct KafkaConn {
    stream: tokio::net::TcpStream,
    correlation: i32,
}

impl KafkaConn {
    /// Connects to a Kafka listener.
    pub async fn connect(addr: &str) -> Self {
        let stream = tokio::net::TcpStream::connect(addr)
            .await
            .unwrap_or_else(|e| panic!("connect {addr}: {e}"));
        Self {
            stream,
            correlation: 0,
        }
    }

    /// Sends `request` as `version`; returns the decoded answer.
    pub async fn call<R>(&mut self, version: i16, request: &R) -> R::Response
    where
        R: kafka_protocol::protocol::Request,
    {
        let correlation = self.send(version, request).await;
        let (answered, response) = self.receive::<R>(version).await;
        assert_eq!(answered, correlation);
        response
    }

    /// Writes `request` as `version` without waiting for its answer (a client with
    /// requests in flight); returns its correlation id.
    pub async fn send<R>(&mut self, version: i16, request: &R) -> i32
    where
        R: kafka_protocol::protocol::Request,
    {
        use bytes::BufMut;
        use kafka_protocol::protocol::Encodable;
        use tokio::io::AsyncWriteExt;
        self.correlation += 1;
        let header = kafka_protocol::messages::RequestHeader::default()
            .with_request_api_key(R::KEY)
            .with_request_api_version(version)
            .with_correlation_id(self.correlation)
            .with_client_id(Some(kafka_protocol::protocol::StrBytes::from_static_str(
                "rafka-tests",
            )));
        let mut body = bytes::BytesMut::new();
        header
            .encode(&mut body, R::header_version(version))
            .expect("header");
        request.encode(&mut body, version).expect("request");
        let mut frame = bytes::BytesMut::new();
        frame.put_i32(body.len() as i32);
        frame.extend_from_slice(&body);
        self.stream
            .write_all(&frame)
            .await
            .unwrap_or_else(|e| panic!("sending API {} v{version}: {e}", R::KEY));
        self.correlation
    }

    /// Reads the next answer, to a request of type `R` sent as `version`: its correlation
    /// id and body.
    pub async fn receive<R>(&mut self, version: i16) -> (i32, R::Response)
    where
        R: kafka_protocol::protocol::Request,
    {
        use kafka_protocol::protocol::{Decodable, HeaderVersion};
        use tokio::io::AsyncReadExt;
        let read = async {
            let size = self.stream.read_i32().await.ok()?;
            let mut buf = vec![0u8; usize::try_from(size).ok()?];
            self.stream.read_exact(&mut buf).await.ok()?;
            Some(bytes::Bytes::from(buf))
        };
        let mut answer = tokio::time::timeout(CLIENT_WAIT, read)
            .await
            .ok()
            .flatten()
            .unwrap_or_else(|| panic!("no answer to API {} v{version}", R::KEY));
        let header = kafka_protocol::messages::ResponseHeader::decode(
            &mut answer,
            R::Response::header_version(version),
        )
        .expect("response header");
        let body = R::Response::decode(&mut answer, version).expect("response body");
        (header.correlation_id, body)
    }

    /// Writes `bytes` and reads one answer frame's body; `None` if the broker closed the
    /// connection instead.
    pub async fn send_raw(&mut self, bytes: &[u8]) -> Option<bytes::Bytes> {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        if self.stream.write_all(bytes).await.is_err() {
            return None;
        }
        let read = async {
            let size = self.stream.read_i32().await.ok()?;
            let mut buf = vec![0u8; usize::try_from(size).ok()?];
            self.stream.read_exact(&mut buf).await.ok()?;
            Some(bytes::Bytes::from(buf))
        };
        tokio::time::timeout(CLIENT_WAIT, read).await.ok().flatten()
    }

    /// Whether the broker closed this connection (reads end of stream within `within`).
    pub async fn closed_by_broker(&mut self, within: Duration) -> bool {
        use tokio::io::AsyncReadExt;
        let mut byte = [0u8; 1];
        loop {
            match tokio::time::timeout(within, self.stream.read(&mut byte)).await {
                Ok(Ok(0)) | Ok(Err(_)) => return true,
                Ok(Ok(_)) => continue, // an answer in flight; keep reading
                Err(_) => return false,
            }
        }
    }
}

/// One Kafka record batch (CRC-32C) of `values` with `key`, as a producer sends it;
/// `producer` is `(id, epoch, base sequence)` for an idempotent one.
pub fn kafka_batch(key: &[u8], values: &[&[u8]], producer: Option<(i64, i16, i32)>) -> Vec<u8> {
    let mut b = rafka_proto::batch::BatchBuilder::new();
    if let Some((id, epoch, seq)) = producer {
        b.set_producer(id, epoch, seq);
    }
    for v in values {
        b.append(&rafka_proto::batch::Record {
            timestamp: 1_700_000_000_000,
            key: Some(key),
            value: Some(v),
            headers: &[],
        });
    }
    sealed_for_kafka(b)
}

/// The batch `b` holds, sealed and given the CRC-32C Kafka batches carry.
pub fn sealed_for_kafka(b: rafka_proto::batch::BatchBuilder) -> Vec<u8> {
    let mut batch = b.seal().to_vec();
    let crc = crc32c::crc32c(&batch[21..]);
    batch[17..21].copy_from_slice(&crc.to_be_bytes());
    batch
}

impl KafkaConn {
    /// Writes `frame` and then an ApiVersions v0 request (correlation id -7), and reads
    /// answers until that one's: `true` if it came (the broker served on after `frame`,
    /// answered or not, as for a produce with acks 0), `false` if the broker closed the
    /// connection. Panics if neither happens within [`CLIENT_WAIT`].
    pub async fn survives(&mut self, frame: &[u8]) -> bool {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut ping = 10i32.to_be_bytes().to_vec();
        ping.extend_from_slice(&18i16.to_be_bytes());
        ping.extend_from_slice(&0i16.to_be_bytes());
        ping.extend_from_slice(&(-7i32).to_be_bytes());
        ping.extend_from_slice(&(-1i16).to_be_bytes());
        let mut out = frame.to_vec();
        out.extend_from_slice(&ping);
        if self.stream.write_all(&out).await.is_err() {
            return false;
        }
        let read = async {
            loop {
                let Ok(size) = self.stream.read_i32().await else {
                    return false;
                };
                let mut buf = vec![0u8; usize::try_from(size).unwrap_or(0)];
                if self.stream.read_exact(&mut buf).await.is_err() {
                    return false;
                }
                if buf.len() >= 4 && buf[..4] == (-7i32).to_be_bytes() {
                    return true;
                }
            }
        };
        tokio::time::timeout(CLIENT_WAIT, read)
            .await
            .expect("the broker neither served on nor closed the connection")
    }
}
