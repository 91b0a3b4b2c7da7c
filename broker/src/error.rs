//! Errors of the broker layer and their gRPC status codes.

use std::sync::Arc;

use rafka_proto::batch::BatchError;
use tonic::{Code, Status};

use crate::log::LogError;

/// Status metadata key of every not-leader answer: the leader's broker id, or
/// `unknown` while an election is on.
pub const LEADER_HEADER: &str = "rafka-leader";

/// What went wrong serving a request. Messages name the topic, partition and offset.
#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    /// No such topic.
    #[error("unknown topic `{0}`")]
    UnknownTopic(String),
    /// The topic exists already.
    #[error("topic `{0}` already exists")]
    TopicExists(String),
    /// The partition number is out of range.
    #[error("topic `{topic}` has {count} partitions; there is no partition {partition}")]
    UnknownPartition {
        /// Topic name.
        topic: String,
        /// Partition asked for.
        partition: u32,
        /// Partitions the topic has.
        count: u32,
    },
    /// A malformed request.
    #[error("invalid request: {0}")]
    InvalidRequest(String),
    /// A record batch failed validation.
    #[error("{topic}-{partition}: batch {index} of the request is invalid: {source}")]
    InvalidBatch {
        /// Topic name.
        topic: String,
        /// Partition.
        partition: u32,
        /// Index of the batch within the partition's records.
        index: usize,
        /// The failed check.
        source: BatchError,
    },
    /// The request carries more record bytes than `max_request_bytes`.
    #[error("request of {size} record bytes exceeds max.request.bytes ({max})")]
    RequestTooLarge {
        /// Record bytes in the request.
        size: usize,
        /// The limit.
        max: usize,
    },
    /// The partition log failed.
    #[error("{topic}-{partition}: {source}")]
    Log {
        /// Topic name.
        topic: String,
        /// Partition.
        partition: u32,
        /// The storage error (shared: one failed group commit fails every request in it).
        source: Arc<LogError>,
    },
    /// This broker does not lead the partition (or the metadata); retry on the leader.
    #[error("{what}: not the leader here; the leader is {}", leader.map_or("unknown (election in progress)".to_string(), |l| format!("broker {l}")))]
    NotLeader {
        /// The partition or group concerned.
        what: String,
        /// The leader's broker id, if known.
        leader: Option<u64>,
    },
    /// The broker is shutting down.
    #[error("the broker is shutting down")]
    ShuttingDown,
    /// Temporarily unable to serve (no quorum, election in progress, replica behind);
    /// retriable.
    #[error("unavailable: {0}")]
    Unavailable(String),
    /// No such consumer group.
    #[error("unknown group `{0}`")]
    UnknownGroup(String),
    /// A consumer group member that was removed, or commits what it does not own.
    #[error("fenced: {0}")]
    Fenced(String),
    /// A request forwarded to another broker (the metadata leader) failed there.
    #[error("{}", .0.message())]
    Forwarded(tonic::Status),
    /// Anything else on the broker's side (I/O on metadata files, a failed task).
    #[error("{0}")]
    Internal(String),
}

impl From<BrokerError> for Status {
    fn from(e: BrokerError) -> Self {
        if let BrokerError::Forwarded(status) = e {
            return status;
        }
        let code = match &e {
            BrokerError::UnknownTopic(_) | BrokerError::UnknownGroup(_) => Code::NotFound,
            BrokerError::TopicExists(_) => Code::AlreadyExists,
            BrokerError::UnknownPartition { .. }
            | BrokerError::InvalidRequest(_)
            | BrokerError::InvalidBatch { .. } => Code::InvalidArgument,
            BrokerError::RequestTooLarge { .. } => Code::ResourceExhausted,
            BrokerError::Log { source, .. } => match &**source {
                LogError::InvalidBatch(_)
                | LogError::BatchTooLarge { .. }
                | LogError::Config(_) => Code::InvalidArgument,
                LogError::OffsetOutOfRange { .. } => Code::OutOfRange,
                LogError::NotBatchBoundary { .. } => Code::FailedPrecondition,
                LogError::Corrupt { .. } => Code::DataLoss,
                LogError::Io { .. } | LogError::Poisoned { .. } => Code::Unavailable,
            },
            // Retriable: the client follows the `rafka-leader` header or refreshes metadata.
            BrokerError::NotLeader { .. } => Code::Unavailable,
            BrokerError::Fenced(_) => Code::FailedPrecondition,
            BrokerError::ShuttingDown | BrokerError::Unavailable(_) => Code::Unavailable,
            BrokerError::Internal(_) => Code::Internal,
            BrokerError::Forwarded(s) => s.code(),
        };
        let mut status = Status::new(code, e.to_string());
        if let BrokerError::NotLeader { leader, .. } = &e {
            // Machine-readable redirect: the leader's id, or `unknown` mid-election.
            let value = leader.map_or_else(|| "unknown".to_string(), |id| id.to_string());
            if let Ok(v) = value.parse() {
                status.metadata_mut().insert(LEADER_HEADER, v);
            }
        }
        status
    }
}
