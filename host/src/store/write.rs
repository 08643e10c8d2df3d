//! What both stores share: a write request reduced to what they execute,
//! and the mapping of rows to domain results. Only the SQL differs between
//! them.

use serde_json::Value;
use uuid::Uuid;

use super::{Append, Appended, Create, StoreError, StoredEvent, fingerprint};
use crate::LogId;

/// A create or an append, validated, with its idempotency key fingerprinted.
#[derive(Debug, Clone)]
pub(crate) struct Write<'a> {
    pub(crate) log_id: LogId,
    /// `Some(reducer)` for a create.
    pub(crate) create: Option<&'a str>,
    pub(crate) events: &'a [Value],
    pub(crate) expected_last_index: Option<u64>,
    /// The idempotency key and the request's fingerprint.
    pub(crate) key: Option<(&'a str, Vec<u8>)>,
}

impl<'a> Write<'a> {
    pub(crate) fn create(request: Create<'a>) -> Result<Self, StoreError> {
        if request.events.is_empty() {
            return Err(StoreError::NoEvents);
        }
        Ok(Self {
            log_id: request.log_id,
            create: Some(request.reducer),
            events: request.events,
            expected_last_index: None,
            key: request.idempotency_key.map(|key| {
                (
                    key,
                    fingerprint(
                        "create",
                        request.log_id_chosen.then_some(request.log_id),
                        request.reducer,
                        request.events,
                    ),
                )
            }),
        })
    }

    pub(crate) fn append(request: Append<'a>) -> Result<Self, StoreError> {
        if request.events.is_empty() {
            return Err(StoreError::NoEvents);
        }
        Ok(Self {
            log_id: request.log_id,
            create: None,
            events: request.events,
            expected_last_index: request.expected_last_index,
            key: request.idempotency_key.map(|key| {
                (
                    key,
                    fingerprint("append", Some(request.log_id), "", request.events),
                )
            }),
        })
    }

    /// Where an append starts, given the log's last index (`None`: no such
    /// log). An expectation that is stale or beyond the end is a conflict.
    pub(crate) fn first_index(&self, last: Option<u64>) -> Result<u64, StoreError> {
        match (self.expected_last_index, last) {
            (_, None) => Err(StoreError::LogNotFound(self.log_id)),
            (Some(expected), Some(last)) if expected != last => Err(StoreError::ConcurrentAppend {
                current_last_index: last,
            }),
            (_, Some(last)) => Ok(last + 1),
        }
    }

    /// What the write stores, starting at `first_index`.
    pub(crate) fn appended(&self, first_index: u64) -> Appended {
        Appended {
            log_id: self.log_id,
            first_index,
            last_index: first_index + self.events.len() as u64 - 1,
        }
    }
}

/// A stored idempotency key: fingerprint, log id, first and last index.
pub(crate) type KeyRow = (Vec<u8>, Uuid, i64, i64);

/// The outcome of an earlier request with the same key, as the error to
/// return: a replay if the fingerprint matches, a reuse if not.
pub(crate) fn earlier_outcome(row: Option<KeyRow>, print: &[u8]) -> Option<StoreError> {
    row.map(|(stored, log_id, first, last)| {
        if stored == print {
            StoreError::IdempotentReplay(Appended {
                log_id: log_id.into(),
                first_index: first as u64,
                last_index: last as u64,
            })
        } else {
            StoreError::IdempotencyKeyReused
        }
    })
}

/// Rows of (index, recorded_at, payload) as events.
pub(crate) fn stored_events(rows: Vec<(i64, i64, String)>) -> Vec<StoredEvent> {
    rows.into_iter()
        .map(|(index, recorded_at, payload)| StoredEvent {
            index: index as u64,
            recorded_at,
            payload,
        })
        .collect()
}

/// A database failure, as the domain sees it.
pub(crate) fn unavailable(error: impl std::fmt::Display) -> StoreError {
    StoreError::Unavailable(error.to_string())
}
