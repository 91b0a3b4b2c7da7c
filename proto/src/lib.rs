//! Wire formats shared by the rafka broker and its clients.
//!
//! ```text
//! batch        the record batch: Kafka RecordBatch v2 layout, CRC-32 (crc32fast)
//!   varint     zig-zag LEB128 integers used inside records
//!   builder    BatchBuilder: append records, seal a checksummed batch
//!   view       RecordBatch: zero-copy validation and record iteration
//!   compression  gzip, snappy, lz4 and zstd records sections, bounded decompression
//! codec        the protobuf codec of the generated code (undecodable = INVALID_ARGUMENT)
//! wire         produce requests and fetch answers as chains of Bytes, decoded in place
//! v1           the gRPC API generated from proto/rafka.proto (services Broker, Group, Admin)
//! peer         broker-to-broker Raft traffic, from proto/peer.proto (service RaftPeer)
//! ```
//!
//! A batch is built once by a producer and then travels unchanged: the broker validates it,
//! writes its bytes into the partition log, replicates them and serves them to consumers.

pub mod batch;
pub mod codec;
pub mod wire;

/// The gRPC API, generated from `proto/rafka.proto`.
#[allow(missing_docs, clippy::all, clippy::pedantic)]
pub mod v1 {
    tonic::include_proto!("rafka.v1");
}

/// The broker-to-broker Raft service, generated from `proto/peer.proto`.
#[allow(missing_docs, clippy::all, clippy::pedantic)]
pub mod peer {
    tonic::include_proto!("rafka.peer.v1");
}
