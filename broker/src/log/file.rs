//! File helpers: segment names, preallocation, mappings, directory sync.

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use bytes::Bytes;
use memmap2::{MmapOptions, MmapRaw};

/// Extension of segment data files.
pub(crate) const LOG_EXT: &str = "log";
/// Extension of sparse offset index files.
pub(crate) const INDEX_EXT: &str = "index";
/// Extension of sparse time index files.
pub(crate) const TIME_INDEX_EXT: &str = "timeindex";

/// `dir/<base offset, 20 digits>.<ext>`.
pub(crate) fn segment_path(dir: &Path, base_offset: u64, ext: &str) -> PathBuf {
    dir.join(format!("{base_offset:020}.{ext}"))
}

/// The base offset named by a segment data file, if `name` is one.
pub(crate) fn parse_segment_name(name: &str) -> Option<u64> {
    let digits = name.strip_suffix(LOG_EXT)?.strip_suffix('.')?;
    if digits.len() != 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// `fallocate(2)` on `file`; `Ok(false)` where the file system does not support it.
fn fallocate(file: &File, mode: libc::c_int, offset: u64, len: u64) -> io::Result<bool> {
    // SAFETY: plain syscall on an open descriptor we own; no memory is passed.
    let rc = unsafe {
        libc::fallocate(
            file.as_raw_fd(),
            mode,
            offset as libc::off_t,
            len as libc::off_t,
        )
    };
    if rc == 0 {
        return Ok(true);
    }
    let err = io::Error::last_os_error();
    match err.raw_os_error() {
        Some(libc::EOPNOTSUPP) | Some(libc::ENOSYS) => Ok(false),
        _ => Err(err),
    }
}

/// Grows `file` to `len` bytes with real blocks behind them, so that a full disk shows up
/// here as `ENOSPC` rather than as SIGBUS on a later write through the mapping.
pub(crate) fn preallocate(file: &File, len: u64) -> io::Result<()> {
    if !fallocate(file, 0, 0, len)? {
        // File systems without fallocate: fall back to a sparse file (never shrinking it).
        grow_sparse(file, len)?;
    }
    Ok(())
}

/// Grows `file` to `len` bytes without giving it blocks; never shrinks it.
pub(crate) fn grow_sparse(file: &File, len: u64) -> io::Result<()> {
    if file.metadata()?.len() < len {
        file.set_len(len)?;
    }
    Ok(())
}

/// Zeroes `len` bytes of `file` from `offset` by releasing their blocks (the size stays);
/// `Ok(false)` where the file system cannot, and nothing changed.
pub(crate) fn punch_hole(file: &File, offset: u64, len: u64) -> io::Result<bool> {
    if len == 0 {
        return Ok(true);
    }
    let mode = libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE;
    fallocate(file, mode, offset, len)
}

/// Zeroes `len` bytes of `file` from `offset` keeping their blocks (`FALLOC_FL_ZERO_RANGE`:
/// the extents become unwritten, nothing is freed or discarded, the size stays);
/// `Ok(false)` where the file system cannot, and nothing changed.
pub(crate) fn zero_range(file: &File, offset: u64, len: u64) -> io::Result<bool> {
    if len == 0 {
        return Ok(true);
    }
    let mode = libc::FALLOC_FL_ZERO_RANGE | libc::FALLOC_FL_KEEP_SIZE;
    fallocate(file, mode, offset, len)
}

/// Where the first byte of data at or after `from` lies (`lseek(SEEK_DATA)`): `None`
/// when only holes and never-written preallocated blocks follow. Where the file system
/// cannot tell, every byte counts as data (`Some(from)`).
pub(crate) fn next_data(file: &File, from: u64) -> io::Result<Option<u64>> {
    // SAFETY: plain syscall on an open descriptor we own; no memory is passed.
    let at = unsafe { libc::lseek(file.as_raw_fd(), from as libc::off_t, libc::SEEK_DATA) };
    if at >= 0 {
        return Ok(Some(at as u64));
    }
    let err = io::Error::last_os_error();
    match err.raw_os_error() {
        Some(libc::ENXIO) => Ok(None),
        Some(libc::EINVAL) | Some(libc::EOPNOTSUPP) => Ok(Some(from)),
        _ => Err(err),
    }
}

/// Makes a directory's entries (created, renamed or removed files) durable.
pub(crate) fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Maps the first `len` bytes of `file` read-only as `Bytes` (empty for `len == 0`).
pub(crate) fn map_read(file: &File, len: usize) -> io::Result<Bytes> {
    if len == 0 {
        return Ok(Bytes::new());
    }
    // SAFETY: the files of a partition directory are only written by this process (with
    // `pwritev`, or through an index writer's raw mapping), and only in bytes readers have
    // not been told exist yet; a file is never shrunk below what readers may read.
    let map = unsafe { MmapOptions::new().len(len).map(file)? };
    Ok(Bytes::from_owner(map))
}

/// Maps the first `len` bytes of `file` writable and shared, without Rust references into
/// it (an active index: its writer and its readers share the one mapping).
pub(crate) fn map_raw(file: &File, len: usize) -> io::Result<MmapRaw> {
    MmapOptions::new().len(len).map_raw(file)
}

/// Writes all of `parts`, one after another, at `offset` of `file` (`pwritev`, retried
/// on short writes). Whole pages written this way skip the zero-fill a first store
/// through a mapping costs.
pub(crate) fn write_all_at(file: &File, parts: &[&[u8]], mut offset: u64) -> io::Result<()> {
    let mut parts: Vec<&[u8]> = parts.iter().copied().filter(|p| !p.is_empty()).collect();
    while !parts.is_empty() {
        let iov: Vec<libc::iovec> = parts
            .iter()
            .map(|p| libc::iovec {
                iov_base: p.as_ptr() as *mut libc::c_void,
                iov_len: p.len(),
            })
            .collect();
        // SAFETY: every iovec points into a live slice of `parts` for the whole call, and
        // pwritev only reads them.
        let n = unsafe {
            libc::pwritev(
                file.as_raw_fd(),
                iov.as_ptr(),
                iov.len() as libc::c_int,
                offset as libc::off_t,
            )
        };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::WriteZero,
                "pwritev wrote nothing",
            ));
        }
        offset += n as u64;
        let mut n = n as usize;
        while let Some(first) = parts.first_mut() {
            if n < first.len() {
                *first = &first[n..];
                break;
            }
            n -= first.len();
            parts.remove(0);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        let p = segment_path(Path::new("/x"), 42, LOG_EXT);
        assert_eq!(p, Path::new("/x/00000000000000000042.log"));
        let name = p.file_name().unwrap().to_str().unwrap();
        assert_eq!(parse_segment_name(name), Some(42));
        assert_eq!(parse_segment_name("00000000000000000042.index"), None);
        assert_eq!(parse_segment_name("42.log"), None);
        assert_eq!(parse_segment_name("0000000000000000004x.log"), None);
    }
}
