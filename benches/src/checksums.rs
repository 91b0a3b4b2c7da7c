//! `rafka-bench checksums`: what the Kafka listener's checksum conversion costs per
//! byte. rafka stores batches with CRC-32 (`crc32fast`), Kafka's carry CRC-32C: a
//! produced batch is verified (CRC-32C), copied and given its CRC-32; a fetched one is
//! copied and given its CRC-32C. Measured over batches of a given size in a buffer
//! larger than the caches, beside a plain copy.

use std::time::Instant;

use crate::log_bench::parse_size;

/// Options of `rafka-bench checksums`.
#[derive(clap::Args)]
pub struct ChecksumArgs {
    /// Bytes of batches per pass (larger than the CPU caches).
    #[arg(long, default_value = "256M", value_parser = parse_size)]
    bytes: u64,
    /// Size of one batch.
    #[arg(long, default_value = "16K", value_parser = parse_size)]
    batch: u64,
    /// Passes of each measurement (the best is reported).
    #[arg(long, default_value_t = 5)]
    passes: u32,
}

/// Runs `f` over every batch of `data` `passes` times; the best rate in MB/s.
fn best(data: &mut [u8], batch: usize, passes: u32, mut f: impl FnMut(&mut [u8]) -> u32) -> f64 {
    let mut best = 0f64;
    let mut sink = 0u32;
    for _ in 0..passes {
        let started = Instant::now();
        for b in data.chunks_mut(batch) {
            sink = sink.wrapping_add(f(b));
        }
        best = best.max(data.len() as f64 / started.elapsed().as_secs_f64() / 1e6);
    }
    std::hint::black_box(sink);
    best
}

/// Measures and prints the table.
pub fn run(args: ChecksumArgs) -> anyhow::Result<()> {
    let len = usize::try_from(args.bytes)?;
    let batch = usize::try_from(args.batch)?.max(64);
    let mut data: Vec<u8> = (0..len)
        .map(|i| (i as u32).wrapping_mul(2654435761) as u8)
        .collect();
    let mut copy = vec![0u8; batch];
    let crc32 = best(&mut data, batch, args.passes, |b| crc32fast::hash(&b[21..]));
    let crc32c = best(&mut data, batch, args.passes, |b| crc32c::crc32c(&b[21..]));
    let memcpy = best(&mut data, batch, args.passes, |b| {
        copy.copy_from_slice(b);
        u32::from(copy[0])
    });
    // Produce: verify CRC-32C, copy, write CRC-32. Fetch: copy, write CRC-32C.
    let produce = best(&mut data, batch, args.passes, |b| {
        let ok = crc32c::crc32c(&b[21..]);
        copy.copy_from_slice(b);
        let crc = crc32fast::hash(&copy[21..]);
        copy[17..21].copy_from_slice(&crc.to_be_bytes());
        ok
    });
    let fetch = best(&mut data, batch, args.passes, |b| {
        copy.copy_from_slice(b);
        let crc = crc32c::crc32c(&copy[21..]);
        copy[17..21].copy_from_slice(&crc.to_be_bytes());
        crc
    });
    // Time for one MiB: 2^20 bytes at `mbps` × 10^6 bytes a second, in microseconds.
    let us_per_mib = |mbps: f64| 1_048_576.0 / mbps;
    println!(
        "checksums over {} MiB in {} B batches (best of {}):",
        len >> 20,
        batch,
        args.passes
    );
    for (name, mbps) in [
        ("CRC-32 (crc32fast)", crc32),
        ("CRC-32C (crc32c)", crc32c),
        ("memory copy", memcpy),
        ("produce: CRC-32C check + copy + CRC-32", produce),
        ("fetch: copy + CRC-32C", fetch),
    ] {
        println!(
            "  {name:<40} {mbps:>9.0} MB/s  {:>7.1} µs/MiB",
            us_per_mib(mbps)
        );
    }
    Ok(())
}
