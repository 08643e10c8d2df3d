//! Event stores: where logs and their immutable events live.
//!
//! [`EventStore`] is shaped by the domain, not by SQL: write (create a log
//! with its first events, or append to one) with an optional expected last
//! index and idempotency key, read metadata, read a page of a log's events,
//! read the global feed by position. Both implementations —
//! [`postgres::PostgresStore`] for production and [`sqlite::SqliteStore`] as
//! the embedded default — translate database errors into [`StoreError`]
//! here, at the storage boundary, and pass the same behavioural test suite.
//!
//! Writes go through one group-commit queue per store (`group_commit`):
//! whatever is queued when the writer becomes free is read, planned
//! (`batch`) and stored as one atomic write (`execute`; each store only
//! supplies its SQL), and every request gets its own outcome. Every stored event gets a `position`,
//! unique in the database, gap-free and increasing in commit order.
//!
//! The feed (`feed`) reads every log's events in position order.
//!
//! The same databases hold the reducer registry's versions and activations,
//! behind [`catalog::ReducerCatalog`].

pub mod catalog;
pub mod feed;
pub mod hints;
pub mod postgres;
pub mod projections;
pub mod sqlite;
pub mod subscriptions;

mod batch;
mod connection_loss;
mod copy_out;
mod execute;
mod fingerprint;
mod group_commit;
mod known_ends;
mod write;

use std::sync::Arc;

use async_trait::async_trait;
use futures_util::stream::BoxStream;

use crate::LogId;
use crate::payload::Payload;

pub use feed::{FeedEvent, FeedFilter, FeedPage};
pub use hints::Hints;
pub use projections::{Projection, ProjectionState, ProjectionStore};
pub use subscriptions::{Subscription, SubscriptionStore};
pub use write::{Target, Write};

/// Where a create or append went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Appended {
    /// The log written to.
    pub log_id: LogId,
    /// Index of the first event stored.
    pub first_index: u64,
    /// Index of the last event stored.
    pub last_index: u64,
    /// Global position of the first event stored; the request's events have
    /// consecutive positions.
    pub first_position: u64,
}

impl Appended {
    /// Global position of the last event stored.
    pub fn last_position(&self) -> u64 {
        self.first_position + (self.last_index - self.first_index)
    }
}

/// The outcome of a write that succeeded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Written {
    /// The events were stored now.
    Stored(Appended),
    /// A request with the same idempotency key and content was recorded
    /// earlier; nothing new was stored, and this is what it stored then.
    Replayed(Appended),
}

impl Written {
    /// Where the events are, whether stored now or earlier.
    pub fn appended(&self) -> Appended {
        match *self {
            Self::Stored(appended) | Self::Replayed(appended) => appended,
        }
    }

    /// Whether this answers a retry.
    pub fn is_replay(&self) -> bool {
        matches!(self, Self::Replayed(_))
    }
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
    /// The stored event at `last_index`; `None` only for a log that holds
    /// no event yet.
    pub last_event: Option<EventMark>,
}

/// What tells one stored event from any other that could ever stand at
/// its index: its global position and the time it was recorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EventMark {
    /// The event's global position.
    pub position: u64,
    /// When it was recorded: microseconds since the Unix epoch, UTC.
    pub recorded_at: i64,
}

/// One stored event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredEvent {
    /// The log it belongs to.
    pub log_id: LogId,
    /// 0-based position in the log.
    pub index: u64,
    /// Position in the whole database: unique, gap-free, increasing in
    /// commit order.
    pub position: u64,
    /// When the host recorded it: microseconds since the Unix epoch, UTC.
    pub recorded_at: i64,
    /// The event's JSON, exactly as the client sent it.
    pub payload: String,
}

/// A log's events as [`EventStore::read`] yields them.
pub type EventStream<'a> = BoxStream<'a, Result<StoredEvent, StoreError>>;

/// Why a store operation did not happen. Nothing was stored in any case.
/// Everything except [`StoreError::Unavailable`] is the caller's to handle.
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
    /// The idempotency key was used before for a different request.
    #[error("idempotency key already used for a different request")]
    IdempotencyKeyReused,
    /// A create or append with no events.
    #[error("at least one event is required")]
    NoEvents,
    /// The database refused the request's data (a value out of its range,
    /// for example). The text is the database's, for the log only.
    #[error("the database refused the data: {0}")]
    Unstorable(String),
    /// The database could not be reached or failed.
    #[error("event store unavailable: {0}")]
    Unavailable(String),
}

/// Storage of logs and events (and of the feed's subscriptions and
/// projections, which live beside them).
#[async_trait]
pub trait EventStore: SubscriptionStore + ProjectionStore {
    /// Creates a log or appends to one, all events or none. Concurrent
    /// writes share transactions; each gets its own outcome.
    async fn write(&self, write: Write) -> Result<Written, StoreError>;

    /// What an earlier request with `write`'s idempotency key recorded:
    /// `Replayed` if it was this same request, [`StoreError::IdempotencyKeyReused`]
    /// if another, `None` if the key is unused (or `write` has none).
    async fn earlier(&self, write: &Write) -> Result<Option<Written>, StoreError>;

    /// A log's metadata.
    async fn log(&self, log_id: LogId) -> Result<LogInfo, StoreError>;

    /// Up to `limit` events of a log from index `from`, in order, cut once
    /// their payloads reach `max_bytes` (at least one event: the page stops
    /// before the first event that starts at or past the budget). An empty
    /// page past the end; [`StoreError::LogNotFound`] for an unknown log.
    async fn events(
        &self,
        log_id: LogId,
        from: u64,
        limit: u32,
        max_bytes: u64,
    ) -> Result<Vec<StoredEvent>, StoreError> {
        let page = self.tail(log_id, from, limit, max_bytes).await?;
        if page.is_empty() {
            // An empty page is only an answer for a log that exists.
            self.log(log_id).await?;
        }
        Ok(page)
    }

    /// Like [`EventStore::events`], for a log the caller knows exists (logs
    /// are never deleted): an empty page is the end, with no further query.
    async fn tail(
        &self,
        log_id: LogId,
        from: u64,
        limit: u32,
        max_bytes: u64,
    ) -> Result<Vec<StoredEvent>, StoreError>;

    /// Every event of a log the caller knows exists, from index `from`
    /// through `through` (through the log's end when `None`), in index
    /// order, read as one query as the caller consumes them: a fold's read,
    /// however long the log. What it yields is one consistent snapshot.
    fn read(&self, log_id: LogId, from: u64, through: Option<u64>) -> EventStream<'_>;

    /// Up to `limit` events passing `filter` with a position after
    /// `after`, in position order, cut once their payloads reach
    /// `max_bytes` (at least one event). Positions are gap-free and become
    /// visible in order, so a reader that goes on from the page's
    /// [`FeedPage::through`] never misses an event committed later.
    async fn feed(
        &self,
        after: u64,
        filter: &FeedFilter,
        limit: u32,
        max_bytes: u64,
    ) -> Result<FeedPage, StoreError>;

    /// The position of the last event committed (0 before the first).
    async fn feed_head(&self) -> Result<u64, StoreError>;

    /// Hints that events may have been committed, by any process.
    async fn feed_hints(&self) -> Result<Box<dyn Hints>, StoreError>;

    /// Up to `limit` logs bound to `reducer`, most recently appended first.
    async fn recent_logs(&self, reducer: &str, limit: u32) -> Result<Vec<LogId>, StoreError>;

    /// Deletes up to `limit` idempotency keys stored before `stored_before`
    /// (microseconds since the Unix epoch); returns how many. A retry with
    /// a forgotten key is a new request.
    async fn forget_keys(&self, stored_before: i64, limit: u32) -> Result<u64, StoreError>;

    /// The host secret named `name`, storing `fresh` under it if there is
    /// none yet; every caller on one database gets the same value.
    async fn host_secret(&self, name: &str, fresh: &str) -> Result<String, StoreError>;

    /// Succeeds when the database answers and its migrations are applied
    /// (readiness).
    async fn ping(&self) -> Result<(), StoreError>;
}

/// `sql`, written with PostgreSQL's numbered parameters (`$1`), with
/// SQLite's (`?1`): for statements both stores share. The SQL must hold no
/// other `$`.
pub(crate) fn sqlite_sql(sql: &str) -> String {
    sql.replace('$', "?")
}

/// The payloads of a write, shared between the queue and its caller.
pub type Events = Arc<[Payload]>;
