//! Broker errors in Kafka's error codes, with the message that names the problem.

use kafka_protocol::error::ResponseError as E;
use kafka_protocol::protocol::StrBytes;
use rafka_proto::batch::BatchError;

use crate::error::BrokerError;
use crate::log::LogError;

/// Kafka's code for `e`.
pub(crate) fn code(e: &BrokerError) -> E {
    match e {
        BrokerError::UnknownTopic(_) | BrokerError::UnknownPartition { .. } => {
            E::UnknownTopicOrPartition
        }
        BrokerError::TopicExists(_) => E::TopicAlreadyExists,
        BrokerError::InternalTopic { .. } | BrokerError::NotAuthorized(_) => {
            E::TopicAuthorizationFailed
        }
        BrokerError::InvalidRequest(_) => E::InvalidRequest,
        BrokerError::InvalidBatch { source, .. } => batch_code(source),
        BrokerError::RequestTooLarge { .. } => E::RecordListTooLarge,
        BrokerError::Log { source, .. } => match &**source {
            LogError::InvalidBatch(b) => batch_code(b),
            LogError::BatchTooLarge { .. } => E::MessageTooLarge,
            LogError::Config(_) => E::InvalidConfig,
            LogError::OffsetOutOfRange { .. } => E::OffsetOutOfRange,
            LogError::NotBatchBoundary { .. } => E::OffsetOutOfRange,
            LogError::Corrupt { .. } | LogError::Io { .. } | LogError::Poisoned { .. } => {
                E::KafkaStorageError
            }
        },
        BrokerError::NotLeader { leader: None, .. } => E::LeaderNotAvailable,
        BrokerError::NotLeader { .. } => E::NotLeaderOrFollower,
        BrokerError::ShuttingDown => E::NotLeaderOrFollower,
        BrokerError::Unavailable(_) => E::RequestTimedOut,
        BrokerError::UnknownGroup(_) => E::GroupIdNotFound,
        BrokerError::Fenced { code, .. } => match *code {
            "UNKNOWN_MEMBER_ID" => E::UnknownMemberId,
            "FENCED_MEMBER_EPOCH" => E::FencedMemberEpoch,
            "NON_EMPTY_GROUP" => E::NonEmptyGroup,
            _ => E::IllegalGeneration,
        },
        BrokerError::OutOfOrderSequence(_) => E::OutOfOrderSequenceNumber,
        BrokerError::Internal(_) => E::UnknownServerError,
    }
}

/// A batch that failed its checks: a bad checksum or framing is CORRUPT_MESSAGE, as
/// Kafka says it; a well-formed batch breaking a rule is INVALID_RECORD.
fn batch_code(e: &BatchError) -> E {
    match e {
        BatchError::TooShort { .. }
        | BatchError::BadLength { .. }
        | BatchError::BadMagic(_)
        | BatchError::CrcMismatch { .. }
        | BatchError::BadVarint { .. }
        | BatchError::BadRecord { .. }
        | BatchError::Compression(_) => E::CorruptMessage,
        _ => E::InvalidRecord,
    }
}

/// `e`'s code and message, as a response's `error_code` and `error_message`.
pub(crate) fn code_and_message(e: &BrokerError) -> (i16, Option<StrBytes>) {
    (code(e).code(), Some(StrBytes::from_string(e.to_string())))
}

/// The code of an authorization failure for a resource type.
pub(crate) fn denied(e: &BrokerError, ty: crate::auth::acl::ResourceType) -> i16 {
    use crate::auth::acl::ResourceType;
    match (e, ty) {
        (BrokerError::NotAuthorized(_), ResourceType::Group) => E::GroupAuthorizationFailed.code(),
        (BrokerError::NotAuthorized(_), ResourceType::Cluster) => {
            E::ClusterAuthorizationFailed.code()
        }
        _ => code(e).code(),
    }
}
