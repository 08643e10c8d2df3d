//! The batch loop, shared by the WebAssembly export and native tests, so a
//! reducer unit-tested natively runs the same code inside the sandbox.

use crate::{Aggregate, EventRecord, FoldError};

/// One event as stored: its JSON payload undecoded.
#[derive(Debug, Clone, Copy)]
pub struct RawEvent<'a> {
    /// The event's 0-based position in its log.
    pub index: u64,
    /// Microseconds since the Unix epoch, UTC.
    pub recorded_at: i64,
    /// The UTF-8 JSON payload.
    pub payload: &'a [u8],
}

/// Decodes and applies stored events in order, as the host's reducer does.
///
/// Stops at the first event that does not decode or that
/// [`Aggregate::validate`] refuses; the aggregate then holds the state after
/// the last event applied.
pub fn fold_raw<'a, A: Aggregate>(
    aggregate: &mut A,
    events: impl IntoIterator<Item = RawEvent<'a>>,
) -> Result<(), FoldError> {
    for raw in events {
        let text = std::str::from_utf8(raw.payload).map_err(|e| FoldError::UndecodableEvent {
            index: raw.index,
            message: e.to_string(),
        })?;
        apply(aggregate, raw.index, raw.recorded_at, text)?;
    }
    Ok(())
}

/// Decodes one event from its UTF-8 JSON payload, validates it against the
/// aggregate and applies it.
#[inline]
pub(crate) fn apply<A: Aggregate>(
    aggregate: &mut A,
    index: u64,
    recorded_at: i64,
    payload: &str,
) -> Result<(), FoldError> {
    let event = serde_json::from_str(payload).map_err(|e| FoldError::UndecodableEvent {
        index,
        message: e.to_string(),
    })?;
    apply_record(aggregate, &EventRecord::new(index, recorded_at, event))
}

/// Validates one decoded event against the aggregate and applies it.
#[inline]
fn apply_record<A: Aggregate>(
    aggregate: &mut A,
    record: &EventRecord<A::Event>,
) -> Result<(), FoldError> {
    aggregate
        .validate(record)
        .map_err(|r| FoldError::RejectedEvent {
            index: record.index(),
            message: r.message().to_owned(),
        })?;
    aggregate.apply(record);
    Ok(())
}

/// Applies already-decoded events in order, validating each.
pub fn fold<'a, A: Aggregate>(
    aggregate: &mut A,
    records: impl IntoIterator<Item = &'a EventRecord<A::Event>>,
) -> Result<(), FoldError>
where
    A::Event: 'a,
{
    records
        .into_iter()
        .try_for_each(|record| apply_record(aggregate, record))
}
