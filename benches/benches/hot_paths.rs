//! Criterion micro-benchmarks of the functions every record passes through.
//!
//! `cargo bench -p rafka-bench --bench hot_paths`
//!
//! - producer: building a batch of 100-byte records and sealing it (CRC included);
//! - broker edge: full validation of a produced batch (CRC and record framing), and of a
//!   compressed one (decompressed first) for each codec;
//! - stored batches: the checksum-only check of a batch read back or replicated;
//! - partition log: appending a validated batch (one copy into the page cache, flush=os);
//! - fetch: reading 1 MiB of batches as a slice of the mapping;
//! - consumer: walking a batch's records (the decoder's inner loop, zero-copy).

use std::hint::black_box;

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use rafka_broker::log::{FlushPolicy, LogConfig, PartitionLog};
use rafka_proto::batch::compression::compress;
use rafka_proto::batch::{
    verify_stored, BatchBuilder, Compression, Record, RecordBatch, Records, HEADER_LEN,
};

const RECORDS: usize = 1_000;
const VALUE: [u8; 100] = [b'x'; 100];

fn batch() -> Bytes {
    let mut b = BatchBuilder::with_capacity(RECORDS * 120);
    for i in 0..RECORDS {
        b.append(&Record {
            timestamp: 1_700_000_000_000 + i as i64,
            key: None,
            value: Some(&VALUE),
            headers: &[],
        });
    }
    b.seal()
}

fn produce_side(c: &mut Criterion) {
    let mut g = c.benchmark_group("batch");
    g.throughput(Throughput::Elements(RECORDS as u64));
    g.bench_function("build+seal 1000x100B", |b| b.iter(|| black_box(batch())));
    let sealed = batch();
    g.bench_function("validate (edge) 1000x100B", |b| {
        b.iter(|| RecordBatch::parse(black_box(&sealed)).expect("valid"))
    });
    g.bench_function("verify_stored (crc) 1000x100B", |b| {
        b.iter(|| verify_stored(black_box(&sealed)).expect("valid"))
    });
    g.bench_function("decode records 1000x100B", |b| {
        b.iter(|| {
            let section = &sealed[HEADER_LEN..];
            let mut n = 0usize;
            for r in Records::new(section, RECORDS) {
                n += r.expect("valid").value.map_or(0, <[u8]>::len);
            }
            black_box(n)
        })
    });
    // A compressed batch is decompressed and its records checked on append.
    for codec in [
        Compression::Gzip,
        Compression::Snappy,
        Compression::Lz4,
        Compression::Zstd,
    ] {
        let packed = compressed_batch(codec);
        g.bench_function(format!("validate {} (edge) 1000x100B", codec.name()), |b| {
            b.iter(|| RecordBatch::parse(black_box(&packed)).expect("valid"))
        });
    }
    g.finish();
}

/// [`batch`]'s records, compressed with `codec`, values varied enough not to vanish.
fn compressed_batch(codec: Compression) -> Bytes {
    let mut b = BatchBuilder::with_capacity(RECORDS * 120);
    for i in 0..RECORDS {
        let value = format!("{i:08}-{}", "payload ".repeat(11));
        b.append(&Record {
            timestamp: 1_700_000_000_000 + i as i64,
            key: None,
            value: Some(value.as_bytes()),
            headers: &[],
        });
    }
    b.seal_compressed(codec, |s| compress(codec, s).ok())
}

fn log_side(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("temp dir");
    let config = LogConfig {
        flush: FlushPolicy::Os,
        segment_bytes: 256 << 20,
        ..LogConfig::default()
    };
    let sealed = batch();
    let mut g = c.benchmark_group("log");
    const APPENDS: usize = 64;
    g.throughput(Throughput::Bytes((sealed.len() * APPENDS) as u64));
    g.bench_function("append 64 validated batches (flush=os)", |b| {
        b.iter_batched_ref(
            || {
                let d = tempfile::tempdir_in(dir.path()).expect("temp dir");
                let log = PartitionLog::open(d.path(), config.clone()).expect("open");
                (d, log)
            },
            |(_, log)| {
                for _ in 0..APPENDS {
                    let v = RecordBatch::parse(&sealed).expect("valid");
                    black_box(log.append_batch(&v).expect("append"));
                }
            },
            BatchSize::PerIteration,
        )
    });
    let mut log = PartitionLog::open(dir.path().join("read"), config.clone()).expect("open");
    while log.log_end_offset() < 200_000 {
        log.append(&sealed).expect("append");
    }
    let reader = log.reader();
    g.throughput(Throughput::Bytes(1 << 20));
    g.bench_function("read 1 MiB (warm)", |b| {
        let mut offset = 0;
        b.iter(|| {
            let bytes = reader.read(offset, 1 << 20).expect("read");
            offset = (offset + 8_000) % 150_000;
            black_box(bytes)
        })
    });
    g.finish();
}

criterion_group!(benches, produce_side, log_side);
criterion_main!(benches);
