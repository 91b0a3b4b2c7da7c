//! One vote journal per broker for all its partition groups, synced by group commit.
//!
//! Raft must make a vote durable before it asks for or grants one. Saved per partition
//! (`raft.json`: a file write, a sync, a rename and a directory sync), the elections of a
//! few thousand groups at once (a broker died, a cluster restarted) cost thousands of
//! syncs per broker: seconds on one disk, long enough for votes to time out and the
//! elections to start over. Here every vote is one small record appended to
//! `<data>/raft-votes.log`, and the votes that arrive while a sync runs share the next:
//! a thousand votes cost a few syncs.
//!
//! Record: `len u32 | crc32 u32 | group u64 | vote JSON` (big-endian, the checksum over
//! group and JSON). Reading stops at the first torn or damaged record (a crash mid-write:
//! that vote was never acknowledged) and the file is cut there. The latest record of a
//! group wins. At open, a journal past [`COMPACT_AT`] is rewritten with one record per
//! group (temp file, sync, rename, directory sync).

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use tokio::sync::oneshot;

use super::types::typ;

/// The journal's file name in the data directory.
pub const FILE: &str = "raft-votes.log";
/// A journal larger than this is compacted when the broker opens it.
pub const COMPACT_AT: u64 = 16 << 20;
/// Largest record accepted when reading (a vote's JSON is under 100 bytes).
const MAX_RECORD: usize = 4096;

type Waiter = oneshot::Sender<io::Result<()>>;

/// The broker's vote journal; cheap to clone.
#[derive(Clone)]
pub struct VoteJournal {
    inner: Arc<Inner>,
}

struct Inner {
    path: PathBuf,
    /// Votes read at open, by group.
    loaded: HashMap<u64, typ::Vote>,
    /// Records waiting for the next sync, and whether a sync is running.
    queue: Mutex<Queue>,
    file: Mutex<File>,
}

#[derive(Default)]
struct Queue {
    bytes: Vec<u8>,
    waiters: Vec<Waiter>,
    syncing: bool,
}

impl VoteJournal {
    /// Opens (creating, repairing or compacting) the journal in `dir`.
    pub fn open(dir: &Path) -> io::Result<Self> {
        let path = dir.join(FILE);
        let (loaded, good_len) = match File::open(&path) {
            Ok(mut f) => {
                let mut bytes = Vec::new();
                f.read_to_end(&mut bytes)?;
                read_records(&bytes)
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => (HashMap::new(), 0),
            Err(e) => return Err(e),
        };
        if good_len as u64 > COMPACT_AT {
            let mut bytes = Vec::new();
            for (group, vote) in &loaded {
                encode(&mut bytes, *group, vote);
            }
            super::state_file::write_atomic(dir, FILE, &bytes)?;
        }
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .read(true)
            .open(&path)?;
        let len = file.metadata()?.len();
        let good = if good_len as u64 > COMPACT_AT {
            len
        } else {
            good_len as u64
        };
        if len > good {
            tracing::warn!(journal = %path.display(), "cutting a torn vote record at byte {good}");
            file.set_len(good)?;
            file.sync_all()?;
        }
        File::open(dir)?.sync_all()?;
        Ok(Self {
            inner: Arc::new(Inner {
                path,
                loaded,
                queue: Mutex::default(),
                file: Mutex::new(file),
            }),
        })
    }

    /// The vote group `group` last saved here before this start.
    pub fn vote_of(&self, group: u64) -> Option<typ::Vote> {
        self.inner.loaded.get(&group).copied()
    }

    /// Makes `vote` group `group`'s durable vote; returns once it is synced.
    pub async fn save(&self, group: u64, vote: &typ::Vote) -> io::Result<()> {
        let (tx, rx) = oneshot::channel();
        let start = {
            let mut q = self.inner.queue.lock().unwrap_or_else(|e| e.into_inner());
            encode(&mut q.bytes, group, vote);
            q.waiters.push(tx);
            !std::mem::replace(&mut q.syncing, true)
        };
        if start {
            let inner = self.inner.clone();
            tokio::task::spawn_blocking(move || inner.sync_until_empty());
        }
        rx.await
            .unwrap_or_else(|_| Err(io::Error::other("the vote journal writer stopped")))
    }
}

impl Inner {
    /// Writes and syncs what is queued, again and again until nothing is: the votes that
    /// arrive during one sync go out together in the next.
    fn sync_until_empty(&self) {
        loop {
            let (bytes, waiters) = {
                let mut q = self.queue.lock().unwrap_or_else(|e| e.into_inner());
                if q.waiters.is_empty() {
                    q.syncing = false;
                    return;
                }
                (std::mem::take(&mut q.bytes), std::mem::take(&mut q.waiters))
            };
            let result = {
                let mut file = self.file.lock().unwrap_or_else(|e| e.into_inner());
                file.write_all(&bytes).and_then(|()| file.sync_data())
            };
            if let Err(e) = &result {
                tracing::error!(journal = %self.path.display(), "saving votes: {e}");
            }
            for w in waiters {
                let _ = w.send(match &result {
                    Ok(()) => Ok(()),
                    Err(e) => Err(io::Error::new(e.kind(), e.to_string())),
                });
            }
        }
    }
}

fn encode(out: &mut Vec<u8>, group: u64, vote: &typ::Vote) {
    let json = serde_json::to_vec(vote).expect("a vote serializes");
    let mut body = Vec::with_capacity(8 + json.len());
    body.extend_from_slice(&group.to_be_bytes());
    body.extend_from_slice(&json);
    out.extend_from_slice(&(body.len() as u32).to_be_bytes());
    out.extend_from_slice(&crc32fast::hash(&body).to_be_bytes());
    out.extend_from_slice(&body);
}

/// The latest vote of each group in `bytes`, and the length of the intact records.
fn read_records(bytes: &[u8]) -> (HashMap<u64, typ::Vote>, usize) {
    let mut votes = HashMap::new();
    let mut pos = 0;
    while let Some(header) = bytes.get(pos..pos + 8) {
        let len = u32::from_be_bytes(header[..4].try_into().expect("4 bytes")) as usize;
        let crc = u32::from_be_bytes(header[4..].try_into().expect("4 bytes"));
        if !(8..=MAX_RECORD).contains(&len) {
            break;
        }
        let Some(body) = bytes.get(pos + 8..pos + 8 + len) else {
            break;
        };
        if crc32fast::hash(body) != crc {
            break;
        }
        let group = u64::from_be_bytes(body[..8].try_into().expect("8 bytes"));
        let Ok(vote) = serde_json::from_slice::<typ::Vote>(&body[8..]) else {
            break;
        };
        votes.insert(group, vote);
        pos += 8 + len;
    }
    (votes, pos)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vote(term: u64, node: u64, committed: bool) -> typ::Vote {
        let mut v = openraft::Vote::new(term, node);
        if committed {
            v.commit();
        }
        v
    }

    #[tokio::test]
    async fn votes_survive_a_reopen_and_the_latest_of_each_group_wins() {
        let dir = tempfile::tempdir().unwrap();
        let j = VoteJournal::open(dir.path()).unwrap();
        let saves = (0..200u64).map(|g| {
            let j = j.clone();
            async move { j.save(g % 50, &vote(g, 1, g % 2 == 0)).await }
        });
        for r in futures::future::join_all(saves).await {
            r.unwrap();
        }
        drop(j);
        let j = VoteJournal::open(dir.path()).unwrap();
        for g in 0..50u64 {
            let last = 150 + g;
            assert_eq!(j.vote_of(g), Some(vote(last, 1, last % 2 == 0)));
        }
        assert_eq!(j.vote_of(50), None);
    }

    #[tokio::test]
    async fn a_torn_tail_is_cut_and_what_precedes_it_kept() {
        let dir = tempfile::tempdir().unwrap();
        let j = VoteJournal::open(dir.path()).unwrap();
        j.save(7, &vote(3, 2, false)).await.unwrap();
        j.save(8, &vote(4, 2, true)).await.unwrap();
        drop(j);
        let path = dir.path().join(FILE);
        let full = std::fs::metadata(&path).unwrap().len();
        // A crash in the middle of the second record, then garbage.
        let f = OpenOptions::new().write(true).open(&path).unwrap();
        f.set_len(full - 5).unwrap();
        let mut f = OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(&[0xff; 3]).unwrap();
        drop(f);
        let j = VoteJournal::open(dir.path()).unwrap();
        assert_eq!(j.vote_of(7), Some(vote(3, 2, false)));
        assert_eq!(j.vote_of(8), None);
        // Appends go after the intact records.
        j.save(8, &vote(5, 3, false)).await.unwrap();
        drop(j);
        let j = VoteJournal::open(dir.path()).unwrap();
        assert_eq!(j.vote_of(7), Some(vote(3, 2, false)));
        assert_eq!(j.vote_of(8), Some(vote(5, 3, false)));
    }

    #[test]
    fn a_flipped_byte_ends_the_records_read() {
        let mut bytes = Vec::new();
        encode(&mut bytes, 1, &vote(1, 1, false));
        let first = bytes.len();
        encode(&mut bytes, 2, &vote(2, 1, false));
        bytes[first + 12] ^= 1;
        let (votes, len) = read_records(&bytes);
        assert_eq!(len, first);
        assert_eq!(votes.len(), 1);
    }
}
