//! The embedded event store on SQLite: the default when no database is
//! configured, so a newcomer runs eventlogs with nothing installed.
//!
//! Writes are group-committed by one writer per process: each batch is read
//! in one read transaction, then stored in one transaction that takes
//! SQLite's write lock at its start (`BEGIN IMMEDIATE`), so concurrent
//! requests queue in the process instead of spinning on the busy timeout.
//! A row another process stored between the two fails the store on its
//! primary key, and the batch is read again. Positions come from the single
//! `event_positions` row under the write lock. The primary key `(log_id, idx)`
//! still backs the indexes.

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use futures_util::StreamExt;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use sqlx::{ConnectOptions, Sqlite, Transaction};
use uuid::Uuid;

use super::batch::Rows;
use super::execute::{self, Dialect, Exclusive, Executor, Read};
use super::feed::{self, FeedFilter, FeedPage, FeedRow};
use super::group_commit::GroupCommit;
use super::hints::{Hints, Poll};
use super::write::{
    EventRow, KeyRow, LogEventRow, LogInfoRow, index_bounds, log_event, log_info, stored_events,
    unavailable,
};
use super::{EventStore, EventStream, LogInfo, StoreError, StoredEvent, Write, Written};
use crate::LogId;

/// Writes queued per batch, at most.
const MAX_BATCH: usize = 256;

/// How often another process's commits are looked for by a process
/// following the feed.
const FEED_POLL_INTERVAL: Duration = Duration::from_millis(100);

/// An [`EventStore`] in an SQLite file.
#[derive(Clone)]
pub struct SqliteStore {
    pool: SqlitePool,
    commits: GroupCommit,
}

impl SqliteStore {
    /// Opens (creating if needed) the database at `url` (`sqlite://FILE`),
    /// in WAL mode, and applies the migrations in `migrations/sqlite`.
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        let options = SqliteConnectOptions::from_str(url)
            .map_err(unavailable)?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .foreign_keys(true)
            .busy_timeout(Duration::from_secs(10))
            // A fold's read stays open while the fold runs: see the
            // PostgreSQL store.
            .log_slow_statements(log::LevelFilter::Debug, Duration::from_secs(1));
        let pool = SqlitePoolOptions::new()
            .max_connections(8)
            .connect_with(options)
            .await
            .map_err(unavailable)?;
        sqlx::migrate!("../migrations/sqlite")
            .run(&pool)
            .await
            .map_err(|e| StoreError::Unavailable(format!("migrations failed: {e}")))?;
        let writer = Arc::new(Executor::new(Lite { pool: pool.clone() }));
        let commits = GroupCommit::start(writer, MAX_BATCH);
        Ok(Self { pool, commits })
    }

    /// The connection pool.
    pub fn pool(&self) -> &SqlitePool {
        &self.pool
    }
}

/// Batches in SQLite's SQL. SQLite runs in this process, so a statement per
/// row costs microseconds; no array parameters are needed.
struct Lite {
    pool: SqlitePool,
}

const KEY_ROW: &str = "SELECT fingerprint, log_id, first_index, last_index, first_position
     FROM idempotency_keys WHERE idempotency_key = ?";

#[async_trait]
impl Dialect for Lite {
    type Exclusive = LiteExclusive;

    async fn read(&self, ids: &[Uuid], keys: &[&str]) -> Result<Read, sqlx::Error> {
        // One read transaction, so one snapshot: logs and keys written
        // together are seen together.
        let mut tx = self.pool.begin().await?;
        let read = read(&mut tx, ids, keys).await?;
        tx.commit().await?;
        Ok(read)
    }

    async fn store(&self, rows: &Rows<'_>) -> Result<u64, sqlx::Error> {
        let mut tx = self.exclusive().await?;
        let base = tx.store(rows).await?;
        tx.commit().await?;
        Ok(base)
    }

    async fn exclusive(&self) -> Result<LiteExclusive, sqlx::Error> {
        Ok(LiteExclusive(
            self.pool.begin_with("BEGIN IMMEDIATE").await?,
        ))
    }

    async fn key_row(&self, key: &str) -> Result<Option<KeyRow>, sqlx::Error> {
        sqlx::query_as(KEY_ROW)
            .bind(key)
            .fetch_optional(&self.pool)
            .await
    }

    fn is_transient(&self, error: &sqlx::Error) -> bool {
        // Another process held the write lock past the busy timeout.
        error
            .as_database_error()
            .and_then(|e| e.code())
            .is_some_and(|code| code == "5" || code == "517")
    }

    /// SQLite runs in this process: reading a batch's logs costs
    /// microseconds, so every batch reads them.
    const PRESUMES_KNOWN_ENDS: bool = false;
}

/// A transaction holding SQLite's write lock (`BEGIN IMMEDIATE`).
struct LiteExclusive(Transaction<'static, Sqlite>);

#[async_trait]
impl Exclusive for LiteExclusive {
    async fn read(&mut self, ids: &[Uuid], keys: &[&str]) -> Result<Read, sqlx::Error> {
        read(&mut self.0, ids, keys).await
    }

    async fn store(&mut self, rows: &Rows<'_>) -> Result<u64, sqlx::Error> {
        store_rows(&mut self.0, rows).await
    }

    async fn commit(self) -> Result<(), sqlx::Error> {
        self.0.commit().await
    }
}

/// The last index of the existing logs among `ids` and the stored keys
/// among `keys`, a statement per row (SQLite runs in this process, so that
/// costs microseconds).
async fn read(
    tx: &mut Transaction<'static, Sqlite>,
    ids: &[Uuid],
    keys: &[&str],
) -> Result<Read, sqlx::Error> {
    let mut lasts = Vec::with_capacity(ids.len());
    for &id in ids {
        let last: Option<i64> = sqlx::query_scalar("SELECT last_index FROM logs WHERE log_id = ?")
            .bind(id)
            .fetch_optional(&mut **tx)
            .await?;
        lasts.extend(last.map(|last| (id, last)));
    }
    let mut rows = Vec::new();
    for &key in keys {
        let row: Option<KeyRow> = sqlx::query_as(KEY_ROW)
            .bind(key)
            .fetch_optional(&mut **tx)
            .await?;
        rows.extend(row.map(|row| (key.to_owned(), row)));
    }
    Ok((lasts, rows))
}

/// Stores a planned batch under the write lock, a statement per row: the
/// range of positions, the new logs, the events, the ends of the existing
/// logs and the keys. A row that collides with one stored since the read
/// fails on its primary key.
async fn store_rows(
    tx: &mut Transaction<'static, Sqlite>,
    rows: &Rows<'_>,
) -> Result<u64, sqlx::Error> {
    let tx = &mut **tx;
    let base: i64 =
        sqlx::query_scalar("UPDATE event_positions SET last = last + ?1 RETURNING last - ?1")
            .bind(rows.events())
            .fetch_one(&mut *tx)
            .await?;
    for i in 0..rows.create_log.len() {
        sqlx::query(
            "INSERT INTO logs (log_id, reducer, created_at, last_index, last_position)
             VALUES (?, ?, ?, ?, ?)",
        )
        .bind(rows.create_log[i])
        .bind(rows.create_reducer[i])
        .bind(rows.create_at[i])
        .bind(rows.create_last_index[i])
        .bind(base + rows.create_last_ordinal[i])
        .execute(&mut *tx)
        .await?;
    }
    for i in 0..rows.event_log.len() {
        sqlx::query(
            "INSERT INTO events (log_id, idx, position, recorded_at, payload, payload_bytes)
             VALUES (?, ?, ?, ?, ?, ?)",
        )
        .bind(rows.event_log[i])
        .bind(rows.event_index[i])
        .bind(base + rows.event_ordinal[i])
        .bind(rows.event_recorded_at[i])
        .bind(rows.event_payload[i])
        .bind(rows.event_bytes[i])
        .execute(&mut *tx)
        .await?;
    }
    for i in 0..rows.log_id.len() {
        sqlx::query("UPDATE logs SET last_index = ?, last_position = ? WHERE log_id = ?")
            .bind(rows.log_last_index[i])
            .bind(base + rows.log_last_ordinal[i])
            .bind(rows.log_id[i])
            .execute(&mut *tx)
            .await?;
    }
    for i in 0..rows.key.len() {
        sqlx::query(
            "INSERT INTO idempotency_keys
                 (idempotency_key, fingerprint, log_id, first_index, last_index, first_position, stored_at)
             VALUES (?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(rows.key[i])
        .bind(&rows.key_print[i])
        .bind(rows.key_log[i])
        .bind(rows.key_first_index[i])
        .bind(rows.key_last_index[i])
        .bind(base + rows.key_first_ordinal[i])
        .bind(rows.key_stored_at[i])
        .execute(&mut *tx)
        .await?;
    }
    Ok(base as u64)
}

#[async_trait]
impl EventStore for SqliteStore {
    async fn write(&self, write: Write) -> Result<Written, StoreError> {
        self.commits.submit(write).await
    }

    async fn earlier(&self, write: &Write) -> Result<Option<Written>, StoreError> {
        let dialect = Lite {
            pool: self.pool.clone(),
        };
        execute::earlier(&dialect, write).await
    }

    async fn log(&self, log_id: LogId) -> Result<LogInfo, StoreError> {
        // The last event comes along (a lookup by primary key), so a
        // reduce can tell a cached reduction through it is current without
        // reading the log.
        let row: Option<LogInfoRow> = sqlx::query_as(
            "SELECT l.reducer, l.created_at, l.last_index, e.position, e.recorded_at
             FROM logs l LEFT JOIN events e ON e.log_id = l.log_id AND e.idx = l.last_index
             WHERE l.log_id = ?",
        )
        .bind(log_id.as_uuid())
        .fetch_optional(&self.pool)
        .await
        .map_err(unavailable)?;
        log_info(log_id, row)
    }

    async fn tail(
        &self,
        log_id: LogId,
        from: u64,
        limit: u32,
        max_bytes: u64,
    ) -> Result<Vec<StoredEvent>, StoreError> {
        // The budget is applied over the sizes first, so the payloads it
        // leaves out are never copied.
        let rows: Vec<EventRow> = sqlx::query_as(
            "SELECT log_id, idx, position, recorded_at, payload FROM events
             WHERE log_id = ?1 AND idx >= ?2 AND idx <= (
                 SELECT max(idx) FROM (
                     SELECT idx, sum(payload_bytes) OVER (ORDER BY idx) - payload_bytes AS before
                     FROM events WHERE log_id = ?1 AND idx >= ?2 AND idx < ?2 + ?3
                 ) WHERE before < ?4)
             ORDER BY idx",
        )
        .bind(log_id.as_uuid())
        .bind(i64::try_from(from).unwrap_or(i64::MAX - i64::from(u32::MAX)))
        .bind(i64::from(limit))
        .bind(i64::try_from(max_bytes).unwrap_or(i64::MAX))
        .fetch_all(&self.pool)
        .await
        .map_err(unavailable)?;
        Ok(stored_events(rows))
    }

    fn read(&self, log_id: LogId, from: u64, through: Option<u64>) -> EventStream<'_> {
        let (from, through) = index_bounds(from, through);
        sqlx::query_as::<_, LogEventRow>(
            "SELECT idx, position, recorded_at, payload FROM events
             WHERE log_id = ?1 AND idx >= ?2 AND idx <= ?3 ORDER BY idx",
        )
        .bind(log_id.as_uuid())
        .bind(from)
        .bind(through)
        .fetch(&self.pool)
        .map(move |row| row.map(|row| log_event(log_id, row)).map_err(unavailable))
        .boxed()
    }

    async fn feed(
        &self,
        after: u64,
        filter: &FeedFilter,
        limit: u32,
        max_bytes: u64,
    ) -> Result<FeedPage, StoreError> {
        let sql = super::sqlite_sql(&feed::page_sql(filter, "e.payload"));
        let mut query = sqlx::query_as(sqlx::AssertSqlSafe(sql))
            .bind(i64::try_from(after).unwrap_or(i64::MAX))
            .bind(i64::from(limit))
            .bind(i64::try_from(max_bytes).unwrap_or(i64::MAX));
        if let Some(reducer) = &filter.reducer {
            query = query.bind(reducer);
        }
        if let Some(log_id) = filter.log_id {
            query = query.bind(log_id.as_uuid());
        }
        let rows: Vec<FeedRow> = query.fetch_all(&self.pool).await.map_err(unavailable)?;
        Ok(feed::page(rows, after, limit, max_bytes))
    }

    async fn feed_head(&self) -> Result<u64, StoreError> {
        sqlx::query_scalar("SELECT last FROM event_positions")
            .fetch_one(&self.pool)
            .await
            .map(|last: i64| last as u64)
            .map_err(unavailable)
    }

    async fn feed_hints(&self) -> Result<Box<dyn Hints>, StoreError> {
        // Another process's commits are seen by polling; this process's own
        // wake its followers directly.
        Ok(Box::new(Poll(FEED_POLL_INTERVAL)))
    }

    async fn recent_logs(&self, reducer: &str, limit: u32) -> Result<Vec<LogId>, StoreError> {
        let ids: Vec<Uuid> = sqlx::query_scalar(
            "SELECT log_id FROM logs WHERE reducer = ? ORDER BY last_position DESC LIMIT ?",
        )
        .bind(reducer)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await
        .map_err(unavailable)?;
        Ok(ids.into_iter().map(LogId::from).collect())
    }

    async fn forget_keys(&self, stored_before: i64, limit: u32) -> Result<u64, StoreError> {
        sqlx::query(
            "DELETE FROM idempotency_keys WHERE idempotency_key IN (
                 SELECT idempotency_key FROM idempotency_keys WHERE stored_at < ? LIMIT ?)",
        )
        .bind(stored_before)
        .bind(i64::from(limit))
        .execute(&self.pool)
        .await
        .map(|done| done.rows_affected())
        .map_err(unavailable)
    }

    async fn host_secret(&self, name: &str, fresh: &str) -> Result<String, StoreError> {
        sqlx::query(
            "INSERT INTO host_secrets (name, secret) VALUES (?1, ?2) ON CONFLICT (name) DO NOTHING",
        )
        .bind(name)
        .bind(fresh)
        .execute(&self.pool)
        .await
        .map_err(unavailable)?;
        sqlx::query_scalar("SELECT secret FROM host_secrets WHERE name = ?1")
            .bind(name)
            .fetch_one(&self.pool)
            .await
            .map_err(unavailable)
    }

    async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT count(*) FROM _sqlx_migrations")
            .execute(&self.pool)
            .await
            .map(|_| ())
            .map_err(unavailable)
    }
}
