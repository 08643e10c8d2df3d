//! The production event store on PostgreSQL.
//!
//! Concurrency is enforced by the primary key `(log_id, idx)`, never by a
//! lock in this process, so it holds across any number of hosts. Every
//! query names one `log_id` (the idempotency-key lookup excepted).

use async_trait::async_trait;
use serde_json::Value;
use sqlx::postgres::{PgPool, PgPoolOptions};
use sqlx::{Postgres, Transaction};
use uuid::Uuid;

use super::{Append, Appended, Create, EventStore, LogInfo, StoreError, StoredEvent, fingerprint};
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
    async fn write(
        &self,
        log_id: LogId,
        create: Option<&str>,
        events: &[Value],
        expected_last_index: Option<u64>,
        key: Option<(&str, Vec<u8>)>,
    ) -> Result<Appended, StoreError> {
        let result = self
            .write_once(log_id, create, events, expected_last_index, key.clone())
            .await;
        match (&result, &key) {
            (
                Err(StoreError::LogExists(_) | StoreError::ConcurrentAppend { .. }),
                Some((key, print)),
            ) => {
                let mut tx = self.pool.begin().await.map_err(unavailable)?;
                match replayed(&mut tx, key, print).await? {
                    Some(replay) => Err(replay),
                    None => result,
                }
            }
            _ => result,
        }
    }

    async fn write_once(
        &self,
        log_id: LogId,
        create: Option<&str>,
        events: &[Value],
        expected_last_index: Option<u64>,
        key: Option<(&str, Vec<u8>)>,
    ) -> Result<Appended, StoreError> {
        let mut tx = self.pool.begin().await.map_err(unavailable)?;
        if let Some((key, print)) = &key
            && let Some(replay) = replayed(&mut tx, key, print).await?
        {
            return Err(replay);
        }
        let first_index = match create {
            Some(reducer) => {
                let inserted = sqlx::query(
                    "INSERT INTO logs (log_id, reducer) VALUES ($1, $2) ON CONFLICT DO NOTHING",
                )
                .bind(log_id.as_uuid())
                .bind(reducer)
                .execute(&mut *tx)
                .await
                .map_err(unavailable)?;
                if inserted.rows_affected() == 0 {
                    return Err(StoreError::LogExists(log_id));
                }
                0
            }
            None => {
                let last = last_index(&mut tx, log_id).await?;
                match (expected_last_index, last) {
                    (Some(expected), Some(last)) if expected != last => {
                        return Err(StoreError::ConcurrentAppend {
                            current_last_index: last,
                        });
                    }
                    (_, Some(last)) => last + 1,
                    (_, None) => return Err(StoreError::LogNotFound(log_id)),
                }
            }
        };
        let last_index = first_index + events.len() as u64 - 1;
        let indexes: Vec<i64> = (first_index..=last_index).map(|i| i as i64).collect();
        let inserted = sqlx::query(
            "INSERT INTO events (log_id, idx, payload) SELECT $1, * FROM UNNEST($2::bigint[], $3::jsonb[])",
        )
        .bind(log_id.as_uuid())
        .bind(&indexes)
        .bind(events)
        .execute(&mut *tx)
        .await;
        if let Err(error) = inserted {
            if is_unique_violation(&error) {
                drop(tx);
                let current = self.log(log_id).await?.last_index;
                return Err(StoreError::ConcurrentAppend {
                    current_last_index: current,
                });
            }
            return Err(unavailable(error));
        }
        let appended = Appended {
            log_id,
            first_index,
            last_index,
        };
        if let Some((key, print)) = &key {
            let stored = sqlx::query(
                "INSERT INTO idempotency_keys (idempotency_key, fingerprint, log_id, first_index, last_index)
                 VALUES ($1, $2, $3, $4, $5)",
            )
            .bind(*key)
            .bind(print)
            .bind(log_id.as_uuid())
            .bind(first_index as i64)
            .bind(last_index as i64)
            .execute(&mut *tx)
            .await;
            if let Err(error) = stored {
                if is_unique_violation(&error) {
                    // A concurrent request with the same key committed first.
                    drop(tx);
                    let mut tx = self.pool.begin().await.map_err(unavailable)?;
                    return Err(replayed(&mut tx, key, print)
                        .await?
                        .unwrap_or(StoreError::IdempotencyKeyReused));
                }
                return Err(unavailable(error));
            }
        }
        tx.commit().await.map_err(unavailable)?;
        Ok(appended)
    }
}

#[async_trait]
impl EventStore for PostgresStore {
    async fn create(&self, request: Create<'_>) -> Result<Appended, StoreError> {
        if request.events.is_empty() {
            return Err(StoreError::NoEvents);
        }
        let key = request.idempotency_key.map(|key| {
            (
                key,
                fingerprint("create", request.log_id, request.reducer, request.events),
            )
        });
        self.write(
            request.log_id,
            Some(request.reducer),
            request.events,
            None,
            key,
        )
        .await
    }

    async fn append(&self, request: Append<'_>) -> Result<Appended, StoreError> {
        if request.events.is_empty() {
            return Err(StoreError::NoEvents);
        }
        let key = request.idempotency_key.map(|key| {
            (
                key,
                fingerprint("append", request.log_id, "", request.events),
            )
        });
        let mut attempts = 0;
        loop {
            let result = self
                .write(
                    request.log_id,
                    None,
                    request.events,
                    request.expected_last_index,
                    key.clone(),
                )
                .await;
            match result {
                // Without an expectation, losing the race for the next index
                // is not the caller's concern: take the next one.
                Err(StoreError::ConcurrentAppend { .. })
                    if request.expected_last_index.is_none() && attempts < APPEND_RETRIES =>
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
        let rows: Vec<(i64, i64, String)> = sqlx::query_as(
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
        Ok(rows
            .into_iter()
            .map(|(index, recorded_at, payload)| StoredEvent {
                index: index as u64,
                recorded_at,
                payload,
            })
            .collect())
    }
}

/// The stored outcome of an earlier request with this key, as the error to
/// return: a replay if the fingerprint matches, a reuse if not.
async fn replayed(
    tx: &mut Transaction<'static, Postgres>,
    key: &str,
    print: &[u8],
) -> Result<Option<StoreError>, StoreError> {
    let row: Option<(Vec<u8>, Uuid, i64, i64)> = sqlx::query_as(
        "SELECT fingerprint, log_id, first_index, last_index FROM idempotency_keys WHERE idempotency_key = $1",
    )
    .bind(key)
    .fetch_optional(&mut **tx)
    .await
    .map_err(unavailable)?;
    Ok(row.map(|(stored, log_id, first, last)| {
        if stored == print {
            StoreError::IdempotentReplay(Appended {
                log_id: log_id.into(),
                first_index: first as u64,
                last_index: last as u64,
            })
        } else {
            StoreError::IdempotencyKeyReused
        }
    }))
}

/// The log's last index, `None` if the log does not exist.
async fn last_index(
    tx: &mut Transaction<'static, Postgres>,
    log_id: LogId,
) -> Result<Option<u64>, StoreError> {
    let row: Option<(Option<i64>,)> = sqlx::query_as(
        "SELECT (SELECT max(idx) FROM events WHERE log_id = $1) FROM logs WHERE log_id = $1",
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

fn unavailable(error: impl std::fmt::Display) -> StoreError {
    StoreError::Unavailable(error.to_string())
}
