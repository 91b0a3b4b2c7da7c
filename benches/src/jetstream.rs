//! The peer: the workload runner's driver for NATS JetStream (`async-nats`).
//!
//! How a workload maps onto JetStream:
//!
//! - **Topic → stream.** One stream per topic, named after it, file storage,
//!   `num_replicas` = the workload's replication factor, subjects `<topic>.*`.
//! - **Partition → subject** `<topic>.<partition>`: a keyed record goes to
//!   murmur2(key) % partitions (the partition rafka's producer picks), a keyless one
//!   round-robin (JetStream has no client batching for a sticky partitioner to serve).
//! - **Producer → connection + publisher.** `Context::publish` returns an acknowledgement
//!   future as soon as the message is written to the connection; the runner keeps up to
//!   `--js-max-inflight` of them outstanding and awaits them in order in a separate task,
//!   as it does rafka's delivery futures. JetStream acknowledges once the stream's Raft
//!   quorum has the message (one server for R1), so every `acks` setting runs as
//!   `acks=all`; durability per message follows the servers' `sync_interval`
//!   (`always`: fsync before the acknowledgement), which `scripts/compare.sh` sets from the
//!   topic's flush policy.
//! - **Consumer group member → durable pull consumer** on its own connection, filtered to
//!   the partitions' subjects dealt to it (partition p to member p % consumers, like a
//!   range of partitions in a Kafka group; no filter when one member has them all), with
//!   `AckPolicy::None`: the server does not track or redeliver individual messages, the
//!   cheapest delivery JetStream has and the counterpart of a Kafka consumer whose
//!   position is a committed offset. `DeliverPolicy::New` for live workloads,
//!   `DeliverPolicy::All` after a backlog. Messages come through `Consumer::stream`, which
//!   keeps pull requests of `--js-pull-batch` messages outstanding.

use std::time::Duration;

use anyhow::Context as _;
use async_nats::jetstream::consumer::{pull, AckPolicy, DeliverPolicy, PullConsumer};
use async_nats::jetstream::context::ContextBuilder;
use async_nats::jetstream::stream::{self, Compression, StorageType};
use async_nats::jetstream::{self, Context};
use async_nats::Subject;
use bytes::Bytes;
use futures::stream::ReadyChunks;
use futures::{FutureExt, StreamExt};
use rafka_client::partitioner::partition_for_key;

use crate::workload::{sent_at, Driver, RecordReceiver, RecordSender, Workload};

/// JetStream client settings of `rafka-bench run --system jetstream`.
#[derive(clap::Args, Clone, Debug)]
pub struct JetStreamOptions {
    /// Publish acknowledgements outstanding per producer (JetStream: `max_ack_inflight`).
    #[arg(long, default_value_t = 2_000)]
    js_max_inflight: usize,
    /// Messages per pull request of a consumer.
    #[arg(long, default_value_t = 2_000)]
    js_pull_batch: usize,
}

/// Drives a JetStream server or cluster.
pub struct JetStreamDriver {
    servers: Vec<String>,
    options: JetStreamOptions,
}

impl JetStreamDriver {
    /// `servers`: comma-separated NATS URLs or `host:port`s.
    pub fn new(servers: &str, options: JetStreamOptions) -> Self {
        Self {
            servers: servers.split(',').map(str::to_owned).collect(),
            options,
        }
    }

    async fn connect(&self, max_ack_inflight: usize) -> anyhow::Result<Context> {
        let client = async_nats::ConnectOptions::new()
            .connection_timeout(Duration::from_secs(10))
            .connect(self.servers.as_slice())
            .await
            .with_context(|| format!("connecting to NATS at {}", self.servers.join(",")))?;
        Ok(ContextBuilder::new()
            // Flat out, acknowledgements queue behind `max_ack_inflight` others.
            .timeout(Duration::from_secs(120))
            .max_ack_inflight(max_ack_inflight)
            .backpressure_on_inflight(true)
            .build(client))
    }
}

/// A stream name for a topic: stream names may not hold `.`, `*`, `>` or whitespace.
fn stream_name(topic: &str) -> String {
    topic
        .chars()
        .map(|c| match c {
            '.' | '*' | '>' => '_',
            c if c.is_whitespace() => '_',
            c => c,
        })
        .collect()
}

/// A JetStream publisher and the subjects of the topic's partitions.
pub struct JetStreamSender {
    context: Context,
    subjects: Vec<Subject>,
    next: usize,
}

type PublishAck = futures::future::Map<
    futures::future::BoxFuture<
        'static,
        Result<jetstream::publish::PublishAck, jetstream::context::PublishError>,
    >,
    fn(
        Result<jetstream::publish::PublishAck, jetstream::context::PublishError>,
    ) -> anyhow::Result<()>,
>;

fn acknowledged(
    r: Result<jetstream::publish::PublishAck, jetstream::context::PublishError>,
) -> anyhow::Result<()> {
    r.map(drop).map_err(anyhow::Error::from)
}

impl RecordSender for JetStreamSender {
    type Ack = PublishAck;

    async fn send(&mut self, key: Option<Bytes>, value: &[u8]) -> anyhow::Result<PublishAck> {
        let partition = match key {
            Some(k) => partition_for_key(&k, self.subjects.len() as u32) as usize,
            None => {
                self.next = (self.next + 1) % self.subjects.len();
                self.next
            }
        };
        let ack = self
            .context
            .publish(
                self.subjects[partition].clone(),
                Bytes::copy_from_slice(value),
            )
            .await?;
        Ok(std::future::IntoFuture::into_future(ack).map(acknowledged as fn(_) -> _))
    }
}

/// A durable pull consumer of one group member.
pub struct JetStreamReceiver {
    stream: stream::Stream,
    name: String,
    messages: Option<ReadyChunks<pull::Stream>>,
    missed_heartbeat: bool,
}

impl RecordReceiver for JetStreamReceiver {
    async fn poll(&mut self, timeout: Duration, sent: &mut Vec<Option<u64>>) -> anyhow::Result<()> {
        let Some(messages) = &mut self.messages else {
            // A member dealt no partition (more members than partitions) idles, as in Kafka.
            tokio::time::sleep(timeout).await;
            return Ok(());
        };
        match tokio::time::timeout(timeout, messages.next()).await {
            Err(_elapsed) => Ok(()),
            Ok(None) => anyhow::bail!("consumer {}: message stream ended", self.name),
            Ok(Some(batch)) => {
                for m in batch {
                    match m {
                        Ok(m) => sent.push(sent_at(&m.message.payload)),
                        // A server too busy to send its idle heartbeat in time: the stream
                        // goes on (and pulls again).
                        Err(e) if e.kind() == pull::MessagesErrorKind::MissingHeartbeat => {
                            if !self.missed_heartbeat {
                                eprintln!("consumer {}: {e} (continuing)", self.name);
                                self.missed_heartbeat = true;
                            }
                        }
                        Err(e) => return Err(e).with_context(|| format!("consumer {}", self.name)),
                    }
                }
                Ok(())
            }
        }
    }

    async fn close(self) -> anyhow::Result<()> {
        if self.messages.is_none() {
            return Ok(());
        }
        drop(self.messages);
        self.stream
            .delete_consumer(&self.name)
            .await
            .with_context(|| format!("deleting consumer {}", self.name))?;
        Ok(())
    }
}

impl Driver for JetStreamDriver {
    type Sender = JetStreamSender;
    type Receiver = JetStreamReceiver;

    async fn prepare(&self, w: &Workload) -> anyhow::Result<()> {
        if w.acks != "all" {
            eprintln!(
                "note: JetStream acknowledges after its replication quorum whatever acks say; acks={} runs as acks=all",
                w.acks
            );
        }
        let context = self.connect(1).await?;
        let config = stream::Config {
            name: stream_name(&w.topic),
            subjects: vec![format!("{}.*", w.topic)],
            storage: StorageType::File,
            num_replicas: w.replication_factor as usize,
            compression: (w.compression != "none").then_some(Compression::S2),
            ..Default::default()
        };
        // A cluster that has just started may still be electing its metadata leader.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        let mut stream = loop {
            match context.get_or_create_stream(config.clone()).await {
                Ok(s) => break s,
                Err(e) if tokio::time::Instant::now() < deadline => {
                    eprintln!("creating stream {}: {e}; retrying", config.name);
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
                Err(e) => {
                    return Err(e).with_context(|| format!("creating stream {}", config.name))
                }
            }
        };
        let info = stream.info().await?;
        anyhow::ensure!(
            info.config.num_replicas == config.num_replicas
                && info.config.storage == StorageType::File,
            "stream {} exists with {} replicas and {:?} storage, not {} and file",
            config.name,
            info.config.num_replicas,
            info.config.storage,
            config.num_replicas
        );
        Ok(())
    }

    async fn sender(&self, w: &Workload, _index: u32) -> anyhow::Result<JetStreamSender> {
        let context = self.connect(self.options.js_max_inflight).await?;
        let subjects = (0..w.partitions)
            .map(|p| Subject::from(format!("{}.{p}", w.topic)))
            .collect();
        Ok(JetStreamSender {
            context,
            subjects,
            next: 0,
        })
    }

    async fn receiver(
        &self,
        w: &Workload,
        index: u32,
        group: &str,
        from_earliest: bool,
    ) -> anyhow::Result<JetStreamReceiver> {
        let context = self.connect(1).await?;
        let stream = context.get_stream(stream_name(&w.topic)).await?;
        let name = stream_name(&format!("{group}-{index}"));
        let mine: Vec<u32> = (0..w.partitions)
            .filter(|p| p % w.consumers.max(1) == index)
            .collect();
        if mine.is_empty() {
            return Ok(JetStreamReceiver {
                stream,
                name,
                messages: None,
                missed_heartbeat: false,
            });
        }
        let filter_subjects = if mine.len() == w.partitions as usize {
            Vec::new()
        } else {
            mine.iter().map(|p| format!("{}.{p}", w.topic)).collect()
        };
        let consumer: PullConsumer = stream
            .create_consumer(pull::Config {
                durable_name: Some(name.clone()),
                deliver_policy: if from_earliest {
                    DeliverPolicy::All
                } else {
                    DeliverPolicy::New
                },
                ack_policy: AckPolicy::None,
                filter_subjects,
                ..Default::default()
            })
            .await
            .with_context(|| format!("creating consumer {name}"))?;
        let messages = consumer
            .stream()
            .max_messages_per_batch(self.options.js_pull_batch)
            .heartbeat(Duration::from_secs(5))
            .expires(Duration::from_secs(30))
            .messages()
            .await?
            .ready_chunks(4096);
        Ok(JetStreamReceiver {
            stream,
            name,
            messages: Some(messages),
            missed_heartbeat: false,
        })
    }
}
