//! The production event store on PostgreSQL.
//!
//! Writes are group-committed, at most two round trips per batch of queued
//! writes and no explicit transaction: one statement reads the `last_index`
//! of the logs the batch appends to (a log's end is kept on its row) and
//! its idempotency keys; a second, committed on its own, takes the batch's
//! range of global positions from the `event_positions` row and stores
//! every new log, event, log end and key. The read is skipped when the
//! writer remembers the end of every log the batch appends to (it wrote
//! them last), which under steady load is almost every batch. The counter
//! row's lock is held to commit, so positions become visible in increasing
//! order across every host process, with no gaps. A row that another
//! process stored since the read, or a log that no longer ends where the
//! plan found it, makes the store statement fail as a unique violation;
//! the batch is then run again in a transaction that locks the counter row
//! before reading. The primary key `(log_id, idx)` still backs the indexes.
//! Every query names its logs by `log_id` (the key lookup and the position
//! counter excepted).

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use futures_util::StreamExt;
use std::str::FromStr;

use sqlx::postgres::{PgConnectOptions, PgExecutor, PgPool, PgPoolOptions, PgSslMode};
use sqlx::{ConnectOptions, Connection};
use sqlx::{Postgres, Transaction};
use uuid::Uuid;

use super::batch::Rows;
use super::connection_loss;
use super::copy_out;
use super::execute::{self, Dialect, Exclusive, Executor, Read};
use super::feed::{self, FeedFilter, FeedPage, FeedRow};
use super::group_commit::{BatchWriter, GroupCommit};
use super::hints::{Hints, Notifications};
use super::write::{
    EventRow, KeyRow, LogEventRow, LogInfoRow, index_bounds, log_event, log_info, stored_events,
    unavailable,
};
use super::{EventStore, EventStream, LogInfo, StoreError, StoredEvent, Write, Written};
use crate::LogId;

/// Writes queued per batch, at most.
const MAX_BATCH: usize = 256;

/// The channel every committed batch is announced on (by its store
/// statement), for processes following the feed.
const FEED_CHANNEL: &str = "eventlogs_feed";

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
        let pool = pool_options()
            .max_connections(max_connections)
            .connect_with(connect_options(url)?)
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
        // The batch statement's plan is kept, not made again per batch:
        // under PostgreSQL's default (`auto`) its estimated cost from
        // `UNNEST` of parameter arrays kept it on custom plans, and planning
        // every batch took more of the server's time than storing it.
        let options = (*pool.connect_options())
            .clone()
            .options([("plan_cache_mode", "force_generic_plan")]);
        let commits = GroupCommit::start_on_own_thread(
            move || async move {
                // The writer runs one statement at a time; a second
                // connection stands by for when the first breaks.
                let pool = pool_options().max_connections(2).connect_lazy_with(options);
                Arc::new(Executor::new(Pg { pool })) as Arc<dyn BatchWriter>
            },
            MAX_BATCH,
        );
        Ok(Self { pool, commits })
    }

    /// The connection pool.
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }
}

/// A connection idle for less than this is handed out without a test.
const TESTED_AFTER_IDLE: Duration = Duration::from_secs(1);

/// How the store's pools hand out connections. sqlx by default pings every
/// connection before handing it out, a round trip before every query (it
/// also pings each on release, which cannot be turned off); here only a
/// connection idle for [`TESTED_AFTER_IDLE`] or longer is pinged, and a
/// broken one is closed and another taken. A connection opened before the
/// process last lost one (`connection_loss`) is closed instead of handed
/// out, so after an outage the first request gets a new connection rather
/// than one the outage broke. Acquiring fails fast while the database is
/// down (3 s, not the default 30 s), so requests get their 503 without
/// waiting long.
fn pool_options() -> PgPoolOptions {
    PgPoolOptions::new()
        .acquire_timeout(Duration::from_secs(3))
        .test_before_acquire(false)
        .before_acquire(|connection, meta| {
            Box::pin(async move {
                if connection_loss::predates_last_loss(meta.age) {
                    return Ok(false);
                }
                if meta.idle_for >= TESTED_AFTER_IDLE {
                    connection.ping().await.inspect_err(connection_loss::note)?;
                }
                Ok(true)
            })
        })
}

/// The connection options `url` describes, with TLS only when it (or
/// `PGSSLMODE`) asks for it: `sslmode=require`, `verify-ca` or
/// `verify-full`. libpq's default, `prefer`, would encrypt every connection
/// to a server that offers TLS, which on a loopback database cost batch
/// appends four fifths of their throughput, unasked.
fn connect_options(url: &str) -> Result<PgConnectOptions, StoreError> {
    let options = PgConnectOptions::from_str(url)
        .map_err(|e| StoreError::Unavailable(format!("invalid database URL: {e}")))?;
    // A fold's read stays open while the fold runs, so its time includes
    // the reducer's: statements over a second are logged at debug level
    // only, not warned about.
    let options = options.log_slow_statements(log::LevelFilter::Debug, Duration::from_secs(1));
    // Every read here is a range of one B-tree index, wanted in its order:
    // a log's events by index, the feed by position. Before `ANALYZE` has
    // run (a new database, a table that just grew) the planner guesses a
    // few dozen rows and picks a bitmap heap scan plus a sort, which reads
    // and sorts the whole range (spilling to disk for a long log) before
    // the first row streams: twice the server's time for a 1,000,000-event
    // log, and no overlap with the fold. Off, the same reads are index
    // scans whatever the statistics say.
    let options = options.options([("enable_bitmapscan", "off")]);
    let asked = url.contains("sslmode=") || std::env::var_os("PGSSLMODE").is_some();
    Ok(if asked {
        options
    } else {
        options.ssl_mode(PgSslMode::Disable)
    })
}

/// A range of one log's events, in index order.
const READ_EVENTS: &str = "SELECT idx, position, recorded_at, payload::text FROM events
     WHERE log_id = $1 AND idx >= $2 AND idx <= $3 ORDER BY idx";

#[async_trait]
impl Dialect for Pg {
    type Exclusive = PgExclusive;

    async fn read(&self, ids: &[Uuid], keys: &[&str]) -> Result<Read, sqlx::Error> {
        read(&self.pool, ids, keys).await
    }

    async fn store(&self, rows: &Rows<'_>) -> Result<u64, sqlx::Error> {
        store_rows(&self.pool, rows).await
    }

    async fn exclusive(&self) -> Result<PgExclusive, sqlx::Error> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("SELECT last FROM event_positions FOR UPDATE")
            .execute(&mut *tx)
            .await?;
        Ok(PgExclusive(tx))
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

    /// The read is a round trip to the server, as long as the store
    /// statement itself; the statement checks every log's end instead.
    const PRESUMES_KNOWN_ENDS: bool = true;
}

/// A transaction holding the position counter's row lock.
struct PgExclusive(Transaction<'static, Postgres>);

#[async_trait]
impl Exclusive for PgExclusive {
    async fn read(&mut self, ids: &[Uuid], keys: &[&str]) -> Result<Read, sqlx::Error> {
        read(&mut *self.0, ids, keys).await
    }

    async fn store(&mut self, rows: &Rows<'_>) -> Result<u64, sqlx::Error> {
        store_rows(&mut *self.0, rows).await
    }

    async fn commit(self) -> Result<(), sqlx::Error> {
        self.0.commit().await
    }
}

/// The last index of the existing logs among `ids` and the stored keys
/// among `keys`, in one statement, so one snapshot: logs and keys written
/// together are seen together.
async fn read(on: impl PgExecutor<'_>, ids: &[Uuid], keys: &[&str]) -> Result<Read, sqlx::Error> {
    type Row = (
        Uuid,
        i64,
        Option<String>,
        Option<Vec<u8>>,
        Option<i64>,
        Option<i64>,
    );
    let rows: Vec<Row> = sqlx::query_as(
        "SELECT log_id, last_index, NULL, NULL, NULL, NULL
         FROM logs WHERE log_id = ANY($1)
         UNION ALL
         SELECT log_id, last_index, idempotency_key, fingerprint, first_index, first_position
         FROM idempotency_keys WHERE idempotency_key = ANY($2)",
    )
    .bind(ids)
    .bind(keys)
    .fetch_all(on)
    .await?;
    let mut lasts = Vec::with_capacity(ids.len());
    let mut key_rows = Vec::with_capacity(keys.len());
    for (log_id, last, key, print, first, position) in rows {
        match (key, print, first, position) {
            (Some(key), Some(print), Some(first), Some(position)) => {
                key_rows.push((key, (print, log_id, first, last, position)));
            }
            _ => lasts.push((log_id, last)),
        }
    }
    Ok((lasts, key_rows))
}

/// Stores a planned batch in one statement, committed on its own: the
/// range of positions, the new logs, the events, the ends of the existing
/// logs and the keys. The counter row is updated first, so batches of
/// every process queue on it in one order and hold it to commit: positions
/// become visible in increasing order. An event at an index another
/// process filled since the read, a log or key it stored, fails the
/// statement on a unique key and stores nothing; so does a log that no
/// longer ends where the plan found it (the row lock makes the check see
/// the latest end), through `eventlogs_log_end_moved()`. The commit is
/// announced on [`FEED_CHANNEL`] (`NOTIFY` is delivered at commit).
async fn store_rows(on: impl PgExecutor<'_>, rows: &Rows<'_>) -> Result<u64, sqlx::Error> {
    let base: i64 = sqlx::query_scalar(
        "WITH range AS (
             UPDATE event_positions SET last = last + $1 RETURNING last - $1 AS base
         ), created AS (
             INSERT INTO logs (log_id, reducer, created_at, last_index, last_position)
             SELECT c.log_id, c.reducer, c.created_at, c.last_index, range.base + c.ordinal
             FROM UNNEST($2::uuid[], $3::text[], $4::bigint[], $5::bigint[], $6::bigint[])
                  AS c(log_id, reducer, created_at, last_index, ordinal), range
         ), stored_events AS (
             INSERT INTO events (log_id, idx, position, recorded_at, payload, payload_bytes)
             SELECT e.log_id, e.idx, range.base + e.ordinal, e.recorded_at, e.payload::json, e.bytes
             FROM UNNEST($7::uuid[], $8::bigint[], $9::bigint[], $10::bigint[], $11::text[], $22::integer[])
                  AS e(log_id, idx, ordinal, recorded_at, payload, bytes), range
         ), ends AS (
             UPDATE logs SET last_index = u.last_index, last_position = range.base + u.ordinal
             FROM UNNEST($12::uuid[], $13::bigint[], $14::bigint[], $23::bigint[])
                  AS u(log_id, last_index, ordinal, previous), range
             WHERE logs.log_id = u.log_id AND logs.last_index = u.previous
             RETURNING 1
         ), keys AS (
             INSERT INTO idempotency_keys
                 (idempotency_key, fingerprint, log_id, first_index, last_index, first_position, stored_at)
             SELECT k.key, k.print, k.log_id, k.first_index, k.last_index, range.base + k.ordinal, k.stored_at
             FROM UNNEST($15::text[], $16::bytea[], $17::uuid[], $18::bigint[], $19::bigint[], $20::bigint[], $21::bigint[])
                  AS k(key, print, log_id, first_index, last_index, ordinal, stored_at), range
         )
         SELECT CASE WHEN (SELECT count(*) FROM ends) = cardinality($12::uuid[])
                     THEN base ELSE eventlogs_log_end_moved() END,
                pg_notify('eventlogs_feed', '')
         FROM range",
    )
    .bind(rows.events())
    .bind(&rows.create_log)
    .bind(&rows.create_reducer)
    .bind(&rows.create_at)
    .bind(&rows.create_last_index)
    .bind(&rows.create_last_ordinal)
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
    .bind(&rows.key_stored_at)
    .bind(&rows.event_bytes)
    .bind(&rows.log_previous_index)
    .fetch_one(on)
    .await?;
    Ok(base as u64)
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
        // The last event comes along (a lookup by primary key), so a
        // reduce can tell a cached reduction through it is current without
        // reading the log.
        let row: Option<LogInfoRow> = sqlx::query_as(
            "SELECT l.reducer, l.created_at, l.last_index, e.position, e.recorded_at
             FROM logs l LEFT JOIN events e ON e.log_id = l.log_id AND e.idx = l.last_index
             WHERE l.log_id = $1",
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
        // Payloads the budget leaves out are never read: the window runs
        // over their sizes, and a TOASTed payload is fetched only when it
        // is returned.
        let rows: Vec<EventRow> = sqlx::query_as(
            "SELECT log_id, idx, position, recorded_at, payload::text FROM (
                 SELECT log_id, idx, position, recorded_at, payload,
                        sum(payload_bytes) OVER (ORDER BY idx) - payload_bytes AS before
                 FROM events WHERE log_id = $1 AND idx >= $2 AND idx < $2 + $3
             ) page WHERE before < $4 ORDER BY idx",
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
        // A long bounded run (an uncached reduce) is read with a binary
        // COPY, which spares the driver's per-row work.
        if through != i64::MAX && through.saturating_sub(from) >= copy_out::COPY_MIN_EVENTS - 1 {
            return copy_out::read(self.pool.clone(), log_id, from, through);
        }
        // An index scan of the primary key streams in index order: no sort,
        // and rows arrive while the fold consumes them.
        sqlx::query_as::<_, LogEventRow>(READ_EVENTS)
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
        let sql = feed::page_sql(filter, "e.payload::text");
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
        Ok(Box::new(
            Notifications::listen(&self.pool, FEED_CHANNEL).await?,
        ))
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

    async fn forget_keys(&self, stored_before: i64, limit: u32) -> Result<u64, StoreError> {
        sqlx::query(
            "DELETE FROM idempotency_keys WHERE idempotency_key IN (
                 SELECT idempotency_key FROM idempotency_keys WHERE stored_at < $1 LIMIT $2)",
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
            "INSERT INTO host_secrets (name, secret) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING",
        )
        .bind(name)
        .bind(fresh)
        .execute(&self.pool)
        .await
        .map_err(unavailable)?;
        sqlx::query_scalar("SELECT secret FROM host_secrets WHERE name = $1")
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::payload::Payload;
    use crate::store::Events;

    /// On a new database, before any statistics exist, a log's events are
    /// read by an index scan in index order, by the prepared query and by
    /// a long read's COPY: no bitmap scan, no sort.
    #[tokio::test]
    async fn a_log_is_read_by_index_scan_before_statistics_exist() {
        let Some(url) = eventlogs_test_env::postgres_database().await else {
            return;
        };
        let store = PostgresStore::connect_with(&url, 4).await.unwrap();
        // No statistics during the test: autovacuum's ANALYZE is off.
        sqlx::query("ALTER TABLE events SET (autovacuum_enabled = false)")
            .execute(&store.pool)
            .await
            .unwrap();
        // Long enough that, without statistics, the planner's default
        // guesses make a bitmap scan and a sort look cheaper.
        const EVENTS: usize = 200_000;
        let event = Payload::from_value(&serde_json::json!({"n": 1})).unwrap();
        let events: Events = std::iter::repeat_n(event, EVENTS).collect();
        let log_id = LogId::new();
        store
            .write(Write::create(log_id, true, "counter", events))
            .await
            .unwrap();
        let plan: Vec<String> =
            sqlx::query_scalar(sqlx::AssertSqlSafe(format!("EXPLAIN {READ_EVENTS}")))
                .bind(log_id.as_uuid())
                .bind(0_i64)
                .bind(EVENTS as i64 - 1)
                .fetch_all(&store.pool)
                .await
                .unwrap();
        assert_index_scan(&plan);
        // A long read's COPY runs the same query with its values inline.
        let select = copy_out::select(log_id, 0, EVENTS as i64 - 1);
        let plan: Vec<String> =
            sqlx::query_scalar(sqlx::AssertSqlSafe(format!("EXPLAIN {select}")))
                .fetch_all(&store.pool)
                .await
                .unwrap();
        assert_index_scan(&plan);
    }

    fn assert_index_scan(plan: &[String]) {
        assert!(
            plan[0].starts_with("Index Scan using events_pkey"),
            "{plan:#?}"
        );
        assert!(
            !plan
                .iter()
                .any(|line| line.contains("Sort") || line.contains("Bitmap")),
            "{plan:#?}"
        );
    }

    #[test]
    fn tls_is_used_when_the_url_asks_for_it() {
        if std::env::var_os("PGSSLMODE").is_some() {
            return;
        }
        let mode = |url: &str| connect_options(url).unwrap().get_ssl_mode();
        assert!(matches!(mode("postgres://u@h/db"), PgSslMode::Disable));
        assert!(matches!(
            mode("postgres://u@h/db?sslmode=require"),
            PgSslMode::Require
        ));
        assert!(matches!(
            mode("postgres://u@h/db?sslmode=verify-full&sslrootcert=/ca.pem"),
            PgSslMode::VerifyFull
        ));
        assert!(matches!(
            mode("postgres://u@h/db?sslmode=prefer"),
            PgSslMode::Prefer
        ));
    }
}
