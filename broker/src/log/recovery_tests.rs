//! Recovery of the partition log after crashes and damage: torn and flipped tails,
//! lost or stale indexes, corrupt sealed segments, tails that must stay cut.

use std::fs::{self, OpenOptions};
use std::io::{Seek, SeekFrom, Write};
use std::path::Path;

use super::*;

/// Overwrites the byte at `pos` of the active segment's log in `dir` with 0xAA.
fn flip_byte(dir: &Path, pos: usize) {
    let mut f = OpenOptions::new()
        .write(true)
        .read(true)
        .open(active_log_path(dir))
        .unwrap();
    f.seek(SeekFrom::Start(pos as u64)).unwrap();
    f.write_all(&[0xAA]).unwrap();
}

fn one_segment_log() -> (tempfile::TempDir, Vec<BatchHeader>) {
    let dir = tempfile::tempdir().unwrap();
    let mut log = PartitionLog::open(dir.path(), small(1 << 16)).unwrap();
    for i in 0..20u8 {
        log.append(&batch(3, 50, i as i64, i)).unwrap();
    }
    let hs = read_all(&log.reader(), 0);
    (dir, hs)
}

#[test]
fn flipped_byte_in_the_active_tail_truncates_from_that_batch() {
    let (dir, hs) = one_segment_log();
    // Flip a byte inside the last batch, after the last index entry.
    let pos: usize = hs[..19].iter().map(|h| h.total_len()).sum::<usize>() + 70;
    flip_byte(dir.path(), pos);
    let mut log = PartitionLog::open(dir.path(), small(1 << 16)).unwrap();
    assert_eq!(log.log_end_offset(), 19 * 3);
    assert_eq!(read_all(&log.reader(), 0), hs[..19]);
    // The log goes on from there.
    assert_eq!(log.append(&batch(1, 5, 0, 0)).unwrap().base_offset, 57);
}

#[test]
fn torn_last_batch_is_dropped() {
    let (dir, hs) = one_segment_log();
    let end: usize = hs.iter().map(|h| h.total_len()).sum();
    let last = hs.last().unwrap().total_len();
    // The tail of the last batch never reached the disk.
    let f = OpenOptions::new()
        .write(true)
        .open(active_log_path(dir.path()))
        .unwrap();
    f.set_len((end - last / 2) as u64).unwrap();
    drop(f);
    let log = PartitionLog::open(dir.path(), small(1 << 16)).unwrap();
    assert_eq!(log.log_end_offset(), 19 * 3);
    assert_eq!(read_all(&log.reader(), 0), hs[..19]);
}

#[test]
fn deleted_or_truncated_index_is_rebuilt() {
    for damage in ["delete", "truncate", "garbage"] {
        let dir = tempfile::tempdir().unwrap();
        let mut log = PartitionLog::open(dir.path(), small(4096)).unwrap();
        for i in 0..60u8 {
            log.append(&batch(2, 80, i as i64, i)).unwrap();
        }
        let before = read_all(&log.reader(), 0);
        drop(log);
        for p in segment_files(dir.path(), "index") {
            match damage {
                "delete" => fs::remove_file(&p).unwrap(),
                "truncate" => {
                    let len = fs::metadata(&p).unwrap().len();
                    let f = OpenOptions::new().write(true).open(&p).unwrap();
                    f.set_len(len / 2 + 3).unwrap();
                }
                _ => fs::write(&p, [0xffu8; 24]).unwrap(),
            }
        }
        let log = PartitionLog::open(dir.path(), small(4096)).unwrap();
        assert_eq!(read_all(&log.reader(), 0), before, "after {damage}");
        for off in (0..120).step_by(7) {
            let h = &headers(&log.read(off, 1).unwrap())[0];
            assert!(h.base_offset as u64 <= off && off <= h.last_offset() as u64);
        }
        assert_eq!(log.offset_for_timestamp(30).unwrap(), Some(59));
        drop(log);
        // The rebuilt sealed indexes were written back: a second open changes nothing.
        let sealed: Vec<_> = segment_files(dir.path(), "index");
        let snapshot: Vec<_> = sealed[..sealed.len() - 1]
            .iter()
            .map(|p| fs::read(p).unwrap())
            .collect();
        let log = PartitionLog::open(dir.path(), small(4096)).unwrap();
        drop(log);
        let again: Vec<_> = sealed[..sealed.len() - 1]
            .iter()
            .map(|p| fs::read(p).unwrap())
            .collect();
        assert_eq!(snapshot, again);
    }
}

#[test]
fn a_damaged_sealed_segment_opens_serves_no_damage_and_is_repaired_from_a_copy() {
    // Two replicas of the same log: the same batches appended with the same config.
    let dirs = [tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap()];
    for dir in &dirs {
        let mut log = PartitionLog::open(dir.path(), small(4096)).unwrap();
        for i in 0..60u8 {
            log.append(&batch(2, 80, i as i64, i)).unwrap();
        }
    }
    // A bit flips near the end of the first replica's first segment (after its last
    // index entry: the part verified at open).
    let first = segment_files(dirs[0].path(), "log").remove(0);
    let len = fs::metadata(&first).unwrap().len();
    let mut f = OpenOptions::new().write(true).open(&first).unwrap();
    f.seek(SeekFrom::Start(len - 10)).unwrap();
    f.write_all(&[0x55]).unwrap();
    drop(f);
    let damaged = PartitionLog::open(dirs[0].path(), small(4096)).unwrap();
    let copy = PartitionLog::open(dirs[1].path(), small(4096)).unwrap();
    let (d, c) = (damaged.reader(), copy.reader());
    assert_eq!(d.log_end_offset(), c.log_end_offset(), "opened whole");
    let seg = d.sealed_segments()[0];
    assert_eq!(seg, c.sealed_segments()[0]);
    let err = d.verify_segment(seg.base).unwrap_err();
    assert!(matches!(err, LogError::Corrupt { .. }), "{err}");
    // The damaged batch is never served.
    let last = seg.next - 1;
    assert!(matches!(
        d.read(last, 1 << 20),
        Err(LogError::Corrupt { .. })
    ));
    // A copy that is not the same offsets, or damaged too, is refused.
    let wrong = c.read_raw(seg.next, c.log_end_offset(), 1 << 20).unwrap();
    assert!(d.repair_segment(seg.base, &wrong).is_err());
    let mut bad = c.read_raw(seg.base, seg.next, 1 << 20).unwrap();
    bad[20] ^= 1;
    assert!(d.repair_segment(seg.base, &bad).is_err());
    // The replica's copy repairs it: one byte rewritten.
    let good = c.read_raw(seg.base, seg.next, 1 << 20).unwrap();
    assert_eq!(good.len(), seg.len);
    assert!(
        c.read_raw(seg.base, seg.next, seg.len - 1).is_err(),
        "bounded"
    );
    assert_eq!(d.repair_segment(seg.base, &good).unwrap(), 1);
    d.verify_segment(seg.base).unwrap();
    assert_eq!(
        d.read(last, 1 << 20).unwrap(),
        c.read(last, 1 << 20).unwrap()
    );
    drop((damaged, copy));
    // And it opens as intact.
    let reopened = PartitionLog::open(dirs[0].path(), small(4096)).unwrap();
    reopened.reader().verify_segment(seg.base).unwrap();
}

#[test]
fn damage_in_the_middle_of_a_segment_is_an_error_on_read() {
    let (dir, _) = one_segment_log();
    let mut f = OpenOptions::new()
        .write(true)
        .open(active_log_path(dir.path()))
        .unwrap();
    f.seek(SeekFrom::Start(100)).unwrap();
    f.write_all(&[0x55]).unwrap();
    drop(f);
    // Recovery starts from the last index entry, so it keeps the log; reads refuse the batch.
    let log = PartitionLog::open(dir.path(), small(1 << 16)).unwrap();
    let err = log.read(0, 1 << 20).unwrap_err();
    assert!(
        matches!(err, LogError::Corrupt { position: 0, .. }),
        "{err}"
    );
}

/// A log of `batches` in a new directory, closed again; returns the directory and the
/// batches' headers as read back.
fn closed_log(
    config: &LogConfig,
    batches: impl IntoIterator<Item = Bytes>,
) -> (tempfile::TempDir, Vec<BatchHeader>) {
    let dir = tempfile::tempdir().unwrap();
    let mut log = PartitionLog::open(dir.path(), config.clone()).unwrap();
    for b in batches {
        log.append(&b).unwrap();
    }
    let headers = read_all(&log.reader(), 0);
    (dir, headers)
}

#[test]
fn a_cut_tail_never_comes_back() {
    // 60 batches of equal size; batch 30 is damaged, so a reopen keeps 30 and cuts the
    // rest. New batches of the same size then land exactly where the cut ones were: had
    // the cut tail kept its bytes, old batch 35 would follow new batch 34 with the very
    // offset expected next, and a second reopen would bring the cut batches back.
    let config = small(1 << 20);
    let (dir, old) = closed_log(&config, (0..60u8).map(|i| batch(2, 200, i as i64, i)));
    let pos: usize = old[..30].iter().map(|h| h.total_len()).sum::<usize>() + 70;
    flip_byte(dir.path(), pos);
    // Without its index the whole segment is verified (the index vouches for the data it
    // covers), so the damage is found.
    for p in segment_files(dir.path(), "index") {
        fs::remove_file(p).unwrap();
    }
    let mut log = PartitionLog::open(dir.path(), config.clone()).unwrap();
    assert_eq!(log.log_end_offset(), 60);
    for i in 30..35u8 {
        assert_eq!(
            log.append(&batch(2, 200, 1000 + i as i64, 100 + i))
                .unwrap()
                .base_offset,
            2 * i as u64
        );
    }
    drop(log);
    let log = PartitionLog::open(dir.path(), config).unwrap();
    assert_eq!(log.log_end_offset(), 70, "the cut batches stay cut");
    let now = read_all(&log.reader(), 0);
    assert_eq!(now[..30], old[..30]);
    assert_eq!(now.len(), 35);
    // Every offset resolves through the index to the batch holding it: no index entry
    // of the cut tail survived either.
    for off in 0..70u64 {
        let h = &headers(&log.read(off, 1).unwrap())[0];
        assert!(h.base_offset as u64 <= off && off <= h.last_offset() as u64);
    }
    assert!(log.read(70, 1).unwrap().is_empty());
}

#[test]
fn index_entries_of_a_torn_tail_are_dropped() {
    // Enough batches that the index spans several pages; the log loses its last 500
    // batches (a torn tail), the index keeps entries for them.
    let config = small(1 << 22);
    let (dir, old) = closed_log(
        &config,
        (0..1500u32).map(|i| batch(1, 300, i as i64, i as u8)),
    );
    let keep: usize = old[..1000].iter().map(|h| h.total_len()).sum();
    let f = OpenOptions::new()
        .write(true)
        .open(active_log_path(dir.path()))
        .unwrap();
    f.set_len(keep as u64 + 10).unwrap();
    drop(f);
    let mut log = PartitionLog::open(dir.path(), config.clone()).unwrap();
    assert_eq!(log.log_end_offset(), 1000);
    // Smaller batches now: a stale entry would send a lookup to the wrong place.
    for i in 0..700u32 {
        log.append(&batch(1, 120, i as i64, 7)).unwrap();
    }
    drop(log);
    let log = PartitionLog::open(dir.path(), config).unwrap();
    assert_eq!(log.log_end_offset(), 1700);
    for off in (0..1700u64).step_by(13) {
        let h = &headers(&log.read(off, 1).unwrap())[0];
        assert!(
            h.base_offset as u64 <= off && off <= h.last_offset() as u64,
            "offset {off}"
        );
    }
}
