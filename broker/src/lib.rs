//! The rafka broker.
//!
//! ```text
//! log/        storage engine: segments on memory-mapped files, indexes, recovery, retention
//! cluster/    cluster metadata: brokers, topics, replica placement (group 0's state)
//! raft/       openraft glue: the partition log as the Raft log, offsets-only state machine,
//!             the peer service (Raft RPCs, metadata proposals sent on to the leader)
//! group/      consumer groups: offsets in `__consumer_offsets`, membership, assignors
//! topics      topic names: validation, the reserved names of internal topics
//! metrics     stage latency histograms, Prometheus text, the HTTP port (`http`)
//! console     the web console on the HTTP port: static assets and its JSON API
//! migrate     data directories of earlier releases
//! server/     tonic services (Broker, Group, Admin), validation, data-dir lock, shutdown
//! config      broker settings (TOML, flags, env), partition limits, Kafka-named topic configs
//! error       BrokerError, its gRPC status codes, bounded quoting of client input
//! tasks       the broker's cancellation token and task tracker
//! cli/        the `rafka` command
//! ```

pub mod auth;
pub mod cli;
pub mod cluster;
pub mod config;
pub mod console;
pub mod error;
pub mod group;
pub mod log;
pub mod metrics;
pub mod migrate;
pub mod raft;
pub mod server;
pub mod tasks;
pub mod tls;
pub mod topics;
