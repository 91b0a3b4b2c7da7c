//! The rafka broker.
//!
//! ```text
//! log/        storage engine: segments on memory-mapped files, indexes, recovery, retention
//! partition   a served partition: group-commit writer, high watermark
//! cluster/    cluster metadata: brokers, topics, replica placement (group 0's state)
//! raft/       openraft glue: the partition log as the Raft log, offsets-only state machine
//! topics      the topic registry: partitions on disk, per-topic configs
//! server/     tonic services (Broker, Admin), validation, data-dir lock, shutdown
//! config      broker settings (TOML, flags, env) and Kafka-named topic configs
//! error       BrokerError and its gRPC status codes
//! cli/        the `rafka` command
//! ```
//!
//! Raft replication, cluster metadata and consumer groups build on these and arrive as
//! their own modules.

pub mod cli;
pub mod cluster;
pub mod config;
pub mod error;
pub mod group;
pub mod log;
pub mod partition;
pub mod raft;
pub mod server;
pub mod topics;
