//! The production event store on PostgreSQL.
//!
//! Writes are group-committed: one transaction per batch of queued writes.
//! It locks the rows of the logs it names (`FOR UPDATE`, in id order) and
//! reads their `last_index` — the log's end is kept on its row, so a waiter
//! reads it fresh once the lock is granted — reads the idempotency keys,
//! inserts new logs, then stores every event, log end and key in one
//! statement that also takes the batch's range of global positions from the
//! `event_positions` row. That row's lock is held to commit, so positions
//! become visible in increasing order across every host process, with no
//! gaps. The primary key `(log_id, idx)` still backs the indexes. Every
//! query names its logs by `log_id` (the key lookup and the position
//! counter excepted).

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use sqlx::postgres::{PgPool, PgPoolOptions};
use sqlx::{Postgres, Transaction};
use uuid::Uuid;

use super::batch::Rows;
use super::execute::{self, BatchTx, Dialect, Executor};
use super::group_commit::GroupCommit;
use super::write::{EventRow, KeyRow, stored_events, unavailable};
use super::{EventStore, LogInfo, StoreError, StoredEvent, Write, Written};
use crate::LogId;

/// Writes queued per batch, at most.
const MAX_BATCH: usize = 256;

/// An [`EventStore`] on PostgreSQL.
#[derive(Clone)]
pub struct PostgresStore {
    pool: PgPool,
    commits: GroupCommit,
}

/// Batches in PostgreSQL's SQL.
struct Pg {
    pool: PgPool,
}

impl PostgresStore {
    /// Connects to `url` with a pool of 32 connections and applies the
    /// migrations in `migrations/postgres`.
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        Self::connect_with(url, 32).await
    }

    /// Connects to `url` with up to `max_connections` connections and
    /// applies the migrations in `migrations/postgres`.
    pub async fn connect_with(url: &str, max_connections: u32) -> Result<Self, StoreError> {
        let pool = PgPoolOptions::new()
            .max_connections(max_connections)
            // Fail fast while the database is down: requests get a 503
            // rather than waiting out the default 30 s.
            .acquire_timeout(Duration::from_secs(3))
            .connect(url)
            .await
            .map_err(unavailable)?;
        Self::with_pool(pool).await
    }

    /// Uses an existing pool, applying the migrations.
    pub async fn with_pool(pool: PgPool) -> Result<Self, StoreError> {
        sqlx::migrate!("../migrations/postgres")
            .run(&pool)
            .await
            .map_err(|e| StoreError::Unavailable(format!("migrations failed: {e}")))?;
        let writer = Arc::new(Executor(Pg { pool: pool.clone() }));
        let commits = GroupCommit::start(writer, MAX_BATCH);
        Ok(Self { pool, commits })
    }

    /// The connection pool.
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }
}

#[async_trait]
impl Dialect for Pg {
    type Tx = PgBatch;

    async fn begin(&self) -> Result<PgBatch, sqlx::Error> {
        Ok(PgBatch(self.pool.begin().await?))
    }

    async fn key_row(&self, key: &str) -> Result<Option<KeyRow>, sqlx::Error> {
        sqlx::query_as(
            "SELECT fingerprint, log_id, first_index, last_index, first_position
             FROM idempotency_keys WHERE idempotency_key = $1",
        )
        .bind(key)
        .fetch_optional(&self.pool)
        .await
    }

    fn is_transient(&self, error: &sqlx::Error) -> bool {
        is_transient(error)
    }
}

/// A batch's transaction on PostgreSQL.
struct PgBatch(Transaction<'static, Postgres>);

#[async_trait]
impl BatchTx for PgBatch {
    async fn lock_logs(&mut self, ids: &[Uuid]) -> Result<Vec<(Uuid, i64)>, sqlx::Error> {
        sqlx::query_as(
            "SELECT log_id, last_index FROM logs WHERE log_id = ANY($1) ORDER BY log_id FOR UPDATE",
        )
        .bind(ids)
        .fetch_all(&mut *self.0)
        .await
    }

    async fn read_keys(&mut self, keys: &[&str]) -> Result<Vec<(String, KeyRow)>, sqlx::Error> {
        let rows: Vec<(String, Vec<u8>, Uuid, i64, i64, i64)> = sqlx::query_as(
            "SELECT idempotency_key, fingerprint, log_id, first_index, last_index, first_position
             FROM idempotency_keys WHERE idempotency_key = ANY($1)",
        )
        .bind(keys)
        .fetch_all(&mut *self.0)
        .await?;
        Ok(rows
            .into_iter()
            .map(|(key, print, log, first, last, position)| {
                (key, (print, log, first, last, position))
            })
            .collect())
    }

    async fn insert_logs(&mut self, rows: &Rows<'_>) -> Result<Vec<Uuid>, sqlx::Error> {
        sqlx::query_scalar(
            "INSERT INTO logs (log_id, reducer, created_at)
             SELECT * FROM UNNEST($1::uuid[], $2::text[], $3::bigint[])
             ON CONFLICT DO NOTHING RETURNING log_id",
        )
        .bind(&rows.create_log)
        .bind(&rows.create_reducer)
        .bind(&rows.create_at)
        .fetch_all(&mut *self.0)
        .await
    }

    async fn store_rows(&mut self, rows: &Rows<'_>) -> Result<Option<u64>, sqlx::Error> {
        store_rows(&mut self.0, rows).await
    }

    async fn commit(self) -> Result<(), sqlx::Error> {
        self.0.commit().await
    }
}

/// Stores a planned batch's events, log ends and keys in one statement,
/// taking its range of positions. Returns the position before the first
/// event, or `None` if a key had been stored meanwhile by another process.
async fn store_rows(
    tx: &mut Transaction<'static, Postgres>,
    rows: &Rows<'_>,
) -> Result<Option<u64>, sqlx::Error> {
    let (base, keys_stored): (i64, i64) = sqlx::query_as(
        "WITH range AS (
             UPDATE event_positions SET last = last + $1 RETURNING last - $1 AS base
         ), stored_events AS (
             INSERT INTO events (log_id, idx, position, recorded_at, payload)
             SELECT e.log_id, e.idx, range.base + e.ordinal, e.recorded_at, e.payload::json
             FROM UNNEST($2::uuid[], $3::bigint[], $4::bigint[], $5::bigint[], $6::text[])
                  AS e(log_id, idx, ordinal, recorded_at, payload), range
         ), ends AS (
             UPDATE logs SET last_index = u.last_index, last_position = range.base + u.ordinal
             FROM UNNEST($7::uuid[], $8::bigint[], $9::bigint[]) AS u(log_id, last_index, ordinal), range
             WHERE logs.log_id = u.log_id
         ), keys AS (
             INSERT INTO idempotency_keys
                 (idempotency_key, fingerprint, log_id, first_index, last_index, first_position)
             SELECT k.key, k.print, k.log_id, k.first_index, k.last_index, range.base + k.ordinal
             FROM UNNEST($10::text[], $11::bytea[], $12::uuid[], $13::bigint[], $14::bigint[], $15::bigint[])
                  AS k(key, print, log_id, first_index, last_index, ordinal), range
             ON CONFLICT DO NOTHING RETURNING 1
         )
         SELECT range.base, (SELECT count(*) FROM keys) FROM range",
    )
    .bind(rows.events())
    .bind(&rows.event_log)
    .bind(&rows.event_index)
    .bind(&rows.event_ordinal)
    .bind(&rows.event_recorded_at)
    .bind(&rows.event_payload)
    .bind(&rows.log_id)
    .bind(&rows.log_last_index)
    .bind(&rows.log_last_ordinal)
    .bind(&rows.key)
    .bind(&rows.key_print)
    .bind(&rows.key_log)
    .bind(&rows.key_first_index)
    .bind(&rows.key_last_index)
    .bind(&rows.key_first_ordinal)
    .fetch_one(&mut **tx)
    .await?;
    Ok((keys_stored as usize == rows.key.len()).then_some(base as u64))
}

/// A failure that running the batch again resolves: a deadlock or a
/// serialization failure.
fn is_transient(error: &sqlx::Error) -> bool {
    error
        .as_database_error()
        .and_then(|e| e.code())
        .is_some_and(|code| code == "40P01" || code == "40001")
}

#[async_trait]
impl EventStore for PostgresStore {
    async fn write(&self, write: Write) -> Result<Written, StoreError> {
        self.commits.submit(write).await
    }

    async fn earlier(&self, write: &Write) -> Result<Option<Written>, StoreError> {
        let dialect = Pg {
            pool: self.pool.clone(),
        };
        execute::earlier(&dialect, write).await
    }

    async fn log(&self, log_id: LogId) -> Result<LogInfo, StoreError> {
        let row: Option<(String, i64, i64)> =
            sqlx::query_as("SELECT reducer, created_at, last_index FROM logs WHERE log_id = $1")
                .bind(log_id.as_uuid())
                .fetch_optional(&self.pool)
                .await
                .map_err(unavailable)?;
        let (reducer, created_at, last) = row.ok_or(StoreError::LogNotFound(log_id))?;
        Ok(LogInfo {
            log_id,
            reducer,
            created_at,
            last_index: last as u64,
        })
    }

    async fn tail(
        &self,
        log_id: LogId,
        from: u64,
        limit: u32,
    ) -> Result<Vec<StoredEvent>, StoreError> {
        let rows: Vec<EventRow> = sqlx::query_as(
            "SELECT log_id, idx, position, recorded_at, payload::text FROM events
             WHERE log_id = $1 AND idx >= $2 AND idx < $2 + $3 ORDER BY idx",
        )
        .bind(log_id.as_uuid())
        .bind(i64::try_from(from).unwrap_or(i64::MAX - i64::from(u32::MAX)))
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await
        .map_err(unavailable)?;
        Ok(stored_events(rows))
    }

    async fn feed(&self, after: u64, limit: u32) -> Result<Vec<StoredEvent>, StoreError> {
        let rows: Vec<EventRow> = sqlx::query_as(
            "SELECT log_id, idx, position, recorded_at, payload::text FROM events
             WHERE position > $1 ORDER BY position LIMIT $2",
        )
        .bind(i64::try_from(after).unwrap_or(i64::MAX))
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await
        .map_err(unavailable)?;
        Ok(stored_events(rows))
    }

    async fn recent_logs(&self, reducer: &str, limit: u32) -> Result<Vec<LogId>, StoreError> {
        let ids: Vec<Uuid> = sqlx::query_scalar(
            "SELECT log_id FROM logs WHERE reducer = $1 ORDER BY last_position DESC LIMIT $2",
        )
        .bind(reducer)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await
        .map_err(unavailable)?;
        Ok(ids.into_iter().map(LogId::from).collect())
    }

    async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT count(*) FROM _sqlx_migrations")
            .execute(&self.pool)
            .await
            .map(|_| ())
            .map_err(unavailable)
    }
}
