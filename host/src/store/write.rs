//! A write request as every store takes it, and what both stores share
//! about rows and errors. Only the SQL differs between them.

use uuid::Uuid;

use super::fingerprint::fingerprint;
use super::{Appended, EventMark, Events, LogInfo, StoreError, StoredEvent};
use crate::LogId;
use crate::clock::now_micros;

/// What a write does to its log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// Create the log, bound to `reducer`; its events start at index 0.
    Create {
        /// The reducer name the log is bound to.
        reducer: String,
        /// Whether the caller chose the log id. A generated id is not part
        /// of the request: a retry, which gets another generated id, still
        /// matches its idempotency key and replays.
        log_id_chosen: bool,
    },
    /// Append after the log's last event.
    Append {
        /// If set, the append succeeds only if the log ends at this index
        /// (optimistic concurrency).
        expected_last_index: Option<u64>,
    },
}

/// A create or an append: stored all or none.
#[derive(Debug, Clone)]
pub struct Write {
    /// The log written to.
    pub log_id: LogId,
    /// Create or append.
    pub target: Target,
    /// The events, at least one, stored at contiguous indexes.
    pub events: Events,
    /// Makes a retried request record nothing new.
    pub idempotency_key: Option<String>,
    /// The `recorded_at` of every event: microseconds since the Unix epoch,
    /// UTC, from the host's clock (a validating host folds with the same
    /// value it stores).
    pub recorded_at: i64,
}

impl Write {
    /// A create of `log_id` (`chosen`: picked by the caller) bound to
    /// `reducer`, recorded now.
    pub fn create(log_id: LogId, chosen: bool, reducer: &str, events: Events) -> Self {
        Self {
            log_id,
            target: Target::Create {
                reducer: reducer.to_owned(),
                log_id_chosen: chosen,
            },
            events,
            idempotency_key: None,
            recorded_at: now_micros(),
        }
    }

    /// An append to `log_id`, recorded now.
    pub fn append(log_id: LogId, expected_last_index: Option<u64>, events: Events) -> Self {
        Self {
            log_id,
            target: Target::Append {
                expected_last_index,
            },
            events,
            idempotency_key: None,
            recorded_at: now_micros(),
        }
    }

    /// The same write under an idempotency key.
    pub fn with_key(mut self, key: Option<&str>) -> Self {
        self.idempotency_key = key.map(str::to_owned);
        self
    }

    /// The reducer of a create.
    pub fn creates(&self) -> Option<&str> {
        match &self.target {
            Target::Create { reducer, .. } => Some(reducer),
            Target::Append { .. } => None,
        }
    }

    /// The expected last index of an append.
    pub fn expected_last_index(&self) -> Option<u64> {
        match self.target {
            Target::Append {
                expected_last_index,
            } => expected_last_index,
            Target::Create { .. } => None,
        }
    }

    /// The fingerprint stored with the idempotency key: what makes the
    /// request what it is, without its expected index (a retry whose
    /// expectation went stale is still the same request).
    pub(crate) fn fingerprint(&self) -> Vec<u8> {
        match &self.target {
            Target::Create {
                reducer,
                log_id_chosen,
            } => fingerprint(
                "create",
                log_id_chosen.then_some(self.log_id),
                reducer,
                &self.events,
            ),
            Target::Append { .. } => fingerprint("append", Some(self.log_id), "", &self.events),
        }
    }
}

/// A stored idempotency key: fingerprint, log id, first and last index,
/// first position.
pub(crate) type KeyRow = (Vec<u8>, Uuid, i64, i64, i64);

/// What an earlier request with the same key stored, as seen by a retry:
/// its outcome if the fingerprint matches, a reuse if not.
pub(crate) fn earlier_outcome(row: &KeyRow, print: &[u8]) -> Result<Appended, StoreError> {
    let (stored, log_id, first, last, position) = row;
    if stored.as_slice() == print {
        Ok(Appended {
            log_id: (*log_id).into(),
            first_index: *first as u64,
            last_index: *last as u64,
            first_position: *position as u64,
        })
    } else {
        Err(StoreError::IdempotencyKeyReused)
    }
}

/// A row of (log id, index, position, recorded_at, payload).
pub(crate) type EventRow = (Uuid, i64, i64, i64, String);

/// A row of one log's events: index, position, time, payload.
pub(crate) type LogEventRow = (i64, i64, i64, String);

/// A row of `log_id`'s events as an event.
pub(crate) fn log_event(
    log_id: LogId,
    (index, position, recorded_at, payload): LogEventRow,
) -> StoredEvent {
    StoredEvent {
        log_id,
        index: index as u64,
        position: position as u64,
        recorded_at,
        payload,
    }
}

/// A log's row joined with its last event's: reducer, created_at,
/// last_index, and the event's position and recorded_at (none for a log
/// without events).
pub(crate) type LogInfoRow = (String, i64, i64, Option<i64>, Option<i64>);

/// The metadata of `log_id` from its row, if it exists.
pub(crate) fn log_info(log_id: LogId, row: Option<LogInfoRow>) -> Result<LogInfo, StoreError> {
    let (reducer, created_at, last, position, recorded_at) =
        row.ok_or(StoreError::LogNotFound(log_id))?;
    Ok(LogInfo {
        log_id,
        reducer,
        created_at,
        last_index: last as u64,
        last_event: position
            .zip(recorded_at)
            .map(|(position, recorded_at)| EventMark {
                position: position as u64,
                recorded_at,
            }),
    })
}

/// Rows as events.
pub(crate) fn stored_events(rows: Vec<EventRow>) -> Vec<StoredEvent> {
    rows.into_iter()
        .map(|(log_id, index, position, recorded_at, payload)| {
            log_event(log_id.into(), (index, position, recorded_at, payload))
        })
        .collect()
}

/// The bounds of a read of indexes `from` through `through` (the end when
/// `None`), as the databases' integers.
pub(crate) fn index_bounds(from: u64, through: Option<u64>) -> (i64, i64) {
    let bound = |index: u64| i64::try_from(index).unwrap_or(i64::MAX);
    (bound(from), through.map_or(i64::MAX, bound))
}

/// A database failure, as the domain sees it: data the database refuses
/// (SQLSTATE classes 22 and 23: a value out of range, a constraint) is the
/// request's fault; anything else is an outage. A lost connection is noted
/// so that the pools stop reusing connections as old as it.
pub(crate) fn unavailable(error: sqlx::Error) -> StoreError {
    super::connection_loss::note(&error);
    if is_data_error(&error) {
        StoreError::Unstorable(error.to_string())
    } else {
        StoreError::Unavailable(error.to_string())
    }
}

/// Whether the database refused the data itself (SQLSTATE class 22 or 23).
pub(crate) fn is_data_error(error: &sqlx::Error) -> bool {
    error
        .as_database_error()
        .and_then(|e| e.code())
        .is_some_and(|code| code.starts_with("22") || code.starts_with("23"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Errors PostgreSQL raises because of the data are the request's
    /// fault; a lost connection is an outage.
    #[tokio::test]
    async fn data_errors_are_the_requests_fault() {
        let url = std::env::var("EVENTLOGS_TEST_POSTGRES")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned());
        let pool = match sqlx::PgPool::connect(&url).await {
            Ok(pool) => pool,
            Err(e) if std::env::var("CI").as_deref() != Ok("true") => {
                eprintln!("SKIPPED: PostgreSQL not reachable at {url}: {e}");
                return;
            }
            Err(e) => panic!("PostgreSQL is required under CI=true: {e}"),
        };
        for sql in ["SELECT 1 / 0", "SELECT 'x'::int", "SELECT 99999999999::int"] {
            let error = sqlx::query(sql).execute(&pool).await.unwrap_err();
            assert!(
                matches!(unavailable(error), StoreError::Unstorable(_)),
                "{sql}"
            );
        }
        let error = sqlx::query("SELECT * FROM no_such_table")
            .execute(&pool)
            .await
            .unwrap_err();
        assert!(matches!(unavailable(error), StoreError::Unavailable(_)));
        let refused = sqlx::PgPool::connect("postgres://postgres@127.0.0.1:1/x")
            .await
            .unwrap_err();
        assert!(matches!(unavailable(refused), StoreError::Unavailable(_)));
    }
}
