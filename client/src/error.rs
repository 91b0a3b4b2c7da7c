//! Client errors.

use rafka_proto::batch::BatchError;
use tonic::Code;

/// What went wrong talking to rafka.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ClientError {
    /// The broker answered with an error status.
    #[error("{}: {}", code_name(*.code), .message)]
    Broker {
        /// gRPC status code.
        code: Code,
        /// The broker's message.
        message: String,
    },
    /// The partition is led by another broker, or an election is on; retriable (the
    /// client goes to `leader` and refreshes its metadata).
    #[error("not the leader: {message}")]
    NotLeader {
        /// The leader's broker id, when the broker knew it.
        leader: Option<u32>,
        /// The broker's message.
        message: String,
    },
    /// No broker could be reached.
    #[error("cannot connect to {addresses}: {reason}")]
    Connect {
        /// The addresses tried.
        addresses: String,
        /// The last failure.
        reason: String,
    },
    /// Bad client settings or arguments.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// A fetched batch could not be decoded.
    #[error("bad batch from {topic}-{partition} at offset {offset}: {reason}")]
    BadBatch {
        /// Topic.
        topic: String,
        /// Partition.
        partition: u32,
        /// Offset of the batch.
        offset: u64,
        /// What was wrong.
        reason: String,
    },
    /// The producer was closed before the record was sent.
    #[error("the producer is closed")]
    Closed,
    /// The record could not be delivered before its retries ran out.
    #[error("delivery failed after {attempts} attempts: {last}")]
    RetriesExhausted {
        /// Attempts made.
        attempts: u32,
        /// The last error.
        last: Box<ClientError>,
    },
}

fn code_name(code: Code) -> &'static str {
    match code {
        Code::NotFound => "not found",
        Code::InvalidArgument => "invalid argument",
        Code::AlreadyExists => "already exists",
        Code::ResourceExhausted => "resource exhausted",
        Code::OutOfRange => "out of range",
        Code::Unavailable => "unavailable",
        Code::DeadlineExceeded => "deadline exceeded",
        Code::DataLoss => "data loss",
        Code::FailedPrecondition => "failed precondition",
        Code::Unauthenticated => "unauthenticated",
        Code::PermissionDenied => "permission denied",
        _ => "error",
    }
}

/// Status metadata key a broker names the leader with.
const LEADER_HEADER: &str = "rafka-leader";

impl From<tonic::Status> for ClientError {
    fn from(s: tonic::Status) -> Self {
        if let Some(leader) = s.metadata().get(LEADER_HEADER) {
            return Self::NotLeader {
                leader: leader.to_str().ok().and_then(|l| l.parse().ok()),
                message: s.message().to_string(),
            };
        }
        // A failure of the connection itself ("transport error") says what happened
        // only in its causes: a refused TLS handshake, a connection reset.
        let mut message = s.message().to_string();
        let mut source = std::error::Error::source(&s);
        while let Some(cause) = source {
            let text = cause.to_string();
            if !message.ends_with(&text) {
                message.push_str(": ");
                message.push_str(&text);
            }
            source = cause.source();
        }
        Self::Broker {
            code: s.code(),
            message,
        }
    }
}

impl From<BatchError> for ClientError {
    fn from(e: BatchError) -> Self {
        Self::InvalidArgument(e.to_string())
    }
}

impl ClientError {
    /// The gRPC code, if the broker answered.
    pub fn code(&self) -> Option<Code> {
        match self {
            Self::Broker { code, .. } => Some(*code),
            Self::NotLeader { .. } => Some(Code::Unavailable),
            _ => None,
        }
    }

    /// True for errors worth retrying (the broker is busy, restarting or moving).
    pub fn is_retriable(&self) -> bool {
        match self {
            // Cancelled: the connection closed under the request (hyper's "operation was
            // canceled", as when a proxy between closes it cleanly), its fate unknown.
            Self::Broker { code, .. } => matches!(
                code,
                Code::Unavailable
                    | Code::DeadlineExceeded
                    | Code::Aborted
                    | Code::Unknown
                    | Code::Cancelled
            ),
            Self::Connect { .. } | Self::NotLeader { .. } => true,
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transport_failures_are_retriable_and_refusals_are_not() {
        let broker = |code| ClientError::Broker {
            code,
            message: String::new(),
        };
        // A connection closed cleanly under a request (hyper's "operation was canceled")
        // arrives as Cancelled: the request's fate is unknown, so it is retried.
        for code in [
            Code::Cancelled,
            Code::Unknown,
            Code::Unavailable,
            Code::Aborted,
        ] {
            assert!(broker(code).is_retriable(), "{code:?}");
        }
        for code in [
            Code::InvalidArgument,
            Code::FailedPrecondition,
            Code::NotFound,
        ] {
            assert!(!broker(code).is_retriable(), "{code:?}");
        }
    }
}
