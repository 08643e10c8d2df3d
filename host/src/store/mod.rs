//! Event stores: where logs and their immutable events live.
//!
//! [`EventStore`] is shaped by the domain, not by SQL: create a log with its
//! first events, append atomically with an optional expected last index and
//! idempotency key, read metadata, read a page of events. Both
//! implementations — [`postgres::PostgresStore`] for production and
//! [`sqlite::SqliteStore`] as the embedded default — translate database
//! errors into [`StoreError`] here, at the storage boundary, and pass the
//! same behavioural test suite.
//!
//! The same databases hold the reducer registry's versions and activations,
//! behind [`catalog::ReducerCatalog`].

pub mod catalog;
pub mod postgres;
pub mod sqlite;

mod fingerprint;
mod write;

use async_trait::async_trait;
use serde_json::Value;

use crate::LogId;

pub(crate) use fingerprint::fingerprint;

/// Creating a log: its id, the reducer it is bound to, its first events.
#[derive(Debug, Clone, Copy)]
pub struct Create<'a> {
    /// The new log's id (caller-chosen or [`LogId::new`]).
    pub log_id: LogId,
    /// Whether the caller chose `log_id`. A generated id is not part of the
    /// request: a retry, which gets another generated id, still matches its
    /// idempotency key and replays.
    pub log_id_chosen: bool,
    /// The reducer name the log is bound to.
    pub reducer: &'a str,
    /// The first events, stored at indexes 0, 1, …; at least one.
    pub events: &'a [Value],
    /// Makes a retried create record nothing new.
    pub idempotency_key: Option<&'a str>,
}

/// Appending events to an existing log, atomically.
#[derive(Debug, Clone, Copy)]
pub struct Append<'a> {
    /// The log to append to.
    pub log_id: LogId,
    /// The events, stored at contiguous indexes after the current last one;
    /// at least one.
    pub events: &'a [Value],
    /// If set, the append succeeds only if the log currently ends at this
    /// index (optimistic concurrency).
    pub expected_last_index: Option<u64>,
    /// Makes a retried append record nothing new.
    pub idempotency_key: Option<&'a str>,
}

/// What a create or append stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Appended {
    /// The log written to.
    pub log_id: LogId,
    /// Index of the first event stored.
    pub first_index: u64,
    /// Index of the last event stored.
    pub last_index: u64,
}

/// A log's metadata.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogInfo {
    /// The log's id.
    pub log_id: LogId,
    /// The reducer the log is bound to.
    pub reducer: String,
    /// When the log was created: microseconds since the Unix epoch, UTC.
    pub created_at: i64,
    /// Index of the log's last event.
    pub last_index: u64,
}

/// One stored event.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredEvent {
    /// 0-based position in the log.
    pub index: u64,
    /// When the store recorded it: microseconds since the Unix epoch, UTC.
    pub recorded_at: i64,
    /// The event's JSON, as text.
    pub payload: String,
}

/// Why a store operation did not happen. Everything except
/// [`StoreError::Unavailable`] is the caller's to handle; nothing was stored
/// in any case.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    /// No log has this id.
    #[error("log {0} not found")]
    LogNotFound(LogId),
    /// A log with this id already exists (and no idempotency key matched).
    #[error("log {0} already exists")]
    LogExists(LogId),
    /// The log does not end at the expected index (or another writer won
    /// the race to it).
    #[error("log does not end at the expected index; its last index is {current_last_index}")]
    ConcurrentAppend {
        /// The log's last index now.
        current_last_index: u64,
    },
    /// A request with this idempotency key and the same content was already
    /// recorded; this is what it stored.
    #[error("idempotent replay of an earlier request")]
    IdempotentReplay(Appended),
    /// The idempotency key was used before for a different request.
    #[error("idempotency key already used for a different request")]
    IdempotencyKeyReused,
    /// A create or append with no events.
    #[error("at least one event is required")]
    NoEvents,
    /// The database could not be reached or failed.
    #[error("event store unavailable: {0}")]
    Unavailable(String),
}

/// Storage of logs and events.
#[async_trait]
pub trait EventStore: Send + Sync {
    /// Creates a log with its first events.
    async fn create(&self, request: Create<'_>) -> Result<Appended, StoreError>;

    /// Appends events to a log, all or none.
    async fn append(&self, request: Append<'_>) -> Result<Appended, StoreError>;

    /// A log's metadata.
    async fn log(&self, log_id: LogId) -> Result<LogInfo, StoreError>;

    /// Up to `limit` events of a log from index `from`, in order. An empty
    /// page past the end; [`StoreError::LogNotFound`] for an unknown log.
    async fn events(
        &self,
        log_id: LogId,
        from: u64,
        limit: u32,
    ) -> Result<Vec<StoredEvent>, StoreError>;

    /// Succeeds when the database answers and its migrations are applied
    /// (readiness).
    async fn ping(&self) -> Result<(), StoreError>;
}
