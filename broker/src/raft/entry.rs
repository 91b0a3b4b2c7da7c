//! Raft entries as stored batches.
//!
//! - `Normal(batch)`: the record batch itself, its leader epoch set to the entry's term.
//! - `Blank`: a control batch without records, payload `[0]`.
//! - `Membership(m)`: a control batch without records, payload `[1] ++ json(m)`.
//!
//! The entry's index is not stored: it follows from the batch's place in the log.

use bytes::Bytes;
use openraft::{CommittedLeaderId, EntryPayload, LogId};
use rafka_proto::batch::{field, BatchBuilder, BatchHeader, HEADER_LEN};

use super::types::{typ, BatchData};

const BLANK: u8 = 0;
const MEMBERSHIP: u8 = 1;

/// The bytes to store for `entry` (the leader epoch is stamped by the caller).
pub fn encode(entry: &typ::Entry) -> Result<Bytes, String> {
    Ok(match &entry.payload {
        EntryPayload::Normal(BatchData(batch)) => batch.clone(),
        EntryPayload::Blank => BatchBuilder::control_payload(0, &[BLANK]),
        EntryPayload::Membership(m) => {
            let mut payload = vec![MEMBERSHIP];
            serde_json::to_writer(&mut payload, m).map_err(|e| e.to_string())?;
            BatchBuilder::control_payload(0, &payload)
        }
    })
}

/// The term of an entry as the batch's leader epoch.
pub fn epoch_of(log_id: &typ::LogId) -> Result<i32, String> {
    i32::try_from(log_id.leader_id.term)
        .map_err(|_| format!("term {} is too large", log_id.leader_id.term))
}

/// The entry stored as `batch` at raft index `index` (its term is the batch's epoch).
pub fn decode(batch: Bytes, index: u64) -> Result<typ::Entry, String> {
    let term = term_of(&batch).ok_or_else(|| format!("entry {index} has no term"))?;
    decode_with(batch, LogId::new(CommittedLeaderId::new(term, 0), index))
}

/// The entry with id `log_id` whose stored form is `batch`.
pub fn decode_with(batch: Bytes, log_id: typ::LogId) -> Result<typ::Entry, String> {
    let index = log_id.index;
    let h = BatchHeader::parse(&batch).map_err(|e| format!("entry {index}: {e}"))?;
    let payload = if h.is_control() && h.record_count == 0 {
        let body = &batch[HEADER_LEN..];
        match body.first() {
            Some(&BLANK) => EntryPayload::Blank,
            Some(&MEMBERSHIP) => EntryPayload::Membership(
                serde_json::from_slice(&body[1..]).map_err(|e| format!("entry {index}: {e}"))?,
            ),
            other => return Err(format!("entry {index}: unknown control payload {other:?}")),
        }
    } else {
        EntryPayload::Normal(BatchData(batch))
    };
    Ok(typ::Entry { log_id, payload })
}

/// Reads the leader epoch (term) of a stored batch without decoding it.
pub fn term_of(batch: &[u8]) -> Option<u64> {
    let e = batch.get(field::LEADER_EPOCH..field::LEADER_EPOCH + 4)?;
    u64::try_from(i32::from_be_bytes([e[0], e[1], e[2], e[3]])).ok()
}
