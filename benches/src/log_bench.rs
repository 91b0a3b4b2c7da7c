//! Storage engine benchmark: appends of 100-byte records in 16 KiB and 1 MiB batches with
//! `flush=os` and `flush=always`, and sequential reads of a warm segment, each beside a
//! plain sequential `File::write_all` of the same bytes (with `fdatasync` per batch for
//! `always`) measured in the same run.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::Context;
use bytes::Bytes;
use rafka_broker::log::{FlushPolicy, LogConfig, PartitionLog};
use rafka_proto::batch::{BatchBuilder, Record, RecordBatch};

use crate::report::{histogram, print_table, timed, Row};

/// Options of `rafka-bench log`.
#[derive(clap::Args)]
pub struct Args {
    /// Bytes to append per `flush=os` run (accepts K, M, G suffixes).
    #[arg(long, default_value = "1G", value_parser = parse_size)]
    bytes: u64,
    /// Bytes to append per `flush=always` run.
    #[arg(long, default_value = "256M", value_parser = parse_size)]
    always_bytes: u64,
    /// Record value size in bytes.
    #[arg(long, default_value_t = 100)]
    record_size: usize,
    /// Directory for the data (a temporary directory inside it is used and removed).
    #[arg(long, default_value = ".")]
    dir: PathBuf,
    /// Runs of each measurement; medians are reported.
    #[arg(long, default_value_t = 3)]
    repeat: usize,
    /// Print one JSON object per result instead of a table.
    #[arg(long)]
    json: bool,
}

pub fn parse_size(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let (num, mult) = match s.chars().last() {
        Some('K' | 'k') => (&s[..s.len() - 1], 1 << 10),
        Some('M' | 'm') => (&s[..s.len() - 1], 1 << 20),
        Some('G' | 'g') => (&s[..s.len() - 1], 1 << 30),
        _ => (s, 1),
    };
    num.parse::<u64>()
        .map(|n| n * mult)
        .map_err(|e| format!("bad size `{s}`: {e}"))
}

/// A batch of 100-byte (or `record_size`) records of about `batch_bytes`; returns it and
/// its record count.
fn make_batch(batch_bytes: usize, record_size: usize) -> (Bytes, u64) {
    let value: Vec<u8> = (0..record_size).map(|i| (i * 31 % 251) as u8).collect();
    let mut b = BatchBuilder::with_capacity(batch_bytes + 1024);
    let r = Record {
        timestamp: 1_700_000_000_000,
        key: None,
        value: Some(&value),
        headers: &[],
    };
    while b.len() + b.record_size(&r) <= batch_bytes {
        b.append(&r);
    }
    let n = b.record_count() as u64;
    (b.seal(), n)
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let tmp = tempfile::tempdir_in(&args.dir).context("temp dir")?;
    let mut rows = Vec::new();
    for (label, flush, total) in [
        ("os", FlushPolicy::Os, args.bytes),
        ("always", FlushPolicy::Always, args.always_bytes),
    ] {
        for batch_bytes in [16 << 10, 1 << 20] {
            let (batch, records) = make_batch(batch_bytes, args.record_size);
            let count = (total / batch.len() as u64).max(1);
            let sync = flush == FlushPolicy::Always;
            let dir = tmp.path().join(format!("log-{label}-{batch_bytes}"));
            // Plain and rafka alternate, each starting with no dirty pages; the medians
            // of the repeats are compared, as this machine's speed drifts between runs.
            let (mut plains, mut appends, mut reads) = (Vec::new(), Vec::new(), Vec::new());
            let mut prevalidated = Vec::new();
            for _ in 0..args.repeat {
                settle();
                plains.push(plain_write(tmp.path(), &batch, count, sync)?);
                settle();
                let (row, log) = append(&dir, flush, &batch, records, count, false)?;
                appends.push(row);
                if flush == FlushPolicy::Os {
                    drop(log);
                    std::fs::remove_dir_all(&dir)?;
                    settle();
                    let (row, log) = append(&dir, flush, &batch, records, count, true)?;
                    prevalidated.push(row);
                    if batch_bytes == 1 << 20 {
                        reads.push(read(&log)?);
                    }
                    drop(log);
                    std::fs::remove_dir_all(&dir)?;
                    continue;
                }
                drop(log);
                std::fs::remove_dir_all(&dir)?;
            }
            let plain = median(plains);
            let base = plain.mb_per_sec();
            let name = format!(
                "plain {} write_all{}",
                kib(batch.len()),
                if sync { "+fdatasync" } else { "" }
            );
            rows.push((Row { name, ..plain }, None));
            rows.push((median(appends), Some(base)));
            if !prevalidated.is_empty() {
                rows.push((median(prevalidated), Some(base)));
            }
            if !reads.is_empty() {
                rows.push((median(reads), None));
            }
            if flush == FlushPolicy::Os {
                rows.push((validate(&batch, records, count), None));
            }
        }
    }
    if args.json {
        for (r, b) in &rows {
            println!("{}", r.json(*b));
        }
    } else {
        println!(
            "median of {} runs each; ratio = rafka MB/s / plain MB/s of the same bytes",
            args.repeat
        );
        print_table(&rows);
    }
    Ok(())
}

/// Writes back dirty pages so that a measurement does not pay for the previous one's.
fn settle() {
    // SAFETY: sync(2) takes no arguments and cannot fail.
    unsafe { libc::sync() };
}

/// The run with the median throughput.
fn median(mut rows: Vec<Row>) -> Row {
    rows.sort_by(|a, b| a.mb_per_sec().total_cmp(&b.mb_per_sec()));
    rows.swap_remove(rows.len() / 2)
}

fn kib(n: usize) -> String {
    if n >= 1 << 20 {
        format!("{}MiB", n.div_ceil(1 << 20))
    } else {
        format!("{}KiB", n.div_ceil(1 << 10))
    }
}

/// Plain sequential writes of the same bytes: the machine's own reference.
fn plain_write(dir: &Path, batch: &[u8], count: u64, sync: bool) -> anyhow::Result<Row> {
    let path = dir.join("plain.bin");
    let mut f = File::create(&path)?;
    let mut h = histogram();
    let start = Instant::now();
    for _ in 0..count {
        timed(&mut h, || -> std::io::Result<()> {
            f.write_all(batch)?;
            if sync {
                f.sync_data()?;
            }
            Ok(())
        })?;
    }
    let elapsed = start.elapsed();
    drop(f);
    std::fs::remove_file(&path)?;
    Ok(Row {
        name: String::new(),
        bytes: count * batch.len() as u64,
        records: 0,
        elapsed,
        latency: Some(h),
    })
}

fn append(
    dir: &Path,
    flush: FlushPolicy,
    batch: &[u8],
    records: u64,
    count: u64,
    prevalidated: bool,
) -> anyhow::Result<(Row, PartitionLog)> {
    let config = LogConfig {
        flush,
        ..LogConfig::default()
    };
    let mut log = PartitionLog::open(dir, config)?;
    let mut h = histogram();
    let start = Instant::now();
    let parsed = RecordBatch::parse(batch)?;
    for _ in 0..count {
        if prevalidated {
            timed(&mut h, || log.append_batch(&parsed))?;
        } else {
            timed(&mut h, || log.append(batch))?;
        }
    }
    let elapsed = start.elapsed();
    let row = Row {
        name: format!(
            "rafka append{} {} flush={flush}",
            if prevalidated { " (validated)" } else { "" },
            kib(batch.len())
        ),
        bytes: count * batch.len() as u64,
        records: count * records,
        elapsed,
        latency: Some(h),
    };
    Ok((row, log))
}

/// Batch validation alone (length, magic, CRC, record framing), as append does it.
fn validate(batch: &[u8], records: u64, count: u64) -> Row {
    let mut h = histogram();
    let start = Instant::now();
    for _ in 0..count {
        timed(&mut h, || RecordBatch::parse(batch).map(|_| ())).expect("benchmark batch is valid");
    }
    Row {
        name: format!("validate {} batch", kib(batch.len())),
        bytes: count * batch.len() as u64,
        records: count * records,
        elapsed: start.elapsed(),
        latency: Some(h),
    }
}

/// Sequential reads of the whole (warm) log in 1 MiB fetches; every batch's checksum is
/// verified by the read, so every byte is touched.
fn read(log: &PartitionLog) -> anyhow::Result<Row> {
    let reader = log.reader();
    let mut h = histogram();
    let (mut offset, mut bytes, mut records) = (reader.log_start_offset(), 0u64, 0u64);
    let end = reader.log_end_offset();
    let start = Instant::now();
    while offset < end {
        let chunk = timed(&mut h, || reader.read(offset, 1 << 20))?;
        let mut rest = &chunk[..];
        while !rest.is_empty() {
            let h = rafka_proto::batch::BatchHeader::parse(rest)?;
            offset = h.next_offset() as u64;
            records += h.record_count as u64;
            rest = &rest[h.total_len()..];
        }
        bytes += chunk.len() as u64;
    }
    Ok(Row {
        name: "rafka read 1MiB fetches (warm)".into(),
        bytes,
        records,
        elapsed: start.elapsed(),
        latency: Some(h),
    })
}
