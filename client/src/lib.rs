//! The rafka client library: [`Producer`], [`Consumer`] and [`Admin`] over gRPC.
//!
//! ```text
//! producer     per-partition accumulators (linger, batch_size), murmur2 / sticky
//!              partitioning, gzip / snappy / lz4 / zstd, ordered pipelined sends,
//!              retries with backoff
//! consumer     assign, seek, poll and a Stream of records; long-poll fetches; decompression
//! admin        topics, configs, cluster metadata
//! cluster      connections and metadata shared by the three
//! partitioner  Kafka's murmur2 key hash
//! ```
//!
//! ```no_run
//! # async fn demo() -> Result<(), rafka_client::ClientError> {
//! use rafka_client::{Admin, Consumer, Producer, ProducerRecord, SeekTo, TopicPartition};
//! use std::time::Duration;
//!
//! let bootstrap = "127.0.0.1:9092";
//! Admin::connect(bootstrap).await?.create_topic("events", 3, 1, Default::default()).await?;
//!
//! let producer = Producer::connect(bootstrap, Default::default()).await?;
//! let ack = producer.send(ProducerRecord::new("events", "hello").key("user-1")).await?;
//! println!("written at {:?}", ack.await?);
//!
//! let mut consumer = Consumer::connect(bootstrap, Default::default()).await?;
//! consumer.assign([TopicPartition::new("events", 0)]);
//! consumer.seek(&TopicPartition::new("events", 0), SeekTo::Earliest).await?;
//! for r in consumer.poll(Duration::from_secs(1)).await? {
//!     println!("{}-{}@{}: {:?}", r.topic, r.partition, r.offset, r.value);
//! }
//! # Ok(()) }
//! ```

mod admin;
mod cluster;
mod consumer;
mod delivery;
mod direct;
mod error;
mod group;
mod oauth;
pub mod partitioner;
mod producer;
mod record;
mod security;
mod subscription;

pub use admin::{Admin, AdminConfig, PartitionLag, ResetTo, TopicDescription};
pub use consumer::{Consumer, ConsumerConfig, OffsetReset, SeekTo};
pub use delivery::DeliveryFuture;
pub use error::ClientError;
pub use producer::{Acks, Producer, ProducerConfig};
pub use rafka_proto::batch;
pub use rafka_proto::batch::compression;
pub use rafka_proto::batch::Compression;
pub use record::{ConsumerRecord, Header, ProducerRecord, RecordMetadata, TopicPartition};
pub use security::{Credentials, TlsConfig};
pub use subscription::RebalanceListener;
