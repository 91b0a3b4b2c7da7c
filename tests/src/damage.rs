//! File damage done to a stopped broker's partition directory, the way disks and
//! crashes do it: a torn tail, a deleted index, a flipped bit in a sealed segment. Each
//! picks what to damage with `pick(n)` (a number below `n`, from the caller's seeded
//! generator) and describes what it did, or returns `None` when there was nothing to
//! damage.

use std::path::{Path, PathBuf};

/// The directory's files with extension `ext`, oldest segment first.
pub fn segment_files(dir: &Path, ext: &str) -> Vec<PathBuf> {
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == ext))
        .collect();
    files.sort();
    files
}

/// Cuts up to 4 KiB off the newest log segment (a torn write).
pub fn truncate_tail(dir: &Path, mut pick: impl FnMut(u32) -> u32) -> Option<String> {
    let logs = segment_files(dir, "log");
    let last = logs.last()?;
    let len = std::fs::metadata(last).ok()?.len();
    let cut = 1 + pick(4096) as u64;
    let file = std::fs::OpenOptions::new().write(true).open(last).ok()?;
    file.set_len(len.saturating_sub(cut)).ok()?;
    Some(format!("{} cut by {cut} bytes", last.display()))
}

/// Deletes the index files of one segment (sealed or active): the broker must rebuild
/// them.
pub fn delete_index(dir: &Path, mut pick: impl FnMut(u32) -> u32) -> Option<String> {
    let indexes = segment_files(dir, "index");
    if indexes.is_empty() {
        return None;
    }
    let index = indexes[pick(indexes.len() as u32) as usize].clone();
    let time_index = index.with_extension("timeindex");
    std::fs::remove_file(&index).ok()?;
    let _ = std::fs::remove_file(&time_index);
    Some(format!(
        "{} deleted ({} segments)",
        index.display(),
        indexes.len()
    ))
}

/// Flips one bit of one byte of a sealed log segment (any but the newest): bit rot,
/// which no write and no crash announces. The broker must never serve the damaged batch,
/// and must repair its copy from another replica.
pub fn flip_bit(dir: &Path, mut pick: impl FnMut(u32) -> u32) -> Option<String> {
    use std::os::unix::fs::FileExt;
    let logs = segment_files(dir, "log");
    let sealed = logs.len().checked_sub(1).filter(|&n| n > 0)?;
    let log = &logs[pick(sealed as u32) as usize];
    let len = std::fs::metadata(log).ok()?.len();
    if len == 0 {
        return None;
    }
    let at = pick(len.min(u32::MAX as u64) as u32) as u64;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(log)
        .ok()?;
    let mut byte = [0u8];
    file.read_exact_at(&mut byte, at).ok()?;
    let bit = 1u8 << pick(8);
    file.write_all_at(&[byte[0] ^ bit], at).ok()?;
    file.sync_data().ok()?;
    Some(format!(
        "{} byte {at} of {len}: bit {bit:#04x} flipped ({} sealed segments)",
        log.display(),
        sealed
    ))
}
