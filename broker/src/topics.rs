//! Topic names: what a name may be, and the reserved names of internal topics.

use crate::error::{shown, BrokerError};

/// Names starting with this are reserved for the broker's internal topics
/// (`__consumer_offsets`): clients may read them, but not create, delete, alter or
/// produce to them.
pub const INTERNAL_PREFIX: &str = "__";

/// True for an internal topic's name (see [`INTERNAL_PREFIX`]).
pub fn is_internal(name: &str) -> bool {
    name.starts_with(INTERNAL_PREFIX)
}

/// Refuses a client's `action` on an internal topic.
pub fn check_not_internal(name: &str, action: &'static str) -> Result<(), BrokerError> {
    if is_internal(name) {
        return Err(BrokerError::InternalTopic {
            topic: name.to_string(),
            action,
        });
    }
    Ok(())
}

/// Most partitions one topic may ever have, whatever the config says: a sanity bound on
/// one metadata command. The configured limits (`max_partitions_per_topic`,
/// `max_partitions`) are checked where a request enters.
pub const MAX_PARTITIONS: u32 = 1_000_000;

/// Checks a topic name: 1 to 249 of `[a-zA-Z0-9._-]`, not `.` or `..` (as Kafka).
pub fn validate_topic_name(name: &str) -> Result<(), BrokerError> {
    let ok = !name.is_empty()
        && name.len() <= 249
        && name != "."
        && name != ".."
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(BrokerError::InvalidRequest(format!(
            "invalid topic name `{}`: use 1 to 249 of [a-zA-Z0-9._-], not `.` or `..`",
            shown(name)
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn internal_names_are_refused_to_clients() {
        assert!(is_internal("__consumer_offsets"));
        assert!(is_internal("__anything"));
        assert!(!is_internal("_schemas") && !is_internal("orders"));
        let err = check_not_internal("__consumer_offsets", "delete").unwrap_err();
        assert!(matches!(err, BrokerError::InternalTopic { .. }));
        assert!(
            err.to_string().contains("clients cannot delete it"),
            "{err}"
        );
        assert!(check_not_internal("orders", "delete").is_ok());
    }
}
