//! Tests of the partition log against its contract and a simple model.

use std::fs::{self, OpenOptions};
use std::io::{Seek, SeekFrom, Write};
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use proptest::prelude::*;
use rafka_proto::batch::{verify_stored, BatchBuilder, BatchHeader, Record, RecordBatch};

use super::*;

/// A batch of `n` records with values of `size` bytes, timestamps from `ts`, tagged `tag`.
fn batch(n: usize, size: usize, ts: i64, tag: u8) -> Bytes {
    let value = vec![tag; size];
    let mut b = BatchBuilder::new();
    for i in 0..n {
        b.append(&Record {
            timestamp: ts + i as i64,
            key: Some(&[tag]),
            value: Some(&value),
            headers: &[],
        });
    }
    b.seal()
}

fn small(segment_bytes: u64) -> LogConfig {
    LogConfig {
        segment_bytes,
        index_interval_bytes: 256,
        flush: FlushPolicy::Os,
        ..LogConfig::default()
    }
}

/// Splits a read result into its batches' headers, checking each one's checksum.
fn headers(bytes: &[u8]) -> Vec<BatchHeader> {
    let mut out = Vec::new();
    let mut rest = bytes;
    while !rest.is_empty() {
        let (h, n) = verify_stored(rest).expect("read returns intact batches");
        out.push(h);
        rest = &rest[n..];
    }
    out
}

/// Every batch in the log from `offset`, read with small reads.
fn read_all(log: &LogReader, mut offset: u64) -> Vec<BatchHeader> {
    let mut out = Vec::new();
    loop {
        let bytes = log.read(offset, 1000).unwrap();
        if bytes.is_empty() {
            return out;
        }
        let hs = headers(&bytes);
        offset = hs.last().unwrap().next_offset() as u64;
        out.extend(hs);
    }
}

fn segment_files(dir: &Path, ext: &str) -> Vec<std::path::PathBuf> {
    let mut v: Vec<_> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == ext))
        .collect();
    v.sort();
    v
}

/// Bytes of disk the file at `path` has blocks for.
fn disk_bytes(path: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    fs::metadata(path).unwrap().blocks() * 512
}

#[test]
fn a_new_segment_takes_little_disk_and_grows_as_it_fills() {
    let dir = tempfile::tempdir().unwrap();
    let config = LogConfig {
        flush: FlushPolicy::Os,
        ..LogConfig::default()
    };
    assert_eq!(config.segment_bytes, 1 << 30);
    let mut log = PartitionLog::open(dir.path(), config).unwrap();
    let file = dir.path().join(format!("{:020}.log", 0));
    let idle: u64 = fs::read_dir(dir.path())
        .unwrap()
        .map(|e| disk_bytes(&e.unwrap().path()))
        .sum();
    assert!(
        idle <= 128 << 10,
        "an empty partition holds {idle} bytes of disk"
    );

    // 8 MiB of batches: the file grows past them, by steps that double.
    let b = batch(4, 1000, 1, 7); // one index entry per batch: 2,000-odd entries
    let (mut next, mut written) = (0, 0);
    while written < 8 << 20 {
        next = log.append(&b).unwrap().next_offset;
        written += b.len() as u64;
    }
    let grown = disk_bytes(&file);
    assert!(
        grown >= written,
        "{grown} bytes of disk for {written} of data"
    );
    assert!(grown <= 32 << 20, "{grown} bytes of disk for 8 MiB of data");
    let read = read_all(&log.reader(), 0);
    assert_eq!(read.last().unwrap().next_offset() as u64, next);
    // The indexes grew with it: a lookup in the middle lands on its batch.
    let mid = next / 2;
    let h = &headers(&log.read(mid, 1).unwrap())[0];
    assert!(h.base_offset as u64 <= mid && mid < h.next_offset() as u64);
    // Reopened, the log keeps every batch and goes on where it ended.
    drop(log);
    let mut log = PartitionLog::open(dir.path(), LogConfig::default()).unwrap();
    assert_eq!(read_all(&log.reader(), 0).len(), read.len());
    assert_eq!(log.append(&b).unwrap().base_offset, next);
}

#[test]
fn append_assigns_offsets_and_reads_whole_batches() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = PartitionLog::open(dir.path(), small(1 << 20)).unwrap();
    let a = log.append(&batch(3, 10, 100, 1)).unwrap();
    assert_eq!((a.base_offset, a.last_offset()), (0, Some(2)));
    let b = log.append(&batch(2, 10, 200, 2)).unwrap();
    assert_eq!((b.base_offset, b.last_offset()), (3, Some(4)));
    assert_eq!(log.log_end_offset(), 5);

    // Reading from inside a batch returns the whole batch; the stored base offset is ours.
    let got = headers(&log.read(1, 1 << 20).unwrap());
    assert_eq!(got.len(), 2);
    assert_eq!((got[0].base_offset, got[1].base_offset), (0, 3));
    // max_bytes smaller than a batch still yields one batch.
    assert_eq!(headers(&log.read(3, 1).unwrap()).len(), 1);
    assert!(log.read(5, 100).unwrap().is_empty());
    assert!(matches!(
        log.read(6, 100),
        Err(LogError::OffsetOutOfRange {
            offset: 6,
            log_start: 0,
            log_end: 5
        })
    ));
    // Records come back as written.
    let bytes = log.read(3, 1 << 20).unwrap();
    let rb = RecordBatch::parse(&bytes).unwrap();
    let r: Vec<_> = rb.records().map(Result::unwrap).collect();
    assert_eq!(r[1].value.unwrap(), &[2u8; 10][..]);
}

#[test]
fn rolls_segments_and_reopens() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = PartitionLog::open(dir.path(), small(4096)).unwrap();
    for i in 0..100u8 {
        log.append(&batch(2, 100, 1000 + i as i64, i)).unwrap();
    }
    let reader = log.reader();
    assert!(reader.segment_count() > 5);
    let before = read_all(&reader, 0);
    assert_eq!(before.len(), 100);
    drop(log);
    // Sealed segments are trimmed to their contents.
    let logs = segment_files(dir.path(), "log");
    for p in &logs[..logs.len() - 1] {
        assert!(fs::metadata(p).unwrap().len() < 4096);
    }
    let log = PartitionLog::open(dir.path(), small(4096)).unwrap();
    assert_eq!(log.log_end_offset(), 200);
    assert_eq!(read_all(&log.reader(), 0), before);
    // Offsets in the middle of segments resolve through the index.
    for off in [0u64, 57, 99, 150, 199] {
        let h = &headers(&log.read(off, 1).unwrap())[0];
        assert!(h.base_offset as u64 <= off && off <= h.last_offset() as u64);
    }
}

#[test]
fn sealed_segments_are_mapped_when_read_and_unmapped_beyond_the_limit() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = PartitionLog::open(dir.path(), small(4096)).unwrap();
    for i in 0..200u8 {
        log.append(&batch(2, 100, 1000 + i as i64, i)).unwrap();
    }
    let before = read_all(&log.reader(), 0);
    drop(log);
    let log = PartitionLog::open(dir.path(), small(4096)).unwrap();
    let reader = log.reader();
    let mapped = || {
        let segments = reader.shared.read();
        let sealed = segments.len() - 1;
        let mapped = segments.values().filter(|s| s.is_mapped()).count() - 1;
        (sealed, mapped)
    };
    let (sealed, mapped_at_open) = mapped();
    assert!(sealed > 10, "{sealed} sealed segments");
    assert_eq!(mapped_at_open, 0, "opening maps no sealed segment");

    // Other tests share the process-wide limit: a low one only costs them re-mapping.
    super::maps::set_max_mapped(4);
    assert_eq!(read_all(&reader, 0), before, "reads see every batch");
    let (_, mapped_after) = mapped();
    assert!(
        (1..=4).contains(&mapped_after),
        "{mapped_after} of {sealed} sealed segments mapped after reading them all"
    );
    // Unmapped segments read again, by offset and by time.
    for off in [0u64, 57, 99, 150, 199, 333] {
        let h = &headers(&log.read(off, 1).unwrap())[0];
        assert!(h.base_offset as u64 <= off && off <= h.last_offset() as u64);
    }
    // Batch i holds offsets 2i and 2i+1 with timestamps 1000+i and 1001+i.
    assert_eq!(log.offset_for_timestamp(1000 + 5).unwrap(), Some(9));
    super::maps::set_max_mapped(super::maps::MAX_MAPPED_SEALED);
}

#[test]
fn offset_for_timestamp_finds_the_first_record_at_or_after() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = PartitionLog::open(dir.path(), small(2048)).unwrap();
    // Batch i holds records with timestamps 1000+10i .. 1000+10i+4, offsets 5i .. 5i+4.
    for i in 0..60i64 {
        log.append(&batch(5, 40, 1000 + 10 * i, i as u8)).unwrap();
    }
    assert_eq!(log.offset_for_timestamp(0).unwrap(), Some(0));
    assert_eq!(log.offset_for_timestamp(1000).unwrap(), Some(0));
    assert_eq!(log.offset_for_timestamp(1003).unwrap(), Some(3));
    assert_eq!(log.offset_for_timestamp(1005).unwrap(), Some(5));
    assert_eq!(log.offset_for_timestamp(1252).unwrap(), Some(127));
    assert_eq!(log.offset_for_timestamp(1594).unwrap(), Some(299));
    assert_eq!(log.offset_for_timestamp(1595).unwrap(), None);
}

#[test]
fn invalid_batches_append_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = PartitionLog::open(dir.path(), small(1 << 16)).unwrap();
    log.append(&batch(1, 10, 1, 1)).unwrap();
    let good = batch(2, 10, 1, 2).to_vec();
    let mut bad_crc = good.clone();
    *bad_crc.last_mut().unwrap() ^= 1;
    let mut bad_magic = good.clone();
    bad_magic[16] = 0;
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (bad_crc, "crc mismatch"),
        (bad_magic, "bad magic"),
        (good[..good.len() - 3].to_vec(), "bad batch length"),
        (good[..30].to_vec(), "too short"),
    ];
    for (bytes, what) in cases {
        let err = log.append(&bytes).unwrap_err();
        assert!(matches!(err, LogError::InvalidBatch(_)), "{err}");
        assert!(err.to_string().contains(what), "{err} should say {what}");
        let err = log.append_all(&[good.clone(), bytes]).unwrap_err();
        assert!(matches!(err, LogError::InvalidBatch(_)), "{err}");
    }
    assert_eq!(log.log_end_offset(), 1);
    assert_eq!(read_all(&log.reader(), 0).len(), 1);
    let too_big = batch(1, 70_000, 1, 3);
    assert!(matches!(
        log.append(&too_big),
        Err(LogError::BatchTooLarge { .. })
    ));
    assert_eq!(log.log_end_offset(), 1);
}

#[test]
fn truncate_after_in_active_and_sealed_segments() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = PartitionLog::open(dir.path(), small(4096)).unwrap();
    for i in 0..40u8 {
        log.append(&batch(2, 100, i as i64, i)).unwrap();
    }
    let err = log.truncate_after(70).unwrap_err();
    assert!(
        matches!(
            err,
            LogError::NotBatchBoundary {
                offset: 70,
                base_offset: 70,
                last_offset: 71
            }
        ),
        "{err}"
    );
    log.truncate_after(75).unwrap();
    assert_eq!(log.log_end_offset(), 76);
    // Into a sealed segment: it becomes active again and later segments go.
    log.truncate_after(9).unwrap();
    assert_eq!(log.log_end_offset(), 10);
    assert_eq!(log.reader().segment_count(), 1);
    let a = log.append(&batch(1, 5, 0, 99)).unwrap();
    assert_eq!(a.base_offset, 10);
    drop(log);
    let log = PartitionLog::open(dir.path(), small(4096)).unwrap();
    let hs = read_all(&log.reader(), 0);
    assert_eq!(hs.len(), 6);
    assert_eq!(hs.last().unwrap().base_offset, 10);
}

#[test]
fn retention_by_time_and_size_deletes_oldest_sealed_segments() {
    let dir = tempfile::tempdir().unwrap();
    let now = SystemTime::now();
    let now_ms = now.duration_since(UNIX_EPOCH).unwrap().as_millis() as i64;
    let hour = 3_600_000;
    let mut cfg = small(2048);
    cfg.retention_ms = Some(Duration::from_millis(hour as u64));
    let mut log = PartitionLog::open(dir.path(), cfg.clone()).unwrap();
    // Old records first, then recent ones.
    for i in 0..30 {
        let ts = if i < 15 { now_ms - 3 * hour } else { now_ms };
        log.append(&batch(1, 300, ts, i as u8)).unwrap();
    }
    let segments = log.reader().segment_count();
    let deleted = log.apply_retention(now).unwrap();
    assert!(!deleted.is_empty());
    assert_eq!(log.reader().segment_count(), segments - deleted.len());
    let start = log.log_start_offset();
    assert!(start > 0 && start <= 15, "start {start}");
    assert!(log.read(0, 100).is_err());
    for p in segment_files(dir.path(), "log") {
        let base: u64 = p.file_stem().unwrap().to_str().unwrap().parse().unwrap();
        assert!(base >= start);
    }
    drop(log);

    cfg.retention_ms = None;
    cfg.retention_bytes = Some(3000);
    let mut log = PartitionLog::open(dir.path(), cfg).unwrap();
    log.apply_retention(now).unwrap();
    let size = log.reader().size_bytes();
    assert!((3000..3000 + 2048).contains(&size), "size {size}");
    assert_eq!(log.log_end_offset(), 30);
}

/// Appends 20 batches (one segment), then returns the log directory and the batches.
#[test]
fn failed_write_poisons_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("p0");
    let mut log = PartitionLog::open(&path, small(1024)).unwrap();
    log.append(&batch(1, 500, 0, 1)).unwrap();
    // The next roll cannot create its segment file.
    fs::remove_dir_all(&path).unwrap();
    fs::write(&path, b"not a directory").unwrap();
    let err = log.append(&batch(1, 600, 0, 2)).unwrap_err();
    assert!(matches!(err, LogError::Io { .. }), "{err}");
    fs::remove_file(&path).unwrap();
    fs::create_dir(&path).unwrap();
    let err = log.append(&batch(1, 10, 0, 3)).unwrap_err();
    assert!(matches!(err, LogError::Poisoned { .. }), "{err}");
    assert!(err.to_string().contains("reopen"), "{err}");
    assert!(matches!(log.flush(), Err(LogError::Poisoned { .. })));
    // Reads still work from the mappings.
    assert_eq!(headers(&log.read(0, 100).unwrap()).len(), 1);
}

#[test]
fn a_failed_deferred_sync_poisons_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let config = LogConfig {
        flush: FlushPolicy::Always,
        ..small(1 << 20)
    };
    let mut log = PartitionLog::open(dir.path().join("p0"), config).unwrap();
    let first = batch(1, 100, 0, 1);
    let (_, sync) = log.append_with_epochs_deferred(&[(&first, 1)]).unwrap();
    let mut sync = sync.expect("flush=always leaves the sync to the caller");
    sync.break_for_tests();
    // The sync runs elsewhere (the Raft flusher's thread) and fails there.
    assert!(std::thread::spawn(move || sync.sync())
        .join()
        .unwrap()
        .is_err());
    let second = batch(1, 100, 0, 2);
    let err = log
        .append_with_epochs_deferred(&[(&second, 1)])
        .map(|_| ())
        .unwrap_err();
    assert!(matches!(err, LogError::Poisoned { .. }), "{err}");
    assert!(matches!(log.flush(), Err(LogError::Poisoned { .. })));
    // Reopening recovers it.
    drop(log);
    let mut log = PartitionLog::open(dir.path().join("p0"), small(1 << 20)).unwrap();
    log.append(&second).unwrap();
}

#[test]
fn concurrent_readers_see_only_complete_batches() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = PartitionLog::open(dir.path(), small(64 * 1024)).unwrap();
    let total = 3000u64;
    std::thread::scope(|s| {
        for _ in 0..3 {
            let reader = log.reader();
            s.spawn(move || {
                let mut offset = 0;
                while offset < total {
                    let bytes = reader.read(offset, 4096).unwrap();
                    for h in headers(&bytes) {
                        assert_eq!(h.base_offset as u64, offset, "no gaps, no repeats");
                        let value = (h.base_offset / 2) as u8;
                        let batch = RecordBatch::parse(&bytes[..]).ok();
                        if let Some(b) = batch {
                            let r = b.records().next().unwrap().unwrap();
                            assert_eq!(r.value.unwrap()[0], value);
                        }
                        offset = h.next_offset() as u64;
                    }
                }
            });
        }
        for i in 0..total / 2 {
            log.append(&batch(2, 90, 0, i as u8)).unwrap();
        }
    });
}

#[derive(Debug, Clone)]
enum Op {
    Append(usize, usize),
    Read(usize),
    Truncate(usize),
    Reopen,
    Flush,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (1usize..6, 1usize..300).prop_map(|(n, s)| Op::Append(n, s)),
        3 => (0usize..1000).prop_map(Op::Read),
        1 => (0usize..1000).prop_map(Op::Truncate),
        1 => Just(Op::Reopen),
        1 => Just(Op::Flush),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    /// Random appends, reads, truncations and reopens agree with a `Vec` of batches.
    #[test]
    fn agrees_with_a_vec_of_batches(ops in proptest::collection::vec(op(), 1..60)) {
        let dir = tempfile::tempdir().unwrap();
        let cfg = LogConfig { segment_bytes: 2048, index_interval_bytes: 200, flush: FlushPolicy::Os, ..LogConfig::default() };
        let mut log = PartitionLog::open(dir.path(), cfg.clone()).unwrap();
        // The model: (base offset, bytes with base offset stamped).
        let mut model: Vec<(u64, Vec<u8>)> = Vec::new();
        let end = |m: &Vec<(u64, Vec<u8>)>| m.last().map_or(0, |(b, bytes)| {
            b + BatchHeader::parse(bytes).unwrap().record_count as u64
        });
        for (k, op) in ops.into_iter().enumerate() {
            match op {
                Op::Append(n, size) => {
                    let b = batch(n, size, k as i64, k as u8);
                    let a = log.append(&b).unwrap();
                    prop_assert_eq!(a.base_offset, end(&model));
                    let mut stamped = b.to_vec();
                    stamped[..8].copy_from_slice(&(a.base_offset as i64).to_be_bytes());
                    model.push((a.base_offset, stamped));
                }
                Op::Read(pick) => {
                    let e = end(&model);
                    let off = if e == 0 { 0 } else { pick as u64 % (e + 1) };
                    let got = log.read(off, 700).unwrap();
                    let first = model.iter().position(|(b, bytes)| {
                        b + BatchHeader::parse(bytes).unwrap().record_count as u64 > off
                    });
                    match first {
                        None => prop_assert!(got.is_empty()),
                        Some(i) => {
                            let mut want = Vec::new();
                            for (_, bytes) in &model[i..] {
                                if !want.is_empty() && want.len() + bytes.len() > 700 { break; }
                                want.extend_from_slice(bytes);
                            }
                            // A read stops at a segment's end, so it returns a prefix.
                            prop_assert!(!headers(&got).is_empty());
                            prop_assert_eq!(&got[..], &want[..got.len()]);
                        }
                    }
                }
                Op::Truncate(pick) => {
                    if model.is_empty() { continue; }
                    let i = pick % model.len();
                    let last = end(&model[..=i].to_vec()) - 1;
                    log.truncate_after(last).unwrap();
                    model.truncate(i + 1);
                }
                Op::Reopen => {
                    drop(log);
                    log = PartitionLog::open(dir.path(), cfg.clone()).unwrap();
                }
                Op::Flush => log.flush().unwrap(),
            }
            prop_assert_eq!(log.log_end_offset(), end(&model));
        }
    }
}

#[test]
fn invalid_framing_under_a_good_crc_is_refused_on_append_and_on_recovery() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = PartitionLog::open(dir.path(), small(4 << 20)).unwrap();
    log.append(&batch(1, 10, 1, 1)).unwrap();
    let big = batch(3000, 100, 5, 7);
    // Bad framing under a correct checksum: the last record claims one byte too many.
    let mut bad = big.to_vec();
    let at = bad.len() - 1;
    bad[at] = 0x02; // header count 1 with no header bytes
    let crc = crc32fast::hash(&bad[21..]);
    bad[17..21].copy_from_slice(&crc.to_be_bytes());
    let err = log.append(&bad).unwrap_err();
    assert!(matches!(err, LogError::InvalidBatch(_)), "{err}");
    assert_eq!(log.log_end_offset(), 1);
    // Nothing of it is visible, and a valid large batch lands right after the first one.
    let a = log.append(&big).unwrap();
    assert_eq!((a.base_offset, a.next_offset), (1, 3001));
    let got = headers(&log.read(0, 8 << 20).unwrap());
    assert_eq!(got.len(), 2);
    drop(log);
    let log = PartitionLog::open(dir.path(), small(4 << 20)).unwrap();
    assert_eq!(log.log_end_offset(), 3001);
    // Recovery validates framing too: the same bytes found at the tail (say, written by a
    // broken build) are cut off rather than served.
    drop(log);
    let path = active_log_path(dir.path());
    let end: u64 = got.iter().map(|h| h.total_len() as u64).sum();
    let mut stamped = bad.clone();
    stamped[..8].copy_from_slice(&3001i64.to_be_bytes());
    let mut f = OpenOptions::new().write(true).open(&path).unwrap();
    f.seek(SeekFrom::Start(end)).unwrap();
    f.write_all(&stamped).unwrap();
    drop(f);
    let log = PartitionLog::open(dir.path(), small(4 << 20)).unwrap();
    assert_eq!(log.log_end_offset(), 3001);
}

#[test]
fn control_batches_take_no_offset_and_locators_address_every_batch() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = PartitionLog::open(dir.path(), small(4096)).unwrap();
    let mut appended = Vec::new();
    for i in 0..30u8 {
        let b = if i % 3 == 0 {
            BatchBuilder::control_payload(i as i64, &[i; 20])
        } else {
            batch(2, 100, i as i64, i)
        };
        appended.push(log.append(&b).unwrap());
    }
    // 20 data batches of 2 records; control batches share the next batch's offset.
    assert_eq!(log.log_end_offset(), 40);
    assert_eq!(appended[0].base_offset, 0);
    assert_eq!(appended[1].base_offset, 0);
    assert_eq!(appended[0].last_offset(), None);
    let listed = log.batches().unwrap();
    assert_eq!(listed.len(), 30);
    for (a, (loc, h)) in appended.iter().zip(&listed) {
        assert_eq!(a.locator, *loc);
        assert_eq!(h.base_offset as u64, a.base_offset);
        let bytes = log.reader().batch_at(*loc).unwrap();
        assert_eq!(BatchHeader::parse(&bytes).unwrap(), *h);
    }
    // Cut at a control batch that shares its offset with the batch after it.
    log.truncate_at(appended[12].locator).unwrap();
    assert_eq!(log.batches().unwrap().len(), 12);
    assert_eq!(log.log_end_offset(), appended[12].base_offset);
    drop(log);
    let log = PartitionLog::open(dir.path(), small(4096)).unwrap();
    assert_eq!(log.batches().unwrap().len(), 12);
}

fn active_log_path(dir: &Path) -> std::path::PathBuf {
    segment_files(dir, "log").pop().unwrap()
}

#[path = "recovery_tests.rs"]
mod recovery;
