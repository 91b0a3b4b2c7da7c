//! Errors of the broker layer and their gRPC status codes.

use std::sync::Arc;

use rafka_proto::batch::BatchError;
use tonic::{Code, Status};

use crate::log::LogError;

/// Longest piece of a request (a name, an id, a value) quoted whole in an error message.
pub const MAX_QUOTED: usize = 200;
/// Longest error message sent to a client: gRPC clients refuse status trailers over
/// 16 KiB (after percent-encoding), which would hide the real answer.
pub const MAX_MESSAGE: usize = 2048;

/// A client-supplied string as error messages quote it: whole when short, else its
/// first [`MAX_QUOTED`] characters and its length.
pub fn shown(s: &str) -> Shown<'_> {
    Shown(s)
}

/// See [`shown`].
pub struct Shown<'a>(&'a str);

impl std::fmt::Display for Shown<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0.char_indices().nth(MAX_QUOTED) {
            None => f.write_str(self.0),
            Some((cut, _)) => write!(f, "{}… ({} bytes)", &self.0[..cut], self.0.len()),
        }
    }
}

/// `message` cut to [`MAX_MESSAGE`] bytes at a character boundary.
fn bounded(mut message: String) -> String {
    if message.len() > MAX_MESSAGE {
        let mut cut = MAX_MESSAGE;
        while !message.is_char_boundary(cut) {
            cut -= 1;
        }
        message.truncate(cut);
        message.push_str("… (message cut)");
    }
    message
}

/// Status metadata key naming, in Kafka's words, why a group request was refused
/// (`UNKNOWN_MEMBER_ID`, `FENCED_MEMBER_EPOCH`, ...), so clients need not read messages.
pub const ERROR_HEADER: &str = "rafka-error";

/// Status metadata key of every not-leader answer: the leader's broker id, or
/// `unknown` while an election is on.
pub const LEADER_HEADER: &str = "rafka-leader";

/// What went wrong serving a request. Messages name the topic, partition and offset.
#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    /// No such topic.
    #[error("unknown topic `{}`", shown(.0))]
    UnknownTopic(String),
    /// The topic exists already.
    #[error("topic `{}` already exists", shown(.0))]
    TopicExists(String),
    /// The partition number is out of range.
    #[error("topic `{}` has {count} partitions; there is no partition {partition}", shown(.topic))]
    UnknownPartition {
        /// Topic name.
        topic: String,
        /// Partition asked for.
        partition: u32,
        /// Partitions the topic has.
        count: u32,
    },
    /// A client asked to change an internal topic (names starting with `__`).
    #[error(
        "topic `{}` is internal to the broker (names starting with `__` are reserved): clients cannot {action} it",
        shown(.topic)
    )]
    InternalTopic {
        /// Topic name.
        topic: String,
        /// What was refused: "create", "delete", "alter the config of", "produce to".
        action: &'static str,
    },
    /// A malformed request.
    #[error("invalid request: {0}")]
    InvalidRequest(String),
    /// The request's principal may not do this (no ACL allows it, or one denies it).
    #[error("not authorized: {0}")]
    NotAuthorized(String),
    /// A record batch failed validation.
    #[error("{}-{partition}: batch {index} of the request is invalid: {source}", shown(.topic))]
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
    #[error("{}-{partition}: {source}", shown(.topic))]
    Log {
        /// Topic name.
        topic: String,
        /// Partition.
        partition: u32,
        /// The storage error (shared: one failed group commit fails every request in it).
        source: Arc<LogError>,
    },
    /// This broker does not lead the partition (or the metadata); retry on the leader.
    #[error("{}: not the leader here; the leader is {}", shown(.what), leader.map_or("unknown (election in progress)".to_string(), |l| format!("broker {l}")))]
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
    #[error("unknown group `{}`", shown(.0))]
    UnknownGroup(String),
    /// A group request refused for the state of the member or group: a member that was
    /// removed or is unknown, a stale epoch, a commit of what it does not own, a change
    /// only allowed while the group is empty. `code` (Kafka's error name) goes to the
    /// client in the [`ERROR_HEADER`] metadata.
    #[error("fenced: {message}")]
    Fenced {
        /// `UNKNOWN_MEMBER_ID`, `FENCED_MEMBER_EPOCH`, `NOT_PARTITION_OWNER` or
        /// `NON_EMPTY_GROUP`.
        code: &'static str,
        /// What was refused, and why.
        message: String,
    },
    /// An idempotent batch came before an earlier batch of its producer (still on its
    /// way: another request, a retry); retriable once the earlier batches are in.
    #[error("out of order sequence: {0}")]
    OutOfOrderSequence(String),
    /// Anything else on the broker's side (I/O on metadata files, a failed task).
    #[error("{0}")]
    Internal(String),
}

impl From<BrokerError> for Status {
    fn from(e: BrokerError) -> Self {
        let code = match &e {
            BrokerError::UnknownTopic(_) | BrokerError::UnknownGroup(_) => Code::NotFound,
            BrokerError::TopicExists(_) => Code::AlreadyExists,
            BrokerError::InternalTopic { .. } | BrokerError::NotAuthorized(_) => {
                Code::PermissionDenied
            }
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
            BrokerError::Fenced { .. } => Code::FailedPrecondition,
            BrokerError::OutOfOrderSequence(_) => Code::Aborted,
            BrokerError::ShuttingDown | BrokerError::Unavailable(_) => Code::Unavailable,
            BrokerError::Internal(_) => Code::Internal,
        };
        let mut status = Status::new(code, bounded(e.to_string()));
        if let BrokerError::Fenced { code, .. } = &e {
            status.metadata_mut().insert(
                ERROR_HEADER,
                tonic::metadata::MetadataValue::from_static(code),
            );
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoted_input_and_messages_are_bounded() {
        assert_eq!(shown("orders").to_string(), "orders");
        let exact = "é".repeat(MAX_QUOTED);
        assert_eq!(
            shown(&exact).to_string(),
            exact,
            "200 characters are shown whole"
        );
        let long = "é".repeat(1 << 19);
        let quoted = shown(&long).to_string();
        assert_eq!(
            quoted,
            format!("{}… (1048576 bytes)", "é".repeat(MAX_QUOTED))
        );
        let status = Status::from(BrokerError::UnknownTopic(long.clone()));
        assert_eq!(status.code(), Code::NotFound);
        assert!(status.message().len() < 500, "{}", status.message().len());
        // Whatever builds a message, the status stays small.
        let status = Status::from(BrokerError::Internal(long));
        assert!(status.message().len() <= MAX_MESSAGE + 32);
        assert!(status.message().ends_with("(message cut)"));
    }

    #[test]
    fn group_refusals_carry_their_kafka_name() {
        let status = Status::from(BrokerError::Fenced {
            code: "FENCED_MEMBER_EPOCH",
            message: "member m sent epoch 9".into(),
        });
        assert_eq!(status.code(), Code::FailedPrecondition);
        assert_eq!(
            status.metadata().get(ERROR_HEADER).unwrap(),
            "FENCED_MEMBER_EPOCH"
        );
    }
}
