//! `rafka-bench limits`: what this machine can do at best, measured in the same run as
//! rafka's figures so they can be read as fractions of it: sequential file writes with
//! an fdatasync per chunk and without, memory copy, loopback TCP, and the latency of one
//! small write made durable (what a flush=always append waits on at least).

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::Context;
use serde::{Deserialize, Serialize};

use crate::log_bench::parse_size;

/// Options of `rafka-bench limits`.
#[derive(clap::Args)]
pub struct LimitsArgs {
    /// Directory for the file tests (a temporary file inside it is used and removed).
    #[arg(long, default_value = ".")]
    dir: PathBuf,
    /// Bytes written per buffered-write and memcpy run.
    #[arg(long, default_value = "1G", value_parser = parse_size)]
    bytes: u64,
    /// Bytes written with an fdatasync after each chunk.
    #[arg(long, default_value = "256M", value_parser = parse_size)]
    sync_bytes: u64,
    /// Chunk size of writes and TCP sends.
    #[arg(long, default_value = "1M", value_parser = parse_size)]
    chunk: u64,
    /// Print one JSON object instead of a table.
    #[arg(long)]
    json: bool,
}

/// The machine's measured limits, in MB/s (JSON: what `rafka-bench limits --json` prints).
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct Limits {
    /// Sequential writes, fdatasync after each chunk.
    #[serde(rename = "fsync_write_mb_per_sec")]
    pub fsync_write: f64,
    /// Sequential writes into the page cache.
    #[serde(rename = "buffered_write_mb_per_sec")]
    pub buffered_write: f64,
    /// Memory copy.
    #[serde(rename = "memcpy_mb_per_sec")]
    pub memcpy: f64,
    /// One TCP connection over loopback.
    #[serde(rename = "loopback_tcp_mb_per_sec")]
    pub loopback_tcp: f64,
    /// A 16 KiB write followed by fdatasync, one after another: latency percentiles in
    /// milliseconds (0 in results saved before they were measured).
    #[serde(default)]
    pub fsync_16k_p50_ms: f64,
    /// Its p99.
    #[serde(default)]
    pub fsync_16k_p99_ms: f64,
    /// Its p99.9.
    #[serde(default)]
    pub fsync_16k_p999_ms: f64,
}

impl Limits {
    /// Reads the JSON object that `rafka-bench limits --json` prints.
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))
    }
}

fn mb_per_sec(bytes: u64, started: Instant) -> f64 {
    bytes as f64 / started.elapsed().as_secs_f64() / 1e6
}

fn file_write(dir: &std::path::Path, bytes: u64, chunk: usize, sync: bool) -> anyhow::Result<f64> {
    let tmp = tempfile::NamedTempFile::new_in(dir)?;
    let mut f = tmp.as_file();
    let buf = vec![0x5au8; chunk];
    let started = Instant::now();
    let mut written = 0;
    while written < bytes {
        f.write_all(&buf)?;
        if sync {
            f.sync_data()?;
        }
        written += chunk as u64;
    }
    Ok(mb_per_sec(written, started))
}

/// Small durable writes: [`SYNC_LATENCY_WRITES`] 16 KiB writes, each followed by
/// fdatasync (at most [`SYNC_LATENCY_TIME`]); returns p50, p99 and p99.9 in ms.
fn sync_latency(dir: &Path) -> anyhow::Result<[f64; 3]> {
    let tmp = tempfile::NamedTempFile::new_in(dir)?;
    let mut f = tmp.as_file();
    let buf = vec![0x5au8; 16 << 10];
    let mut h = crate::report::histogram();
    let started = Instant::now();
    for _ in 0..SYNC_LATENCY_WRITES {
        let t = Instant::now();
        f.write_all(&buf)?;
        f.sync_data()?;
        h.saturating_record(t.elapsed().as_nanos() as u64);
        if started.elapsed() > SYNC_LATENCY_TIME {
            break;
        }
    }
    let ms = |q: f64| h.value_at_quantile(q) as f64 / 1e6;
    Ok([ms(0.5), ms(0.99), ms(0.999)])
}

/// Writes the fdatasync latency is measured over (enough for a p99.9).
const SYNC_LATENCY_WRITES: usize = 5_000;
/// The most time the fdatasync latency measurement takes.
const SYNC_LATENCY_TIME: std::time::Duration = std::time::Duration::from_secs(5);

fn memcpy(bytes: u64) -> f64 {
    let src = vec![0x5au8; 64 << 20];
    let mut dst = vec![0u8; 64 << 20];
    let started = Instant::now();
    let mut copied = 0;
    while copied < bytes {
        dst.copy_from_slice(&src);
        std::hint::black_box(&mut dst);
        copied += src.len() as u64;
    }
    mb_per_sec(copied, started)
}

fn loopback(bytes: u64, chunk: usize) -> anyhow::Result<f64> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?;
    let reader = std::thread::spawn(move || -> std::io::Result<u64> {
        let (mut s, _) = listener.accept()?;
        let mut buf = vec![0u8; 1 << 20];
        let mut total = 0;
        loop {
            let n = s.read(&mut buf)?;
            if n == 0 {
                return Ok(total);
            }
            total += n as u64;
        }
    });
    let mut s = std::net::TcpStream::connect(addr)?;
    s.set_nodelay(true)?;
    let buf = vec![0x5au8; chunk];
    let started = Instant::now();
    let mut sent = 0;
    while sent < bytes {
        s.write_all(&buf)?;
        sent += chunk as u64;
    }
    drop(s);
    let received = reader.join().expect("reader thread")?;
    anyhow::ensure!(received == sent, "sent {sent} bytes, received {received}");
    Ok(mb_per_sec(received, started))
}

/// Measures the limits: `bytes` buffered (4x copied, 2x sent over loopback), `sync_bytes`
/// with an fdatasync per `chunk`, files in `dir`.
pub fn measure(dir: &Path, bytes: u64, sync_bytes: u64, chunk: u64) -> anyhow::Result<Limits> {
    let chunk = chunk as usize;
    let [p50, p99, p999] = sync_latency(dir)?;
    Ok(Limits {
        fsync_write: file_write(dir, sync_bytes, chunk, true)?,
        buffered_write: file_write(dir, bytes, chunk, false)?,
        memcpy: memcpy(bytes * 4),
        loopback_tcp: loopback(bytes * 2, chunk)?,
        fsync_16k_p50_ms: p50,
        fsync_16k_p99_ms: p99,
        fsync_16k_p999_ms: p999,
    })
}

/// `rafka-bench limits`.
pub fn run(args: LimitsArgs) -> anyhow::Result<()> {
    let l = measure(&args.dir, args.bytes, args.sync_bytes, args.chunk)?;
    if args.json {
        let round = |x: f64| (x * 10.0).round() / 10.0;
        let rounded = Limits {
            fsync_write: round(l.fsync_write),
            buffered_write: round(l.buffered_write),
            memcpy: round(l.memcpy),
            loopback_tcp: round(l.loopback_tcp),
            fsync_16k_p50_ms: (l.fsync_16k_p50_ms * 1000.0).round() / 1000.0,
            fsync_16k_p99_ms: (l.fsync_16k_p99_ms * 1000.0).round() / 1000.0,
            fsync_16k_p999_ms: (l.fsync_16k_p999_ms * 1000.0).round() / 1000.0,
        };
        println!("{}", serde_json::to_string(&rounded)?);
    } else {
        println!("machine limits ({} chunks):", args.chunk);
        println!(
            "  sequential write + fdatasync  {:>10.1} MB/s",
            l.fsync_write
        );
        println!(
            "  sequential write (buffered)   {:>10.1} MB/s",
            l.buffered_write
        );
        println!("  memory copy                   {:>10.1} MB/s", l.memcpy);
        println!(
            "  loopback TCP (1 connection)   {:>10.1} MB/s",
            l.loopback_tcp
        );
        println!(
            "  16 KiB write + fdatasync      p50 {:.3} ms, p99 {:.3} ms, p99.9 {:.3} ms",
            l.fsync_16k_p50_ms, l.fsync_16k_p99_ms, l.fsync_16k_p999_ms
        );
    }
    Ok(())
}
