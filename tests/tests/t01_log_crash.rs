//! Crash test: a child process appends with `flush=always` and is killed with SIGKILL at
//! arbitrary points; after every crash, reopening keeps every acknowledged batch intact at
//! its offset and leaves a clean tail that accepts appends.

use std::path::Path;

use rafka_broker::log::{FlushPolicy, LogConfig, PartitionLog};
use rafka_proto::batch::{verify_stored, BatchBuilder, Record, RecordBatch};
use rafka_tests::{child_arg, ChildTest};

fn config() -> LogConfig {
    LogConfig {
        segment_bytes: 64 * 1024,
        index_interval_bytes: 1024,
        flush: FlushPolicy::Always,
        ..LogConfig::default()
    }
}

/// Batch number `n`: a few records whose values encode `n`.
fn batch(n: u64) -> bytes::Bytes {
    let mut b = BatchBuilder::new();
    let value = n.to_be_bytes().repeat(1 + (n % 40) as usize);
    for i in 0..(1 + n % 5) {
        b.append(&Record {
            timestamp: n as i64,
            key: Some(&i.to_be_bytes()),
            value: Some(&value),
            headers: &[],
        });
    }
    b.seal()
}

/// Batch number of a stored batch (from its first record's value).
fn batch_number(stored: &[u8]) -> u64 {
    let b = RecordBatch::parse(stored).expect("stored batch validates");
    let r = b.records().next().unwrap().unwrap();
    u64::from_be_bytes(r.value.unwrap()[..8].try_into().unwrap())
}

/// The child: append numbered batches forever, printing `n base next` after each returns.
#[test]
fn child_appender() {
    let Some(arg) = child_arg() else { return };
    let (dir, first) = arg.split_once(':').unwrap();
    let mut log = PartitionLog::open(Path::new(dir), config()).unwrap();
    let mut n: u64 = first.parse().unwrap();
    loop {
        let a = log.append(&batch(n)).unwrap();
        println!("{n} {} {}", a.base_offset, a.next_offset);
        n += 1;
    }
}

#[test]
fn acknowledged_batches_survive_sigkill() {
    if child_arg().is_some() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut acked: Vec<(u64, u64, u64)> = Vec::new();
    let mut next_n = 0;
    for (round, kill_after) in [150usize, 400, 90, 700].into_iter().enumerate() {
        let arg = format!("{}:{next_n}", dir.path().display());
        let mut child = ChildTest::spawn("child_appender", &arg);
        let mut lines = Vec::new();
        while lines.len() < kill_after {
            match child.next_line() {
                Some(l) => lines.extend(parse_ack(&l)),
                None => panic!("child exited early in round {round}"),
            }
        }
        lines.extend(child.kill().iter().filter_map(|l| parse_ack(l)));
        acked.extend(lines);

        let log = PartitionLog::open(dir.path(), config()).unwrap();
        let last = *acked.last().unwrap();
        assert!(
            log.log_end_offset() >= last.2,
            "round {round}: acked up to {} but the log ends at {}",
            last.2,
            log.log_end_offset()
        );
        // Every acknowledged batch is there, intact, at its offset.
        for &(n, base, next) in &acked {
            let bytes = log.read(base, 1).unwrap();
            let (h, len) = verify_stored(&bytes).unwrap();
            assert_eq!((h.base_offset as u64, h.next_offset() as u64), (base, next));
            assert_eq!(
                batch_number(&bytes[..len]),
                n,
                "round {round}, offset {base}"
            );
        }
        // The whole log reads back as one clean, contiguous sequence of numbered batches
        // (a batch written but not acknowledged before the kill may be there too).
        let mut offset = log.log_start_offset();
        let mut expect_n = 0;
        while offset < log.log_end_offset() {
            let bytes = log.read(offset, 64 * 1024).unwrap();
            let mut rest = &bytes[..];
            while !rest.is_empty() {
                let (h, len) = verify_stored(rest).unwrap();
                assert_eq!(h.base_offset as u64, offset);
                assert_eq!(batch_number(&rest[..len]), expect_n);
                expect_n += 1;
                offset = h.next_offset() as u64;
                rest = &rest[len..];
            }
        }
        next_n = expect_n;
    }
    assert!(acked.len() >= 1340);
}

/// Parses an acknowledgement line `n base next`; other output (the test harness's) is not one.
fn parse_ack(line: &str) -> Option<(u64, u64, u64)> {
    let mut it = line.split(' ').map(|x| x.parse::<u64>().ok());
    let ack = (it.next()??, it.next()??, it.next()??);
    it.next().is_none().then_some(ack)
}
