//! Faults in the active segment's pages ahead of the writer, on a background thread.
//!
//! A first write to a page of a file mapping costs a page fault that allocates and zeroes
//! the page; taken inline, those faults halve the append rate. `MADV_POPULATE_WRITE`
//! from another thread takes them while the writer copies (as Chronicle Queue's
//! "pretoucher" does). It only changes when pages are faulted in, never their contents,
//! so it needs no coordination with the writer; if the queue is full or the call fails
//! (an old kernel), the writer simply faults the pages itself.

use std::sync::mpsc::{sync_channel, SyncSender};
use std::sync::{Arc, OnceLock};

use memmap2::{Advice, MmapRaw};

struct Job {
    map: Arc<MmapRaw>,
    from: usize,
    len: usize,
}

fn queue() -> Option<&'static SyncSender<Job>> {
    static QUEUE: OnceLock<Option<SyncSender<Job>>> = OnceLock::new();
    QUEUE
        .get_or_init(|| {
            let (tx, rx) = sync_channel::<Job>(256);
            std::thread::Builder::new()
                .name("rafka-pretouch".into())
                .spawn(move || {
                    for job in rx {
                        // Past a trimmed file's end this fails with EFAULT, never SIGBUS.
                        let _ = job
                            .map
                            .advise_range(Advice::PopulateWrite, job.from, job.len);
                    }
                })
                .ok()
                .map(|_| tx)
        })
        .as_ref()
}

/// Asks for `map[from..from + len]` to be faulted in writable; false if the queue is full.
pub(crate) fn request(map: &Arc<MmapRaw>, from: usize, len: usize) -> bool {
    queue().is_some_and(|q| {
        q.try_send(Job {
            map: map.clone(),
            from,
            len,
        })
        .is_ok()
    })
}
