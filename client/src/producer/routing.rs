//! Sends a request's partitions to their leaders and retries the ones that failed.
//!
//! Each leader's answer is handled as it arrives: its failed partitions wait out their
//! own backoff (and ask the metadata again where needed) and are routed anew, while the
//! other leaders' requests go on. A broker holds a request while one of its partitions
//! elects (up to a couple of seconds), and before, every other leader's retries waited
//! for that answer too: after a restart of thousands of partitions, writes completed in
//! rounds of that wait.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use bytes::Bytes;
use futures::stream::{FuturesUnordered, StreamExt};
use rafka_proto::v1;
use tokio::time::Instant;

use super::{Inner, PartitionResult};
use crate::ClientError;

/// The wait before following a redirect again: a new leader is usually elected within
/// milliseconds.
const REDIRECT_BACKOFF: Duration = Duration::from_millis(10);
/// How long a produce request may go unanswered before the client starts asking the
/// other brokers whether its partitions are led elsewhere now; and how often it asks
/// then. A stopped leader (SIGSTOP, a stalled machine) answers nothing and the rest of
/// the cluster elects another within ~2 s; waiting out the request timeout (30 s)
/// would leave its partitions unwritable that long. Kafka's producer waits; an abandoned
/// request is retried as after a timeout (an idempotent producer's retry is stored once).
const HEDGE_AFTER: Duration = Duration::from_millis(750);
const HEDGE_EVERY: Duration = Duration::from_millis(250);

/// Partitions and their records.
type Parts = Vec<(u32, Bytes)>;

/// What a retry waits for first, the least to the most.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Then {
    /// Nothing: a first redirect is followed at once.
    Now,
    /// A short wait (an election settling).
    Wait,
    /// The backoff, then the metadata asked again.
    Refresh,
}

/// One finished piece of work.
enum Step {
    /// A leader answered, or its request failed.
    Answered {
        sent_to: u32,
        parts: Parts,
        answer: Result<v1::ProduceResponse, ClientError>,
        attempt: u32,
        /// The request was given up because its partitions are led elsewhere now (the
        /// metadata is fresh: route again at once).
        moved: bool,
    },
    /// Failed partitions waited out their backoff: route them again.
    Ready { parts: Parts, attempt: u32 },
}

type StepFuture<'a> = Pin<Box<dyn Future<Output = Step> + Send + 'a>>;

/// Sends each partition's records to its leader (one request per leader), following
/// redirects and retrying retriable failures; hands each partition's outcome to `done` as
/// soon as it is known. A partition is in one request or one wait at a time, so its
/// records are never reordered. A failed partition for which `superseded` holds is not
/// retried (its producer moved on to a new producer id).
pub(super) async fn produce_routed(
    inner: &Inner,
    topic: &str,
    pending: Parts,
    superseded: impl Fn(u32) -> bool,
    mut done: impl FnMut(u32, PartitionResult),
) {
    let deadline = Instant::now() + inner.config.delivery_timeout;
    let mut steps: FuturesUnordered<StepFuture<'_>> = FuturesUnordered::new();
    route(inner, topic, pending, 0, &mut steps);
    while let Some(step) = steps.next().await {
        let (sent_to, parts, answer, attempt, moved) = match step {
            Step::Ready { parts, attempt } => {
                route(inner, topic, parts, attempt, &mut steps);
                continue;
            }
            Step::Answered {
                sent_to,
                parts,
                answer,
                attempt,
                moved,
            } => (sent_to, parts, answer, attempt, moved),
        };
        let mut retry = Vec::new();
        let mut then = Then::Now;
        let mut last = None;
        for (e, parts) in failures(topic, parts, answer, &mut done) {
            let (parts, give_up): (Parts, Parts) =
                parts.into_iter().partition(|(p, _)| !superseded(*p));
            for (p, _) in give_up {
                done(
                    p,
                    Err(ClientError::RetriesExhausted {
                        attempts: attempt + 1,
                        last: Box::new(e.clone()),
                    }),
                );
            }
            if parts.is_empty() {
                continue;
            }
            if e.is_retriable() && attempt < inner.config.retries && Instant::now() < deadline {
                then = then.max(match &e {
                    // A redirect to another broker: go there. The first time at once,
                    // the second after a short wait (an election settling); from then on
                    // every other retry asks the metadata instead: two brokers may go on
                    // naming each other (stale votes after a restart), and the metadata
                    // may be the stale one (a broker that left the partition names its
                    // preferred leader), so neither source alone is trusted.
                    ClientError::NotLeader {
                        leader: Some(l), ..
                    } if *l != sent_to => {
                        for (p, _) in &parts {
                            inner.cluster.set_leader(topic, *p, *l);
                        }
                        match attempt {
                            0 => Then::Now,
                            a if a % 2 == 1 => Then::Wait,
                            _ => Then::Refresh,
                        }
                    }
                    // An idempotent batch ahead of an earlier one still on its way (the
                    // leader waited for it a while): the earlier one is being retried.
                    ClientError::Broker {
                        code: tonic::Code::Aborted,
                        ..
                    } => Then::Wait,
                    _ if moved => Then::Now,
                    _ => Then::Refresh,
                });
                tracing::debug!(topic, attempt, "produce failed, retrying: {e}");
                last = Some(e);
                retry.extend(parts);
            } else {
                let e = if attempt > 0 {
                    ClientError::RetriesExhausted {
                        attempts: attempt + 1,
                        last: Box::new(e),
                    }
                } else {
                    e
                };
                for (p, _) in parts {
                    done(p, Err(e.clone()));
                }
            }
        }
        if !retry.is_empty() {
            steps.push(Box::pin(wait_then(
                inner, topic, retry, attempt, then, sent_to, last,
            )));
        }
    }
}

/// Groups partitions by their leader as known now and sends one request to each.
fn route<'a>(
    inner: &'a Inner,
    topic: &'a str,
    parts: Parts,
    attempt: u32,
    steps: &mut FuturesUnordered<StepFuture<'a>>,
) {
    let mut by_leader: BTreeMap<u32, Parts> = BTreeMap::new();
    for (p, records) in parts {
        by_leader
            .entry(inner.cluster.leader(topic, p))
            .or_default()
            .push((p, records));
    }
    for (leader, parts) in by_leader {
        steps.push(Box::pin(send(inner, topic, leader, parts, attempt)));
    }
}

/// One produce request to `leader` (0: any broker, the leader being unknown).
async fn send(inner: &Inner, topic: &str, leader: u32, parts: Parts, attempt: u32) -> Step {
    let request = v1::ProduceRequest {
        topic: topic.to_string(),
        acks: inner.config.acks.wire() as i32,
        partitions: parts
            .iter()
            .map(|(p, records)| v1::PartitionRecords {
                partition: *p,
                records: records.clone(),
            })
            .collect(),
    };
    let channel = match leader {
        0 => inner.cluster.default_channel(),
        id => inner.cluster.channel_at(id),
    };
    let timeout = inner.config.request_timeout;
    let sent = Instant::now();
    let call = crate::direct::produce(channel, &request);
    tokio::pin!(call);
    let mut check = sent + HEDGE_AFTER;
    let (answer, moved) = loop {
        tokio::select! {
            answer = &mut call => {
                break (answer.map(|r| r.into_inner()).map_err(ClientError::from), false);
            }
            () = tokio::time::sleep_until(check.min(sent + timeout)) => {}
        }
        if sent.elapsed() >= timeout {
            tracing::warn!(
                topic,
                leader,
                "produce request unanswered within {timeout:?}; retrying"
            );
            break (
                Err(ClientError::Broker {
                    code: tonic::Code::DeadlineExceeded,
                    message: format!("{topic}: no answer from broker {leader} within {timeout:?}"),
                }),
                false,
            );
        }
        check = Instant::now() + HEDGE_EVERY;
        if leader == 0 {
            continue;
        }
        inner
            .cluster
            .refresh_if_stale(topic, leader, HEDGE_EVERY)
            .await;
        let elsewhere = parts.iter().find_map(|(p, _)| {
            let now = inner.cluster.leader(topic, *p);
            (now != 0 && now != leader).then_some((*p, now))
        });
        if let Some((p, now)) = elsewhere {
            tracing::info!(
                topic,
                leader,
                partition = p,
                "broker {leader} silent for {:?} and partition {p} led by broker {now} now: sending again there",
                sent.elapsed()
            );
            break (
                Err(ClientError::NotLeader {
                    leader: None,
                    message: format!(
                        "{topic}-{p}: broker {leader} silent for {:?}, broker {now} leads now",
                        sent.elapsed()
                    ),
                }),
                true,
            );
        }
    };
    Step::Answered {
        sent_to: leader,
        parts,
        answer,
        attempt,
        moved,
    }
}

/// Waits before attempt `attempt + 1` of `parts` as `then` says.
async fn wait_then(
    inner: &Inner,
    topic: &str,
    parts: Parts,
    attempt: u32,
    then: Then,
    sent_to: u32,
    last: Option<ClientError>,
) -> Step {
    match then {
        Then::Now => {}
        Then::Wait => tokio::time::sleep(REDIRECT_BACKOFF.min(inner.config.retry_backoff)).await,
        Then::Refresh => {
            let backoff = inner
                .config
                .retry_backoff
                .saturating_mul(1 << (attempt / 3).min(10))
                .min(Duration::from_secs(1));
            tokio::time::sleep(backoff).await;
            let avoid = (sent_to != 0).then_some(sent_to);
            if let Err(e) = inner.cluster.refresh_avoiding(topic, avoid).await {
                tracing::debug!(topic, "metadata refresh failed: {e}; last error: {last:?}");
            }
        }
    }
    Step::Ready {
        parts,
        attempt: attempt + 1,
    }
}

/// Splits an answer into outcomes: each partition appended goes to `done`; the failed
/// ones come back with their error (a failed request fails all its partitions: nothing
/// was appended).
fn failures(
    topic: &str,
    parts: Parts,
    answer: Result<v1::ProduceResponse, ClientError>,
    done: &mut impl FnMut(u32, PartitionResult),
) -> Vec<(ClientError, Parts)> {
    let resp = match answer {
        Ok(resp) => resp,
        Err(e) => return vec![(e, parts)],
    };
    let mut records: HashMap<u32, Bytes> = parts.into_iter().collect();
    let mut failed = Vec::new();
    for r in resp.partitions {
        match r.error.clone() {
            None => {
                records.remove(&r.partition);
                done(r.partition, Ok(r));
            }
            Some(e) => {
                if let Some(bytes) = records.remove(&r.partition) {
                    failed.push((partition_error(e), vec![(r.partition, bytes)]));
                }
            }
        }
    }
    // A partition the broker did not answer for was not appended.
    for (p, bytes) in records {
        let e = ClientError::Broker {
            code: tonic::Code::Internal,
            message: format!("{topic}-{p}: missing from the produce response"),
        };
        failed.push((e, vec![(p, bytes)]));
    }
    failed
}

/// A partition's error in a produce response, as the client error its own status
/// would have been.
fn partition_error(e: v1::PartitionError) -> ClientError {
    if e.not_leader {
        return ClientError::NotLeader {
            leader: (e.leader != 0).then_some(e.leader),
            message: e.message,
        };
    }
    ClientError::Broker {
        code: tonic::Code::from_i32(e.code),
        message: e.message,
    }
}
