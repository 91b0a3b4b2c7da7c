//! One link per peer broker: every Raft group's AppendEntries and Vote to that broker
//! travel over one long-lived `Exchange` stream, batched.
//!
//! Callers queue their calls; the link's task takes everything waiting, up to
//! [`MAX_MESSAGE_BYTES`], into one message (many groups per message), and a reader
//! hands each answer to its caller as it arrives. A caller that stops waiting (openraft's
//! timeout) drops its answer: the stream is never reset for one call, so the server's
//! guard against rapid resets never closes the connection under everyone else.
//!
//! A stream that answers nothing for [`STALL`] while calls wait is taken for a dead
//! connection (a cut network keeps TCP open without a word): the link forgets the
//! connection, and the next call dials a fresh one, so traffic resumes within about a
//! second of a heal instead of after TCP's retransmission backoff.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::stream::{FuturesUnordered, StreamExt};
use rafka_proto::peer::raft_peer_client::RaftPeerClient;
use rafka_proto::peer::{self as pb, peer_call::Body};
use tokio::sync::{mpsc, oneshot};
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;
use tonic::Status;

/// Bytes of calls one message carries at most (one call always goes, whatever its size).
const MAX_MESSAGE_BYTES: usize = 4 << 20;

/// How long a stream may stay silent while calls wait before it is taken for dead.
pub(crate) const STALL: Duration = Duration::from_secs(3);

/// How often a stream's reader looks for a stall.
const STALL_CHECK: Duration = Duration::from_millis(500);

/// How long opening a stream (dialling included) may take.
const OPEN_TIMEOUT: Duration = Duration::from_secs(2);

/// While an open waits this long without an answer, another is started on a fresh
/// connection beside it (the first to answer wins): a dial made while the network was
/// cut never answers, and the link must not wait it out after the heal.
const REDIAL: Duration = Duration::from_millis(250);

/// Where a link gets its connection: the shared channel of its address, which it can
/// also throw away when the connection went silent.
pub(crate) trait Dialer: Send + Sync + 'static {
    /// The channel to the peer (a fresh one after [`Dialer::forget`]).
    fn channel(&self) -> Result<Channel, Status>;
    /// Drops the channel: the next [`Dialer::channel`] dials a new connection.
    fn forget(&self);
}

/// A call waiting for its answer: the JSON of openraft's result, or why there is none.
type Reply = oneshot::Sender<Result<Bytes, Status>>;

struct Call {
    body: Body,
    bytes: usize,
    reply: Reply,
}

/// What a link has done so far.
#[derive(Default, Debug)]
pub(crate) struct LinkStats {
    /// Calls sent.
    pub calls: AtomicU64,
    /// Messages they went in.
    pub messages: AtomicU64,
    /// Streams opened (the first, and one after each dead one).
    pub streams: AtomicU64,
    /// Streams given up for silence.
    pub stalls: AtomicU64,
}

/// The sending end of one peer's link; its task ends when the last clone is dropped.
#[derive(Clone)]
pub(crate) struct Link {
    queue: mpsc::UnboundedSender<Call>,
    // Read by the tests only until the metrics endpoint exports it.
    #[cfg_attr(not(test), allow(dead_code))]
    stats: Arc<LinkStats>,
}

impl Link {
    /// Starts the link's task (on the current runtime).
    pub(crate) fn start(dialer: Arc<dyn Dialer>) -> Self {
        let (queue, rx) = mpsc::unbounded_channel();
        let stats = Arc::new(LinkStats::default());
        tokio::spawn(run(dialer, rx, stats.clone()));
        Self { queue, stats }
    }

    /// What the link has done so far.
    #[cfg(test)]
    pub(crate) fn stats(&self) -> &LinkStats {
        &self.stats
    }

    /// Sends one call of `bytes` (about) and waits at most `timeout` for its answer.
    pub(crate) async fn call(
        &self,
        body: Body,
        bytes: usize,
        timeout: Duration,
    ) -> Result<Bytes, Status> {
        let (reply, answer) = oneshot::channel();
        self.queue
            .send(Call { body, bytes, reply })
            .map_err(|_| Status::unavailable("the peer link is closed"))?;
        match tokio::time::timeout(timeout, answer).await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => Err(Status::unavailable("the peer link dropped the call")),
            Err(_) => Err(Status::deadline_exceeded(format!(
                "no answer from the peer within {timeout:?}"
            ))),
        }
    }
}

/// The link's task: batches waiting calls onto the current stream, opening one when
/// there is none (or the last one died).
async fn run(
    dialer: Arc<dyn Dialer>,
    mut queue: mpsc::UnboundedReceiver<Call>,
    stats: Arc<LinkStats>,
) {
    let mut stream: Option<Stream> = None;
    let mut next_id = 0u64;
    while let Some(first) = queue.recv().await {
        let mut bytes = first.bytes;
        let mut calls = vec![first];
        while bytes < MAX_MESSAGE_BYTES {
            match queue.try_recv() {
                Ok(call) => {
                    bytes += call.bytes;
                    calls.push(call);
                }
                Err(_) => break,
            }
        }
        // Callers that gave up while their calls waited need no message.
        calls.retain(|c| !c.reply.is_closed());
        if calls.is_empty() {
            continue;
        }
        if stream.as_ref().is_none_or(|s| s.dead.is_cancelled()) {
            stream = None;
            match Stream::open(&dialer, &stats).await {
                Ok(s) => {
                    stats.streams.fetch_add(1, Ordering::Relaxed);
                    stream = Some(s);
                }
                Err(status) => {
                    for call in calls {
                        let _ = call.reply.send(Err(status.clone()));
                    }
                    continue;
                }
            }
        }
        let Some(s) = stream.as_ref() else { continue };
        let message = s.register(calls, &mut next_id);
        stats.messages.fetch_add(1, Ordering::Relaxed);
        stats
            .calls
            .fetch_add(message.calls.len() as u64, Ordering::Relaxed);
        tokio::select! {
            sent = s.out.send(message) => {
                if sent.is_err() {
                    s.dead.cancel();
                }
            }
            // A dead connection's flow control may never let the message out.
            _ = s.dead.cancelled() => {}
        }
    }
}

/// Calls sent on a stream and not answered yet, by id.
#[derive(Default)]
struct Pending {
    calls: HashMap<u64, (Instant, Reply)>,
    /// When the stream last delivered an answer (or opened).
    heard: Option<Instant>,
}

/// One open `Exchange` stream.
struct Stream {
    out: mpsc::Sender<pb::PeerCalls>,
    pending: Arc<Mutex<Pending>>,
    /// Cancelled when the stream ended, failed or stalled; its pending calls have failed.
    dead: CancellationToken,
}

impl Stream {
    /// Opens a stream, dialling again beside a silent attempt every [`REDIAL`], for at
    /// most [`OPEN_TIMEOUT`]. Fails at once when the peer refuses.
    async fn open(dialer: &Arc<dyn Dialer>, stats: &Arc<LinkStats>) -> Result<Self, Status> {
        let started = Instant::now();
        let mut attempts = FuturesUnordered::new();
        attempts.push(attempt(dialer.channel()?));
        let mut redial = tokio::time::interval_at((started + REDIAL).into(), REDIAL);
        let (out, inbound) = loop {
            tokio::select! {
                done = attempts.next() => match done {
                    Some(Ok(opened)) => break opened,
                    Some(Err(status)) if attempts.is_empty() => return Err(status),
                    Some(Err(_)) | None => {}
                },
                _ = redial.tick() => {
                    // Whatever these connections wait on, a fresh one may not.
                    dialer.forget();
                    if started.elapsed() >= OPEN_TIMEOUT {
                        return Err(Status::unavailable(format!(
                            "no peer stream within {OPEN_TIMEOUT:?}"
                        )));
                    }
                    attempts.push(attempt(dialer.channel()?));
                }
            }
        };
        let pending = Arc::new(Mutex::new(Pending {
            calls: HashMap::new(),
            heard: Some(Instant::now()),
        }));
        let dead = CancellationToken::new();
        tokio::spawn(read(
            inbound,
            pending.clone(),
            dead.clone(),
            dialer.clone(),
            stats.clone(),
        ));
        Ok(Self { out, pending, dead })
    }

    /// Numbers `calls`, notes them as pending and returns the message that carries them.
    fn register(&self, calls: Vec<Call>, next_id: &mut u64) -> pb::PeerCalls {
        let now = Instant::now();
        let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        let calls = calls
            .into_iter()
            .map(|call| {
                *next_id += 1;
                pending.calls.insert(*next_id, (now, call.reply));
                pb::PeerCall {
                    id: *next_id,
                    body: Some(call.body),
                }
            })
            .collect();
        pb::PeerCalls { calls }
    }
}

/// One try at opening an `Exchange` stream on `channel`: its sending end and its answers.
async fn attempt(
    channel: Channel,
) -> Result<
    (
        mpsc::Sender<pb::PeerCalls>,
        tonic::Streaming<pb::PeerAnswers>,
    ),
    Status,
> {
    let (out, rx) = mpsc::channel(64);
    let mut client = RaftPeerClient::new(channel)
        .max_decoding_message_size(usize::MAX)
        .max_encoding_message_size(usize::MAX);
    let response = client.exchange(ReceiverStream::new(rx)).await?;
    Ok((out, response.into_inner()))
}

/// Hands answers to their callers until the stream ends, fails or stalls; then fails
/// every call still pending and marks the stream dead.
async fn read(
    mut inbound: tonic::Streaming<pb::PeerAnswers>,
    pending: Arc<Mutex<Pending>>,
    dead: CancellationToken,
    dialer: Arc<dyn Dialer>,
    stats: Arc<LinkStats>,
) {
    let mut check = tokio::time::interval(STALL_CHECK);
    let why = loop {
        tokio::select! {
            message = inbound.message() => match message {
                Ok(Some(message)) => deliver(&pending, message),
                Ok(None) => break Status::unavailable("the peer closed the stream"),
                Err(status) => break status,
            },
            _ = dead.cancelled() => break Status::unavailable("the peer stream was dropped"),
            _ = check.tick() => {
                if stalled(&pending, Instant::now()) {
                    dialer.forget();
                    stats.stalls.fetch_add(1, Ordering::Relaxed);
                    break Status::unavailable(format!(
                        "the peer answered nothing for {STALL:?}: connection dropped"
                    ));
                }
            }
        }
    };
    dead.cancel();
    let calls = std::mem::take(&mut pending.lock().unwrap_or_else(|e| e.into_inner()).calls);
    for (_, (_, reply)) in calls {
        let _ = reply.send(Err(why.clone()));
    }
}

fn deliver(pending: &Mutex<Pending>, message: pb::PeerAnswers) {
    let mut pending = pending.lock().unwrap_or_else(|e| e.into_inner());
    pending.heard = Some(Instant::now());
    for answer in message.answers {
        let Some((sent, reply)) = pending.calls.remove(&answer.id) else {
            continue;
        };
        crate::metrics::STAGES.peer_call.since(sent);
        let result = if answer.code == 0 {
            Ok(answer.json)
        } else {
            Err(Status::new(tonic::Code::from(answer.code), answer.error))
        };
        let _ = reply.send(result);
    }
}

/// True when a call has waited longer than [`STALL`] and nothing was heard since it was
/// sent. Also forgets old calls whose callers gave up, so they cannot pile up.
fn stalled(pending: &Mutex<Pending>, now: Instant) -> bool {
    let mut pending = pending.lock().unwrap_or_else(|e| e.into_inner());
    let heard = pending.heard;
    let mut stalled = false;
    pending.calls.retain(|_, (sent, reply)| {
        let old = now.duration_since(*sent) > STALL;
        if old && heard.is_none_or(|h| h < *sent) {
            stalled = true;
        }
        // A call its caller gave up on still counts until it is old enough to judge.
        !(old && reply.is_closed())
    });
    stalled
}

#[cfg(test)]
#[path = "link_tests.rs"]
mod tests;
