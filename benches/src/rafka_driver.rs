//! The workload runner's driver for rafka through `rafka-client` (gRPC): a topic,
//! producers, and members of a consumer group.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::FutureExt;
use rafka_client::{
    Acks, Admin, Consumer, ConsumerConfig, OffsetReset, Producer, ProducerConfig, ProducerRecord,
};

use crate::workload::{sent_at, Driver, RecordReceiver, RecordSender, Workload};

/// rafka through `rafka-client`: a topic, producers, and members of a consumer group.
pub(crate) struct RafkaDriver {
    /// Brokers, comma-separated.
    pub bootstrap: String,
    /// TLS to the brokers.
    pub tls: Option<rafka_client::TlsConfig>,
    /// Bearer-token credentials.
    pub credentials: Option<rafka_client::Credentials>,
}

/// A rafka producer and the topic it writes.
pub(crate) struct RafkaSender {
    producer: Producer,
    topic: Arc<str>,
}

type Delivery = Result<rafka_client::RecordMetadata, rafka_client::ClientError>;
type RafkaAck =
    futures::future::Map<rafka_client::DeliveryFuture, fn(Delivery) -> anyhow::Result<()>>;

fn delivered(d: Delivery) -> anyhow::Result<()> {
    d.map(drop).map_err(anyhow::Error::from)
}

impl RecordSender for RafkaSender {
    type Ack = RafkaAck;

    async fn send(&mut self, key: Option<Bytes>, value: &[u8]) -> anyhow::Result<RafkaAck> {
        let mut record = ProducerRecord::new(self.topic.clone(), Bytes::copy_from_slice(value));
        if let Some(key) = key {
            record = record.key(key);
        }
        let delivery = self.producer.send(record).await?;
        Ok(delivery.map(delivered as fn(Delivery) -> anyhow::Result<()>))
    }
}

/// A member of a rafka consumer group.
pub(crate) struct RafkaReceiver(Consumer);

impl RecordReceiver for RafkaReceiver {
    async fn poll(&mut self, timeout: Duration, sent: &mut Vec<Option<u64>>) -> anyhow::Result<()> {
        let records = self.0.poll(timeout).await?;
        sent.extend(records.iter().map(|r| r.value.as_deref().and_then(sent_at)));
        Ok(())
    }

    async fn close(mut self) -> anyhow::Result<()> {
        Ok(self.0.close().await?)
    }
}

impl Driver for RafkaDriver {
    type Sender = RafkaSender;
    type Receiver = RafkaReceiver;

    async fn prepare(&self, w: &Workload) -> anyhow::Result<()> {
        let admin = Admin::connect_with(
            &self.bootstrap,
            rafka_client::AdminConfig {
                tls: self.tls.clone(),
                credentials: self.credentials.clone(),
            },
        )
        .await?;
        if admin.describe_topics(&[&w.topic]).await.is_err() {
            admin
                .create_topic(
                    &w.topic,
                    w.partitions,
                    w.replication_factor,
                    w.topic_configs.clone(),
                )
                .await?;
        }
        Ok(())
    }

    async fn sender(&self, w: &Workload, _index: u32) -> anyhow::Result<RafkaSender> {
        let producer = Producer::connect(
            &self.bootstrap,
            ProducerConfig {
                acks: w.acks.parse::<Acks>()?,
                compression: crate::load::compression(&w.compression)?,
                linger: w
                    .linger_ms
                    .map_or(ProducerConfig::default().linger, Duration::from_millis),
                enable_idempotence: w.idempotence,
                max_in_flight_per_partition: w
                    .in_flight_per_partition
                    .unwrap_or(ProducerConfig::default().max_in_flight_per_partition),
                tls: self.tls.clone(),
                credentials: self.credentials.clone(),
                ..Default::default()
            },
        )
        .await?;
        Ok(RafkaSender {
            producer,
            topic: w.topic.as_str().into(),
        })
    }

    async fn receiver(
        &self,
        w: &Workload,
        _index: u32,
        group: &str,
        from_earliest: bool,
    ) -> anyhow::Result<RafkaReceiver> {
        let mut c = Consumer::connect(
            &self.bootstrap,
            ConsumerConfig {
                group_id: Some(group.into()),
                auto_offset_reset: if from_earliest {
                    OffsetReset::Earliest
                } else {
                    OffsetReset::Latest
                },
                tls: self.tls.clone(),
                credentials: self.credentials.clone(),
                ..Default::default()
            },
        )
        .await?;
        c.subscribe(&[&w.topic])?;
        Ok(RafkaReceiver(c))
    }
}
