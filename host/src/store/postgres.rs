//! The production event store on PostgreSQL.
//!
//! Concurrency is enforced by the primary key `(log_id, idx)`, never by a
//! lock in this process, so it holds across any number of hosts. An append
//! also locks its log's row (`FOR UPDATE`) while it reads the last index,
//! so concurrent appends to one log wait their turn in the database rather
//! than collide and retry. Every query names one `log_id` (the
//! idempotency-key lookup excepted).

use std::time::Duration;

use async_trait::async_trait;
use sqlx::postgres::{PgPool, PgPoolOptions};
use sqlx::{Postgres, Transaction};

use super::write::{KeyRow, Write, earlier_outcome, stored_events, unavailable};
use super::{Append, Appended, Create, EventStore, LogInfo, StoreError, StoredEvent};
use crate::LogId;

/// How often an append without an expected index retries after losing a
/// race for the next index.
const APPEND_RETRIES: usize = 8;

/// An [`EventStore`] on PostgreSQL.
#[derive(Clone)]
pub struct PostgresStore {
    pool: PgPool,
}

impl PostgresStore {
    /// Connects to `url` and applies the migrations in `migrations/postgres`.
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        let pool = PgPoolOptions::new()
            .max_connections(32)
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
        Ok(Self { pool })
    }

    /// The connection pool.
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// One write attempt. A conflict with a key present may be a concurrent
    /// twin of this very request that committed first: then it is a replay.
    async fn write(&self, write: &Write<'_>) -> Result<Appended, StoreError> {
        let result = self.write_once(write).await;
        match (&result, &write.key) {
            (
                Err(StoreError::LogExists(_) | StoreError::ConcurrentAppend { .. }),
                Some((key, print)),
            ) => {
                let mut tx = self.pool.begin().await.map_err(unavailable)?;
                match earlier_outcome(key_row(&mut tx, key).await?, print) {
                    Some(earlier) => Err(earlier),
                    None => result,
                }
            }
            _ => result,
        }
    }

    async fn write_once(&self, write: &Write<'_>) -> Result<Appended, StoreError> {
        let mut tx = self.pool.begin().await.map_err(unavailable)?;
        if let Some((key, print)) = &write.key
            && let Some(earlier) = earlier_outcome(key_row(&mut tx, key).await?, print)
        {
            return Err(earlier);
        }
        let first_index = match write.create {
            Some(reducer) => {
                let inserted = sqlx::query(
                    "INSERT INTO logs (log_id, reducer) VALUES ($1, $2) ON CONFLICT DO NOTHING",
                )
                .bind(write.log_id.as_uuid())
                .bind(reducer)
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
        let indexes: Vec<i64> = (appended.first_index..=appended.last_index)
            .map(|i| i as i64)
            .collect();
        let inserted = sqlx::query(
            "INSERT INTO events (log_id, idx, payload) SELECT $1, * FROM UNNEST($2::bigint[], $3::jsonb[])",
        )
        .bind(write.log_id.as_uuid())
        .bind(&indexes)
        .bind(write.events)
        .execute(&mut *tx)
        .await;
        match inserted {
            Err(e) if is_unique_violation(&e) => {
                drop(tx);
                let current = self.log(write.log_id).await?.last_index;
                return Err(StoreError::ConcurrentAppend {
                    current_last_index: current,
                });
            }
            other => other.map_err(unavailable)?,
        };
        if let Some((key, print)) = &write.key {
            // Only a request that committed this key meanwhile makes this
            // insert fail; reported as a conflict, `write` then finds that
            // request's key and answers with its outcome.
            let stored = sqlx::query(
                "INSERT INTO idempotency_keys (idempotency_key, fingerprint, log_id, first_index, last_index)
                 VALUES ($1, $2, $3, $4, $5)",
            )
            .bind(*key)
            .bind(print)
            .bind(write.log_id.as_uuid())
            .bind(appended.first_index as i64)
            .bind(appended.last_index as i64)
            .execute(&mut *tx)
            .await;
            match stored {
                Err(e) if is_unique_violation(&e) => {
                    return Err(StoreError::ConcurrentAppend {
                        current_last_index: appended.first_index,
                    });
                }
                other => other.map_err(unavailable)?,
            };
        }
        tx.commit().await.map_err(unavailable)?;
        Ok(appended)
    }
}

#[async_trait]
impl EventStore for PostgresStore {
    async fn create(&self, request: Create<'_>) -> Result<Appended, StoreError> {
        self.write(&Write::create(request)?).await
    }

    async fn append(&self, request: Append<'_>) -> Result<Appended, StoreError> {
        let write = Write::append(request)?;
        let mut attempts = 0;
        loop {
            match self.write(&write).await {
                // Without an expectation, losing the race for the next index
                // is not the caller's concern: take the next one.
                Err(StoreError::ConcurrentAppend { .. })
                    if write.expected_last_index.is_none() && attempts < APPEND_RETRIES =>
                {
                    attempts += 1;
                }
                other => return other,
            }
        }
    }

    async fn log(&self, log_id: LogId) -> Result<LogInfo, StoreError> {
        let row: Option<(String, i64, Option<i64>)> = sqlx::query_as(
            "SELECT reducer,
                    (extract(epoch FROM created_at) * 1000000)::bigint,
                    (SELECT max(idx) FROM events WHERE events.log_id = logs.log_id)
             FROM logs WHERE log_id = $1",
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
            "SELECT idx, (extract(epoch FROM recorded_at) * 1000000)::bigint, payload::text
             FROM events WHERE log_id = $1 AND idx >= $2 ORDER BY idx LIMIT $3",
        )
        .bind(log_id.as_uuid())
        .bind(i64::try_from(from).unwrap_or(i64::MAX))
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await
        .map_err(unavailable)?;
        if rows.is_empty() {
            // An empty page is only an answer for a log that exists.
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
    tx: &mut Transaction<'static, Postgres>,
    key: &str,
) -> Result<Option<KeyRow>, StoreError> {
    sqlx::query_as(
        "SELECT fingerprint, log_id, first_index, last_index FROM idempotency_keys WHERE idempotency_key = $1",
    )
    .bind(key)
    .fetch_optional(&mut **tx)
    .await
    .map_err(unavailable)
}

/// The log's last index, `None` if the log does not exist. Locks the log's
/// row until the transaction ends, so appends to one log queue in the
/// database instead of colliding on the next index and retrying; the
/// primary key `(log_id, idx)` still backs the rule.
async fn last_index(
    tx: &mut Transaction<'static, Postgres>,
    log_id: LogId,
) -> Result<Option<u64>, StoreError> {
    let row: Option<(Option<i64>,)> = sqlx::query_as(
        "SELECT (SELECT max(idx) FROM events WHERE log_id = $1) FROM logs WHERE log_id = $1
         FOR UPDATE",
    )
    .bind(log_id.as_uuid())
    .fetch_optional(&mut **tx)
    .await
    .map_err(unavailable)?;
    Ok(row.map(|(last,)| last.unwrap_or(0) as u64))
}

fn is_unique_violation(error: &sqlx::Error) -> bool {
    error
        .as_database_error()
        .is_some_and(|e| e.is_unique_violation())
}
