//! The embedded event store on SQLite: the default when no database is
//! configured, so a newcomer runs eventlogs with nothing installed.
//!
//! Writers take SQLite's write lock at the start of their transaction
//! (`BEGIN IMMEDIATE`), so an expected-index check and the insert that
//! follows cannot interleave with another writer; the primary key
//! `(log_id, idx)` still backs the rule. Timestamps come from the host's
//! clock, which is the server's clock here.

use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use sqlx::{Sqlite, Transaction};

use super::write::{KeyRow, Write, earlier_outcome, stored_events, unavailable};
use super::{Append, Appended, Create, EventStore, LogInfo, StoreError, StoredEvent};
use crate::LogId;
use crate::clock::now_micros;

/// An [`EventStore`] in an SQLite file.
#[derive(Clone)]
pub struct SqliteStore {
    pool: SqlitePool,
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
            .busy_timeout(Duration::from_secs(10));
        let pool = SqlitePoolOptions::new()
            .max_connections(8)
            .connect_with(options)
            .await
            .map_err(unavailable)?;
        sqlx::migrate!("../migrations/sqlite")
            .run(&pool)
            .await
            .map_err(|e| StoreError::Unavailable(format!("migrations failed: {e}")))?;
        Ok(Self { pool })
    }

    /// The connection pool.
    pub fn pool(&self) -> &SqlitePool {
        &self.pool
    }

    async fn write(&self, write: &Write<'_>) -> Result<Appended, StoreError> {
        let mut tx = self
            .pool
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(unavailable)?;
        if let Some((key, print)) = &write.key
            && let Some(earlier) = earlier_outcome(key_row(&mut tx, key).await?, print)
        {
            return Err(earlier);
        }
        let now = now_micros();
        let first_index = match write.create {
            Some(reducer) => {
                let inserted = sqlx::query(
                    "INSERT INTO logs (log_id, reducer, created_at) VALUES (?, ?, ?) ON CONFLICT DO NOTHING",
                )
                .bind(write.log_id.as_uuid())
                .bind(reducer)
                .bind(now)
                .execute(&mut *tx)
                .await
                .map_err(unavailable)?;
                if inserted.rows_affected() == 0 {
                    return Err(StoreError::LogExists(write.log_id));
                }
                0
            }
            None => write.first_index(last_index(&mut tx, write.log_id).await?)?,
        };
        let appended = write.appended(first_index);
        for (index, event) in (first_index..).zip(write.events) {
            sqlx::query(
                "INSERT INTO events (log_id, idx, recorded_at, payload) VALUES (?, ?, ?, ?)",
            )
            .bind(write.log_id.as_uuid())
            .bind(index as i64)
            .bind(now)
            .bind(event.to_string())
            .execute(&mut *tx)
            .await
            .map_err(unavailable)?;
        }
        if let Some((key, print)) = &write.key {
            sqlx::query(
                "INSERT INTO idempotency_keys (idempotency_key, fingerprint, log_id, first_index, last_index)
                 VALUES (?, ?, ?, ?, ?)",
            )
            .bind(*key)
            .bind(print)
            .bind(write.log_id.as_uuid())
            .bind(appended.first_index as i64)
            .bind(appended.last_index as i64)
            .execute(&mut *tx)
            .await
            .map_err(unavailable)?;
        }
        tx.commit().await.map_err(unavailable)?;
        Ok(appended)
    }
}

#[async_trait]
impl EventStore for SqliteStore {
    async fn create(&self, request: Create<'_>) -> Result<Appended, StoreError> {
        self.write(&Write::create(request)?).await
    }

    async fn append(&self, request: Append<'_>) -> Result<Appended, StoreError> {
        self.write(&Write::append(request)?).await
    }

    async fn log(&self, log_id: LogId) -> Result<LogInfo, StoreError> {
        let row: Option<(String, i64, Option<i64>)> = sqlx::query_as(
            "SELECT reducer, created_at, (SELECT max(idx) FROM events WHERE events.log_id = logs.log_id)
             FROM logs WHERE log_id = ?",
        )
        .bind(log_id.as_uuid())
        .fetch_optional(&self.pool)
        .await
        .map_err(unavailable)?;
        let (reducer, created_at, last) = row.ok_or(StoreError::LogNotFound(log_id))?;
        Ok(LogInfo {
            log_id,
            reducer,
            created_at,
            last_index: last.unwrap_or(0) as u64,
        })
    }

    async fn events(
        &self,
        log_id: LogId,
        from: u64,
        limit: u32,
    ) -> Result<Vec<StoredEvent>, StoreError> {
        let rows = sqlx::query_as(
            "SELECT idx, recorded_at, payload FROM events WHERE log_id = ? AND idx >= ? ORDER BY idx LIMIT ?",
        )
        .bind(log_id.as_uuid())
        .bind(i64::try_from(from).unwrap_or(i64::MAX))
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await
        .map_err(unavailable)?;
        if rows.is_empty() {
            self.log(log_id).await?;
        }
        Ok(stored_events(rows))
    }

    async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT count(*) FROM _sqlx_migrations")
            .execute(&self.pool)
            .await
            .map(|_| ())
            .map_err(unavailable)
    }
}

async fn key_row(
    tx: &mut Transaction<'static, Sqlite>,
    key: &str,
) -> Result<Option<KeyRow>, StoreError> {
    sqlx::query_as(
        "SELECT fingerprint, log_id, first_index, last_index FROM idempotency_keys WHERE idempotency_key = ?",
    )
    .bind(key)
    .fetch_optional(&mut **tx)
    .await
    .map_err(unavailable)
}

async fn last_index(
    tx: &mut Transaction<'static, Sqlite>,
    log_id: LogId,
) -> Result<Option<u64>, StoreError> {
    let row: Option<(Option<i64>,)> = sqlx::query_as(
        "SELECT (SELECT max(idx) FROM events WHERE log_id = ?1) FROM logs WHERE log_id = ?1",
    )
    .bind(log_id.as_uuid())
    .fetch_optional(&mut **tx)
    .await
    .map_err(unavailable)?;
    Ok(row.map(|(last,)| last.unwrap_or(0) as u64))
}
