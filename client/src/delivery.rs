//! What the producer hands back per record, shared by a batch's records: one outcome
//! per batch (no channel or allocation per record), and the batch's hold on the
//! producer's buffer memory, released once when the batch is done.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, OnceLock};
use std::task::{Context, Poll, Waker};

use tokio::sync::Semaphore;

use crate::{ClientError, RecordMetadata};

/// Where a batch landed: its base offset, [`RecordMetadata::UNKNOWN_OFFSET`] under
/// `acks=none`, or why it failed.
pub(crate) type BatchResult = Result<u64, ClientError>;

/// One batch's outcome and the wakers of the records' futures waiting for it.
#[derive(Default)]
struct Outcome {
    result: OnceLock<BatchResult>,
    wakers: Mutex<Vec<Waker>>,
}

impl Outcome {
    fn complete(&self, result: BatchResult) {
        if self.result.set(result).is_ok() {
            let wakers =
                std::mem::take(&mut *self.wakers.lock().unwrap_or_else(|e| e.into_inner()));
            for w in wakers {
                w.wake();
            }
        }
    }
}

/// The producer's side of a batch's outcome: completes it once; dropped without
/// completing (the producer went away), it fails the batch's records as closed.
pub(crate) struct Completion(Arc<Outcome>);

impl Completion {
    pub(crate) fn new() -> Self {
        Self(Arc::default())
    }

    /// The future of the record at `delta` in the batch.
    pub(crate) fn record(&self, partition: u32, delta: i32, timestamp: i64) -> DeliveryFuture {
        DeliveryFuture {
            outcome: self.0.clone(),
            partition,
            delta,
            timestamp,
            slot: None,
        }
    }

    /// Resolves every record of the batch.
    pub(crate) fn complete(self, result: BatchResult) {
        self.0.complete(result);
    }
}

impl Drop for Completion {
    fn drop(&mut self) {
        self.0.complete(Err(ClientError::Closed));
    }
}

/// Resolves when the record is acknowledged (or fails).
pub struct DeliveryFuture {
    outcome: Arc<Outcome>,
    partition: u32,
    delta: i32,
    timestamp: i64,
    /// Where this future's waker sits in the outcome's list, once registered.
    slot: Option<usize>,
}

impl DeliveryFuture {
    fn ready(&self, result: &BatchResult) -> Poll<Result<RecordMetadata, ClientError>> {
        Poll::Ready(match result {
            Ok(base) => Ok(RecordMetadata {
                partition: self.partition,
                offset: match *base {
                    RecordMetadata::UNKNOWN_OFFSET => RecordMetadata::UNKNOWN_OFFSET,
                    base => base + self.delta as u64,
                },
                timestamp: self.timestamp,
            }),
            Err(e) => Err(e.clone()),
        })
    }
}

impl Future for DeliveryFuture {
    type Output = Result<RecordMetadata, ClientError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        if let Some(r) = self.outcome.result.get() {
            return self.ready(r);
        }
        let outcome = self.outcome.clone();
        let mut wakers = outcome.wakers.lock().unwrap_or_else(|e| e.into_inner());
        // Checked again under the lock: `complete` sets the result before it takes
        // the wakers, so either it is visible here or this waker is taken and woken.
        if let Some(r) = outcome.result.get() {
            return self.ready(r);
        }
        match self.slot {
            Some(i) if !wakers[i].will_wake(cx.waker()) => wakers[i] = cx.waker().clone(),
            Some(_) => {}
            None => {
                self.slot = Some(wakers.len());
                wakers.push(cx.waker().clone());
            }
        }
        Poll::Pending
    }
}

/// Bytes of the producer's buffer memory held until dropped (a batch's records).
pub(crate) struct Reservation {
    memory: Arc<Semaphore>,
    bytes: usize,
}

/// One record's bytes of buffer memory, held until absorbed into its batch's
/// [`Reservation`] or dropped (the record was refused); borrows the semaphore, so taking
/// it costs no reference count.
pub(crate) struct Held<'a> {
    memory: &'a Semaphore,
    bytes: usize,
}

impl Reservation {
    /// Holds `bytes` of `memory`, waiting while it is full.
    pub(crate) async fn acquire(memory: &Semaphore, bytes: usize) -> Result<Held<'_>, ClientError> {
        let n = bytes as u32;
        let permit = match memory.try_acquire_many(n) {
            Ok(p) => p,
            Err(_) => memory
                .acquire_many(n)
                .await
                .map_err(|_| ClientError::Closed)?,
        };
        permit.forget();
        Ok(Held { memory, bytes })
    }

    /// An empty reservation of `memory`.
    pub(crate) fn empty(memory: &Arc<Semaphore>) -> Self {
        Self {
            memory: memory.clone(),
            bytes: 0,
        }
    }

    /// Takes over what `held` holds.
    pub(crate) fn absorb(&mut self, mut held: Held<'_>) {
        self.bytes += std::mem::take(&mut held.bytes);
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        if self.bytes > 0 {
            self.memory.add_permits(self.bytes);
        }
    }
}

impl Drop for Held<'_> {
    fn drop(&mut self) {
        if self.bytes > 0 {
            self.memory.add_permits(self.bytes);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn every_record_of_a_batch_resolves_from_its_one_outcome() {
        let c = Completion::new();
        let futures: Vec<_> = (0..3).map(|d| c.record(7, d, 100 + d as i64)).collect();
        let waiting = tokio::spawn(async move {
            let mut out = Vec::new();
            for f in futures {
                out.push(f.await.unwrap());
            }
            out
        });
        tokio::task::yield_now().await;
        c.complete(Ok(40));
        let got = waiting.await.unwrap();
        assert_eq!(
            got.iter()
                .map(|m| (m.partition, m.offset, m.timestamp))
                .collect::<Vec<_>>(),
            vec![(7, 40, 100), (7, 41, 101), (7, 42, 102)]
        );
        let c = Completion::new();
        let f = c.record(0, 5, 0);
        c.complete(Ok(RecordMetadata::UNKNOWN_OFFSET));
        assert_eq!(f.await.unwrap().offset, RecordMetadata::UNKNOWN_OFFSET);
    }

    #[tokio::test]
    async fn a_batch_dropped_unfinished_fails_its_records_as_closed() {
        let c = Completion::new();
        let f = c.record(0, 0, 0);
        drop(c);
        assert!(matches!(f.await, Err(ClientError::Closed)));
    }

    #[tokio::test]
    async fn memory_is_held_until_the_reservation_is_dropped() {
        let memory = Arc::new(Semaphore::new(10));
        let mut all = Reservation::empty(&memory);
        all.absorb(Reservation::acquire(&memory, 4).await.unwrap());
        all.absorb(Reservation::acquire(&memory, 6).await.unwrap());
        assert_eq!(memory.available_permits(), 0);
        let more = tokio::spawn({
            let memory = memory.clone();
            async move { Reservation::acquire(&memory, 3).await.map(|h| h.bytes) }
        });
        tokio::task::yield_now().await;
        assert!(!more.is_finished());
        drop(all);
        assert_eq!(more.await.unwrap().unwrap(), 3);
        assert_eq!(memory.available_permits(), 10);
    }
}
