//! What the tests of the `rafka` binary share: a broker process and the CLI run against it.
// Each test binary uses its own part of this module.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, Command, Output, Stdio};

/// The `rafka` binary under test.
pub const RAFKA: &str = env!("CARGO_BIN_EXE_rafka");

/// A `rafka start` (or `dev-cluster`) process.
pub struct Broker {
    /// The process.
    pub child: Child,
    /// Its client address (a bootstrap list for a dev cluster).
    pub addr: String,
    /// Its HTTP port's address, when started with one.
    pub http: Option<String>,
    /// Its Kafka listener's address (`rafka start`).
    pub kafka: Option<String>,
}

impl Broker {
    /// `rafka dev-cluster`: its address is the bootstrap list it prints.
    pub fn dev_cluster(nodes: u32, dir: &std::path::Path) -> Self {
        Self::dev_cluster_with(nodes, dir, &[]).0
    }

    /// `rafka dev-cluster` with `extra` arguments; with `--tls`, also the client
    /// arguments it prints (`--tls-ca FILE ...`).
    pub fn dev_cluster_with(
        nodes: u32,
        dir: &std::path::Path,
        extra: &[&str],
    ) -> (Self, Vec<String>) {
        let mut child = Command::new(RAFKA)
            .args(["dev-cluster", "--nodes", &nodes.to_string(), "--data-dir"])
            .arg(dir)
            .args(extra)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn rafka dev-cluster");
        let mut out = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        let addr = loop {
            line.clear();
            assert!(out.read_line(&mut line).unwrap() > 0, "dev-cluster exited");
            if let Some(list) = line.trim().strip_prefix("bootstrap: ") {
                break list.to_string();
            }
        };
        let mut tls = Vec::new();
        if extra.contains(&"--tls") {
            line.clear();
            assert!(out.read_line(&mut line).unwrap() > 0, "dev-cluster exited");
            let args = line
                .trim()
                .strip_prefix("tls: ")
                .unwrap_or_else(|| panic!("no TLS line: {line}"));
            // `--tls-ca A (client certificate: --tls-cert B --tls-key C)`
            tls = args
                .replace(['(', ')'], " ")
                .replace("client certificate:", " ")
                .split_whitespace()
                .map(String::from)
                .collect();
        }
        let broker = Self {
            child,
            addr,
            http: None,
            kafka: None,
        };
        (broker, tls)
    }

    /// `rafka start` on a free port.
    pub fn start(dir: &std::path::Path) -> Self {
        Self::spawn(dir, &[], "warn", Stdio::inherit())
    }

    /// `rafka start` on a free port with `extra` arguments, `RUST_LOG=log` and its
    /// stderr to `stderr`; returns once it printed its address.
    pub fn spawn(dir: &std::path::Path, extra: &[&str], log: &str, stderr: Stdio) -> Self {
        let mut child = Command::new(RAFKA)
            .args(["start", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(dir)
            .args(extra)
            .env("RUST_LOG", log)
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .expect("spawn rafka start");
        let mut out = BufReader::new(child.stdout.take().unwrap());
        let mut http = None;
        let mut kafka = None;
        let addr = loop {
            let mut line = String::new();
            assert!(
                out.read_line(&mut line).expect("read stdout") > 0,
                "rafka start exited before printing its address"
            );
            let line = line.trim();
            if let Some(a) = line.strip_prefix("rafka http listening on ") {
                http = Some(a.to_string());
            } else if let Some(a) = line.strip_prefix("rafka kafka listening on ") {
                kafka = Some(a.to_string());
            } else if let Some(a) = line.strip_prefix("rafka broker listening on ") {
                break a.to_string();
            } else {
                panic!("unexpected line `{line}`");
            }
        };
        Self {
            child,
            addr,
            http,
            kafka,
        }
    }

    /// Runs `rafka --bootstrap ADDR args...` with `stdin`; its output.
    pub fn rafka(&self, args: &[&str], stdin: Option<&str>) -> Output {
        let mut child = Command::new(RAFKA)
            .arg("--bootstrap")
            .arg(&self.addr)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn rafka");
        let mut input = child.stdin.take().unwrap();
        if let Some(text) = stdin {
            input.write_all(text.as_bytes()).unwrap();
        }
        drop(input);
        child.wait_with_output().unwrap()
    }

    /// SIGTERM, then the exit status.
    pub fn stop(&mut self) -> std::process::ExitStatus {
        // SAFETY: sending a signal to our own child process.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        self.child.wait().unwrap()
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One HTTP/1.1 request to `addr` (`host:port`); the status code, the response's
/// headers (lowercased names) and its body.
pub fn http(
    addr: &str,
    method: &str,
    path: &str,
    body: Option<(&str, &[u8])>,
) -> (u16, String, String) {
    use std::io::Read;
    let mut s = std::net::TcpStream::connect(addr).expect("connect to the HTTP port");
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n");
    if let Some((content_type, b)) = body {
        if !content_type.is_empty() {
            req.push_str(&format!("Content-Type: {content_type}\r\n"));
        }
        req.push_str(&format!("Content-Length: {}\r\n", b.len()));
    }
    req.push_str("\r\n");
    let mut bytes = req.into_bytes();
    if let Some((_, b)) = body {
        bytes.extend_from_slice(b);
    }
    // The server may answer (413, 414) and close before reading everything.
    let _ = s.write_all(&bytes);
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    let out = String::from_utf8_lossy(&out).into_owned();
    let (head, body) = out.split_once("\r\n\r\n").unwrap_or((&out, ""));
    let status = head.get(9..12).and_then(|c| c.parse().ok()).unwrap_or(0);
    (status, head.to_lowercase(), body.to_string())
}
