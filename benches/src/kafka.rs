//! The workload runner's driver for rafka's Kafka listener through librdkafka (the
//! `rdkafka` crate): the same workload files as the gRPC driver, so the two paths into
//! one engine compare in one run.
//!
//! - **Topic**: created with Kafka's CreateTopics if missing (the workload's partitions,
//!   replication factor and topic configs).
//! - **Producer**: a `FutureProducer`; `acks`, `compression`, `linger.ms` and idempotence
//!   from the workload (`enable.idempotence` defaults on with acks=all, as rafka's
//!   client). Its delivery futures are the acknowledgements the runner awaits in order.
//! - **Consumer**: a `StreamConsumer` in the run's group (the classic protocol with
//!   cooperative-sticky), from the earliest record or the end.

use std::time::Duration;

use anyhow::Context as _;
use bytes::Bytes;
use futures::FutureExt;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::Message;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::types::RDKafkaErrorCode;

use crate::workload::{Driver, RecordReceiver, RecordSender, Workload};

/// Drives rafka's Kafka listeners.
pub struct KafkaDriver {
    bootstrap: String,
}

impl KafkaDriver {
    /// `bootstrap`: the brokers' Kafka listeners, `host:port,...`.
    pub fn new(bootstrap: &str) -> Self {
        Self {
            bootstrap: bootstrap.to_string(),
        }
    }

    fn config(&self) -> ClientConfig {
        let mut c = ClientConfig::new();
        c.set("bootstrap.servers", &self.bootstrap);
        c
    }
}

/// A librdkafka producer and its topic.
pub struct KafkaSender {
    producer: FutureProducer,
    topic: String,
}

type KafkaAck = futures::future::BoxFuture<'static, anyhow::Result<()>>;

impl RecordSender for KafkaSender {
    type Ack = KafkaAck;

    async fn send(&mut self, key: Option<Bytes>, value: Bytes) -> anyhow::Result<KafkaAck> {
        let mut record = FutureRecord::<[u8], [u8]>::to(&self.topic).payload(&value[..]);
        if let Some(k) = &key {
            record = record.key(&k[..]);
        }
        // A full queue: wait for room, as the gRPC driver waits for buffer space.
        let mut record = record;
        let delivery = loop {
            match self.producer.send_result(record) {
                Ok(d) => break d,
                Err((e, r)) if e.rdkafka_error_code() == Some(RDKafkaErrorCode::QueueFull) => {
                    record = r;
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
                Err((e, _)) => return Err(e).context("handing a record to librdkafka"),
            }
        };
        Ok(async move {
            match delivery.await {
                Ok(Ok(_)) => Ok(()),
                Ok(Err((e, _))) => Err(anyhow::Error::from(e)),
                Err(_) => Err(anyhow::anyhow!("librdkafka dropped the delivery")),
            }
        }
        .boxed())
    }
}

/// A member of the run's group.
pub struct KafkaReceiver(StreamConsumer);

impl RecordReceiver for KafkaReceiver {
    async fn poll(&mut self, timeout: Duration, values: &mut Vec<Bytes>) -> anyhow::Result<()> {
        let deadline = tokio::time::Instant::now() + timeout;
        // The first message within the timeout, then whatever else is ready.
        match tokio::time::timeout_at(deadline, self.0.recv()).await {
            Err(_) => return Ok(()),
            Ok(m) => {
                if let Some(v) = m?.payload() {
                    values.push(Bytes::copy_from_slice(v));
                }
            }
        }
        while let Some(Ok(m)) = self.0.recv().now_or_never() {
            if let Some(v) = m.payload() {
                values.push(Bytes::copy_from_slice(v));
            }
            if values.len() >= 10_000 {
                break;
            }
        }
        Ok(())
    }

    async fn close(self) -> anyhow::Result<()> {
        self.0.unsubscribe();
        Ok(())
    }
}

impl Driver for KafkaDriver {
    type Sender = KafkaSender;
    type Receiver = KafkaReceiver;

    async fn prepare(&self, w: &Workload) -> anyhow::Result<()> {
        let admin: AdminClient<DefaultClientContext> =
            self.config().create().context("a Kafka admin client")?;
        let configs: Vec<(&str, &str)> = w
            .topic_configs
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        let mut topic = NewTopic::new(
            &w.topic,
            w.partitions as i32,
            TopicReplication::Fixed(w.replication_factor as i32),
        );
        for (k, v) in &configs {
            topic = topic.set(k, v);
        }
        let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
        for result in admin.create_topics([&topic], &options).await? {
            match result {
                Ok(_) => {}
                Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
                Err((name, e)) => anyhow::bail!("creating topic {name}: {e}"),
            }
        }
        Ok(())
    }

    async fn sender(&self, w: &Workload, _index: u32) -> anyhow::Result<KafkaSender> {
        let mut c = self.config();
        let acks = match w.acks.as_str() {
            "all" => "all",
            "leader" => "1",
            "none" => "0",
            other => anyhow::bail!("acks {other}: all, leader or none"),
        };
        let idempotence = w.idempotence.unwrap_or(acks == "all");
        c.set("acks", acks)
            .set("compression.type", &w.compression)
            .set("linger.ms", w.linger_ms.unwrap_or(5).to_string())
            .set("enable.idempotence", idempotence.to_string())
            .set("queue.buffering.max.messages", "1000000")
            .set("batch.size", "1000000");
        if let Some(n) = w.in_flight_per_partition {
            c.set("max.in.flight.requests.per.connection", n.to_string());
        }
        Ok(KafkaSender {
            producer: c.create().context("a Kafka producer")?,
            topic: w.topic.clone(),
        })
    }

    async fn receiver(
        &self,
        w: &Workload,
        _index: u32,
        group: &str,
        from_earliest: bool,
    ) -> anyhow::Result<KafkaReceiver> {
        let consumer: StreamConsumer = self
            .config()
            .set("group.id", group)
            .set("enable.auto.commit", "true")
            .set("partition.assignment.strategy", "cooperative-sticky")
            .set(
                "auto.offset.reset",
                if from_earliest { "earliest" } else { "latest" },
            )
            .create()
            .context("a Kafka consumer")?;
        consumer.subscribe(&[&w.topic])?;
        Ok(KafkaReceiver(consumer))
    }
}
