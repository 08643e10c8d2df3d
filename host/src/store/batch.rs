//! One group-commit batch, planned in memory so that no request's conflict
//! or bad input fails the others.
//!
//! The executor first reads what the batch depends on — the last index of
//! every log it appends to and the idempotency keys it carries — then
//! [`plan`] decides every request's outcome in queue order: replays and key
//! reuses, unknown or existing logs, stale expected indexes, and for the
//! rest the rows to insert. Appends to one log chain: the second starts
//! where the first ends. The store then writes every row at once, numbering
//! events by their ordinal in the batch; the ordinals become global
//! positions once the store has taken a range of them from its counter. If
//! another process wrote meanwhile, one of those rows collides with its
//! rows and the batch is read and planned again.

use std::collections::HashMap;

use uuid::Uuid;

use super::write::{KeyRow, earlier_outcome};
use super::{Appended, StoreError, Write, Written};
use crate::LogId;

/// What the database holds that a batch depends on.
#[derive(Debug, Default)]
pub(crate) struct Found {
    /// The last index of every existing log the batch names.
    pub(crate) lasts: HashMap<LogId, u64>,
    /// Stored idempotency keys the batch carries.
    pub(crate) keys: HashMap<String, KeyRow>,
}

/// The rows a batch stores, column by column (the shape `UNNEST` takes).
#[derive(Debug, Default)]
pub(crate) struct Rows<'a> {
    pub(crate) event_log: Vec<Uuid>,
    pub(crate) event_index: Vec<i64>,
    pub(crate) event_ordinal: Vec<i64>,
    pub(crate) event_recorded_at: Vec<i64>,
    pub(crate) event_payload: Vec<&'a str>,
    pub(crate) event_bytes: Vec<i32>,
    /// New logs: id, reducer, created_at, and the last index and the
    /// ordinal of the last event they hold after this batch.
    pub(crate) create_log: Vec<Uuid>,
    pub(crate) create_reducer: Vec<&'a str>,
    pub(crate) create_at: Vec<i64>,
    pub(crate) create_last_index: Vec<i64>,
    pub(crate) create_last_ordinal: Vec<i64>,
    /// Every existing log written to: its last index and the ordinal of its
    /// last event after this batch, and its last index before it (as the
    /// plan found it; the store stores nothing if the log moved since).
    pub(crate) log_id: Vec<Uuid>,
    pub(crate) log_last_index: Vec<i64>,
    pub(crate) log_last_ordinal: Vec<i64>,
    pub(crate) log_previous_index: Vec<i64>,
    /// Idempotency keys to store.
    pub(crate) key: Vec<&'a str>,
    pub(crate) key_print: Vec<Vec<u8>>,
    pub(crate) key_log: Vec<Uuid>,
    pub(crate) key_first_index: Vec<i64>,
    pub(crate) key_last_index: Vec<i64>,
    pub(crate) key_first_ordinal: Vec<i64>,
    pub(crate) key_stored_at: Vec<i64>,
}

impl Rows<'_> {
    /// How many events the batch stores.
    pub(crate) fn events(&self) -> i64 {
        self.event_log.len() as i64
    }
}

/// A request's outcome before the batch commits.
#[derive(Debug)]
enum Planned {
    /// Decided without storing anything.
    Done(Result<Written, StoreError>),
    /// Stored by this batch; the position is its first ordinal plus the
    /// batch's base position.
    Stored { appended: Appended, ordinal: u64 },
    /// A retry of request `.0` of this same batch.
    ReplayOf(usize),
}

/// Every request's outcome, and the rows that realise them.
#[derive(Debug)]
pub(crate) struct Plan<'a> {
    outcomes: Vec<Planned>,
    pub(crate) rows: Rows<'a>,
}

/// Plans `writes` in queue order against what the database holds.
pub(crate) fn plan<'a>(
    writes: &'a [Write],
    prints: &'a [Option<Vec<u8>>],
    found: &Found,
) -> Plan<'a> {
    let mut rows = Rows::default();
    let mut lasts: HashMap<LogId, (u64, u64)> = HashMap::new();
    let mut batch_keys: HashMap<&str, usize> = HashMap::new();
    let mut ordinal = 0u64;
    let mut outcomes = Vec::with_capacity(writes.len());
    for (i, (write, print)) in writes.iter().zip(prints).enumerate() {
        let key = write.idempotency_key.as_deref().zip(print.as_deref());
        if let Some((key, print)) = key {
            if let Some(row) = found.keys.get(key) {
                outcomes.push(Planned::Done(
                    earlier_outcome(row, print).map(Written::Replayed),
                ));
                continue;
            }
            if let Some(&earlier) = batch_keys.get(key) {
                let same = prints[earlier].as_deref() == Some(print);
                outcomes.push(if same {
                    Planned::ReplayOf(earlier)
                } else {
                    Planned::Done(Err(StoreError::IdempotencyKeyReused))
                });
                continue;
            }
        }
        // The log's last index now: stored, or as this batch leaves it.
        let current = lasts
            .get(&write.log_id)
            .map(|&(last, _)| last)
            .or_else(|| found.lasts.get(&write.log_id).copied());
        let first_index = match (write.creates(), current) {
            (Some(_), Some(_)) => Err(StoreError::LogExists(write.log_id)),
            (Some(_), None) => Ok(0),
            (None, None) => Err(StoreError::LogNotFound(write.log_id)),
            (None, Some(last)) => match write.expected_last_index() {
                Some(expected) if expected != last => Err(StoreError::ConcurrentAppend {
                    current_last_index: last,
                }),
                _ => Ok(last + 1),
            },
        };
        let first_index = match first_index {
            Ok(first) => first,
            Err(error) => {
                outcomes.push(Planned::Done(Err(error)));
                continue;
            }
        };
        let n = write.events.len() as u64;
        let appended = Appended {
            log_id: write.log_id,
            first_index,
            last_index: first_index + n - 1,
            first_position: 0,
        };
        let uuid = write.log_id.as_uuid();
        if let Some(reducer) = write.creates() {
            rows.create_log.push(uuid);
            rows.create_reducer.push(reducer);
            rows.create_at.push(write.recorded_at);
        }
        for (index, event) in (first_index..).zip(write.events.iter()) {
            ordinal += 1;
            rows.event_log.push(uuid);
            rows.event_index.push(index as i64);
            rows.event_ordinal.push(ordinal as i64);
            rows.event_recorded_at.push(write.recorded_at);
            rows.event_payload.push(event.as_str());
            rows.event_bytes
                .push(i32::try_from(event.as_str().len()).unwrap_or(i32::MAX));
        }
        let first_ordinal = ordinal + 1 - n;
        lasts.insert(write.log_id, (appended.last_index, ordinal));
        if let Some((key, print)) = key {
            batch_keys.insert(key, i);
            rows.key.push(key);
            rows.key_print.push(print.to_vec());
            rows.key_log.push(uuid);
            rows.key_first_index.push(first_index as i64);
            rows.key_last_index.push(appended.last_index as i64);
            rows.key_first_ordinal.push(first_ordinal as i64);
            rows.key_stored_at.push(write.recorded_at);
        }
        outcomes.push(Planned::Stored {
            appended,
            ordinal: first_ordinal,
        });
    }
    for id in &rows.create_log {
        let (last, ordinal) = lasts
            .remove(&LogId::from(*id))
            .expect("a created log holds events");
        rows.create_last_index.push(last as i64);
        rows.create_last_ordinal.push(ordinal as i64);
    }
    for (log_id, (last, ordinal)) in lasts {
        let previous = found.lasts[&log_id];
        rows.log_previous_index.push(previous as i64);
        rows.log_id.push(log_id.as_uuid());
        rows.log_last_index.push(last as i64);
        rows.log_last_ordinal.push(ordinal as i64);
    }
    Plan { outcomes, rows }
}

impl Plan<'_> {
    /// Every request's outcome, once the batch committed with its first
    /// event at position `base + 1`.
    pub(crate) fn outcomes(self, base: u64) -> Vec<Result<Written, StoreError>> {
        let stored: Vec<Option<Appended>> = self
            .outcomes
            .iter()
            .map(|planned| match planned {
                Planned::Stored { appended, ordinal } => Some(Appended {
                    first_position: base + ordinal,
                    ..*appended
                }),
                _ => None,
            })
            .collect();
        self.outcomes
            .into_iter()
            .zip(&stored)
            .map(|(planned, appended)| match planned {
                Planned::Done(outcome) => outcome,
                Planned::Stored { .. } => Ok(Written::Stored(appended.expect("stored"))),
                Planned::ReplayOf(earlier) => Ok(Written::Replayed(
                    stored[earlier].expect("replays follow a stored request"),
                )),
            })
            .collect()
    }
}

/// The idempotency fingerprints of a batch's requests that carry a key.
pub(crate) fn fingerprints(writes: &[Write]) -> Vec<Option<Vec<u8>>> {
    writes
        .iter()
        .map(|w| w.idempotency_key.as_ref().map(|_| w.fingerprint()))
        .collect()
}

/// The distinct log ids a batch names, sorted; only those it appends to
/// unless `creates_too` (a log being created is presumed new: if it is not,
/// inserting it fails and the batch is read again, whole).
pub(crate) fn log_ids(writes: &[Write], creates_too: bool) -> Vec<Uuid> {
    let mut ids: Vec<Uuid> = writes
        .iter()
        .filter(|w| creates_too || w.creates().is_none())
        .map(|w| w.log_id.as_uuid())
        .collect();
    ids.sort_unstable();
    ids.dedup();
    ids
}

/// The distinct idempotency keys a batch carries.
pub(crate) fn keys(writes: &[Write]) -> Vec<&str> {
    let mut keys: Vec<&str> = writes
        .iter()
        .filter_map(|w| w.idempotency_key.as_deref())
        .collect();
    keys.sort_unstable();
    keys.dedup();
    keys
}
