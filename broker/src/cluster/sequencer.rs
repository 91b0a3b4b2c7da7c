//! The partition leader's side of idempotent produce: each batch of a producer id is
//! checked against the producers' state (folded from committed batches, see
//! `producers`) and the batches this leader accepted but has not yet seen committed;
//! in-sequence batches are proposed in order, duplicates answered with the original's
//! offsets, and batches ahead of a missing one wait a little for it (another request
//! or a retry still on its way) before a retriable out-of-order answer.

use std::collections::HashMap;
use std::time::Duration;

use rafka_proto::batch::{BatchHeader, ValidatedBatch};
use tokio::time::Instant;

use super::producers::{last_seq, Verdict};
use super::replica::{ReplicatedPartition, COMMIT_TIMEOUT};
use crate::error::BrokerError;
use crate::raft::types::{typ, AppendResult, BatchData};

/// The base offset answered for a batch written before whose offset is no longer known.
pub const UNKNOWN_OFFSET: u64 = u64::MAX;

/// How long a batch ahead of a missing one waits for it before answering out of order.
const GAP_WAIT: Duration = Duration::from_secs(1);

/// How long a produce reaching a new leader waits for the entries of earlier terms to
/// be applied (the producers' state is complete only then).
const READY_WAIT: Duration = Duration::from_secs(2);

/// Batches accepted on this leader and not yet known committed.
#[derive(Default)]
pub struct Sequencer {
    pending: tokio::sync::Mutex<Pending>,
    /// Woken when a batch is accepted or its commit is answered.
    changed: tokio::sync::Notify,
}

#[derive(Default)]
struct Pending {
    /// The term these were accepted in; a new term starts afresh.
    term: u64,
    /// Producer id → (epoch, last sequence accepted).
    last: HashMap<i64, (i16, i32)>,
}

impl ReplicatedPartition {
    /// Appends one batch of an idempotent producer (acks=all): at most once, in its
    /// producer's sequence order.
    pub(super) async fn append_idempotent(
        &self,
        batch: ValidatedBatch,
    ) -> Result<AppendResult, BrokerError> {
        let h = BatchHeader::parse(batch.bytes()).map_err(|e| {
            BrokerError::InvalidRequest(format!("{}-{}: {e}", self.topic, self.partition))
        })?;
        let (pid, epoch, first) = (h.producer_id, h.producer_epoch, h.base_sequence);
        let last = last_seq(first, h.record_count);
        let name = || {
            format!(
                "{}-{}: producer {pid} (epoch {epoch}), sequences {first}..={last}",
                self.topic, self.partition
            )
        };
        let deadline = Instant::now() + GAP_WAIT;
        loop {
            let term = self.wait_ready().await?;
            let changed = self.sequencer.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            let mut pending = self.sequencer.pending.lock().await;
            if pending.term != term {
                pending.term = term;
                pending.last.clear();
            }
            let mine = pending.last.get(&pid).copied();
            let (verdict, committed) = self.sm.with_app(|p| {
                (
                    p.check(pid, epoch, first, last, mine),
                    p.check(pid, epoch, first, last, None),
                )
            });
            // In flight: accepted here, not committed yet (a retry of a batch still in
            // flight); its commit answers it as a duplicate.
            let in_flight = mine.is_some()
                && matches!(verdict, Verdict::TooOld)
                && matches!(committed, Verdict::Next | Verdict::Gap);
            let wait = match verdict {
                Verdict::Duplicate(b) => {
                    return Ok(AppendResult {
                        base_offset: b.base_offset,
                        next_offset: b.next_offset,
                        error: None,
                    })
                }
                Verdict::Next => {
                    let proposed_at = std::time::Instant::now();
                    pending.last.insert(pid, (epoch, last));
                    let proposed = self
                        .raft
                        .client_write_ff(BatchData(batch.bytes().clone()))
                        .await;
                    let answer = match proposed {
                        Ok(rx) => rx,
                        Err(e) => {
                            restore(&mut pending.last, pid, mine);
                            return Err(BrokerError::Unavailable(e.to_string()));
                        }
                    };
                    drop(pending);
                    self.sequencer.changed.notify_waiters();
                    let answer = tokio::select! {
                        answer = tokio::time::timeout(COMMIT_TIMEOUT, answer) => answer,
                        () = self.until_fenced() => {
                            self.sequencer.changed.notify_waiters();
                            return Err(self.not_leader(None));
                        }
                    };
                    crate::metrics::STAGES.raft_commit.since(proposed_at);
                    self.sequencer.changed.notify_waiters();
                    return match answer {
                        Err(_) => Err(BrokerError::Unavailable(format!(
                            "{}: not committed within {COMMIT_TIMEOUT:?} (no quorum reachable?)",
                            name()
                        ))),
                        Ok(Err(_)) => {
                            Err(BrokerError::Unavailable("the Raft group stopped".into()))
                        }
                        Ok(Ok(Ok(r))) => Ok(r.data),
                        Ok(Ok(Err(typ::ClientWriteError::ForwardToLeader(f)))) => {
                            Err(self.not_leader(f.leader_id.or_else(|| self.leader())))
                        }
                        Ok(Ok(Err(e))) => Err(BrokerError::Unavailable(e.to_string())),
                    };
                }
                Verdict::Fenced => {
                    return Err(BrokerError::Fenced {
                        code: "PRODUCER_FENCED",
                        message: format!("{}: a newer epoch of the producer wrote", name()),
                    })
                }
                Verdict::TooOld if !in_flight => {
                    // At or below the producer's last committed sequence: sequences are
                    // accepted only in order, so this batch was written before (a retry
                    // whose answer was lost while later batches went on). Its offsets
                    // have left the window: answered as written, offset unknown (Kafka's
                    // DUPLICATE_SEQUENCE_NUMBER, which its producer takes as success).
                    return Ok(AppendResult {
                        base_offset: UNKNOWN_OFFSET,
                        next_offset: UNKNOWN_OFFSET,
                        error: None,
                    });
                }
                Verdict::TooOld | Verdict::Gap | Verdict::UnknownProducer => verdict,
            };
            drop(pending);
            let now = Instant::now();
            if now >= deadline {
                // Retriable either way: the earlier batches may still come (a retry
                // after a leader change); an unknown producer may also have expired
                // (idle past `producers::EXPIRATION_MS`), and then its batches fail once
                // their delivery timeout passes (Kafka's epoch bump, KIP-360, is not done).
                return Err(BrokerError::OutOfOrderSequence(match wait {
                    Verdict::UnknownProducer => format!(
                        "{}: the producer is unknown here and the batch does not start at sequence 0 (its earlier batches not in yet, or the producer expired)",
                        name()
                    ),
                    _ => format!("{}: an earlier batch of the producer is not in yet", name()),
                }));
            }
            let _ = tokio::time::timeout(deadline - now, changed).await;
        }
    }

    /// Waits until this replica leads and has applied an entry of its own term (so the
    /// producers' state holds every batch of earlier terms); returns the term.
    async fn wait_ready(&self) -> Result<u64, BrokerError> {
        let ready = |m: &openraft::RaftMetrics<u64, openraft::BasicNode>| {
            m.state.is_leader()
                && m.last_applied
                    .is_some_and(|l| l.leader_id.term == m.current_term)
        };
        {
            let m = self.raft.metrics();
            let m = m.borrow();
            if ready(&m) {
                return Ok(m.current_term);
            }
        }
        if !self.is_leader() {
            return Err(self.not_leader(self.leader()));
        }
        let waited = self
            .raft
            .wait(Some(READY_WAIT))
            .metrics(
                |m| ready(m) || !m.state.is_leader(),
                "leader with its term applied",
            )
            .await;
        match waited {
            Ok(m) if ready(&m) => Ok(m.current_term),
            Ok(_) => Err(self.not_leader(self.leader())),
            Err(_) => Err(BrokerError::Unavailable(format!(
                "{}-{}: the new leader has not applied its term's first entry yet",
                self.topic, self.partition
            ))),
        }
    }
}

/// Puts a producer's pending entry back as it was.
fn restore(last: &mut HashMap<i64, (i16, i32)>, pid: i64, was: Option<(i16, i32)>) {
    match was {
        Some(v) => {
            last.insert(pid, v);
        }
        None => {
            last.remove(&pid);
        }
    }
}
