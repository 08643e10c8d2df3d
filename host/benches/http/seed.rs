//! The second baseline: the seed library itself (crate `eventlogs` 0.2.1,
//! in-process, its `PostgresEventStore`, native aggregates), appending one
//! event per call to its own log per task, on the same server; and reducing
//! logs with its `RedisReductionCache`, as the daemon's reduces are measured.

use std::sync::Arc;
use std::time::{Duration, Instant};

use eventlogs_seed::caches::ReductionCacheSerde;
use eventlogs_seed::caches::fake::FakeReductionCache;
use eventlogs_seed::caches::redis::RedisReductionCache;
use eventlogs_seed::ids::LogId;
use eventlogs_seed::stores::postgres::PostgresEventStore;
use eventlogs_seed::{Aggregate, AppendOptions, EventRecord, LogManager, LogState, Reduction};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio::sync::Mutex;

use crate::load::{Latencies, Reduce, run_timed};

/// The seed's schema (its `docker/postgres/schema.sql`).
const SCHEMA: [&str; 2] = [
    "CREATE SCHEMA IF NOT EXISTS eventlogs",
    "CREATE TABLE IF NOT EXISTS eventlogs.events (
         log_id varchar(128) NOT NULL,
         event_index OID NOT NULL,
         recorded_at timestamp with time zone NOT NULL,
         idempotency_key varchar(256) NULL CONSTRAINT idempotency_key_unique UNIQUE,
         payload json NOT NULL,
         PRIMARY KEY (log_id, event_index))",
];

/// A native aggregate of the benchmark's events.
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
struct Approved {
    amount: i64,
}

impl Aggregate for Approved {
    type Event = Value;

    fn apply(&mut self, record: &impl EventRecord<Value>) {
        self.amount += record.event()["Authorized"]["amount"].as_i64().unwrap_or(0);
    }
}

/// The seed's schema created on `database`, a connection to it for the
/// caller to close, and the seed's store on a pool of `max_size`
/// connections (deadpool's default when `None`).
async fn store(database: &str, max_size: Option<usize>) -> (sqlx::PgPool, PostgresEventStore) {
    let admin = sqlx::PgPool::connect(database).await.unwrap();
    for statement in SCHEMA {
        sqlx::query(statement).execute(&admin).await.unwrap();
    }
    let mut config = deadpool_postgres::Config::new();
    config.url = Some(database.to_owned());
    config.pool = max_size.map(deadpool_postgres::PoolConfig::new);
    let pool = config
        .create_pool(
            Some(deadpool_postgres::Runtime::Tokio1),
            tokio_postgres::NoTls,
        )
        .unwrap();
    (admin, PostgresEventStore::new(pool))
}

/// The event every benchmark append stores, as the daemon's load does.
fn event() -> Value {
    json!({"Authorized": {"amount": 1, "approval_code": "bench"}})
}

type Seed = LogManager<Value, Approved, PostgresEventStore, FakeReductionCache<Approved>>;

/// `tasks` tasks, each appending single events to its own log through the
/// seed's `LogManager`, for `span`.
pub async fn appends(database: &str, tasks: usize, span: Duration) -> Latencies {
    let (admin, store) = store(database, Some(tasks.min(32))).await;
    let seed: Arc<Seed> = Arc::new(LogManager::new(store, FakeReductionCache::new()));
    let event = event();
    let mut logs = Vec::new();
    for _ in 0..tasks {
        let log_id = LogId::new();
        let state = seed
            .create(&log_id, &event, &AppendOptions::default())
            .await
            .unwrap();
        logs.push((log_id, Mutex::new(state)));
    }
    let logs = Arc::new(logs);
    let latencies = run_timed(tasks, span, move |task, _| {
        let (seed, logs, event) = (seed.clone(), logs.clone(), event.clone());
        async move {
            let (log_id, state) = &logs[task];
            let mut state = state.lock().await;
            let current: LogState = state.clone();
            *state = seed
                .append(log_id, current, &event, &AppendOptions::default())
                .await
                .unwrap();
        }
    })
    .await;
    admin.close().await;
    latencies
}

/// The seed's Redis cache encoding: its `Reduction` as JSON.
struct JsonSerde;

impl ReductionCacheSerde<Approved> for JsonSerde {
    fn serialize(
        &self,
        reduction: &Reduction<Approved>,
    ) -> Result<Vec<u8>, impl std::error::Error + 'static> {
        serde_json::to_vec(reduction)
    }

    fn deserialize(
        &self,
        buf: &[u8],
    ) -> Result<Reduction<Approved>, impl std::error::Error + 'static> {
        serde_json::from_slice(buf)
    }
}

/// The seed's reduces on the same PostgreSQL and the Redis at `redis_url`
/// (its `PostgresEventStore` and `RedisReductionCache`), measured as the
/// daemon's are (`load::reduce_latency`): `rounds` logs of `events`
/// events, each reduced once with nothing cached, then 5 times right after
/// one more event was appended, from the aggregate the previous reduce
/// cached.
pub async fn reduces(database: &str, redis_url: &str, events: u64, rounds: usize) -> Reduce {
    let (admin, store) = store(database, None).await;
    let redis = deadpool_redis::Config::from_url(redis_url)
        .create_pool(Some(deadpool_redis::Runtime::Tokio1))
        .unwrap();
    let seed = LogManager::new(
        store,
        RedisReductionCache::new(redis.clone(), JsonSerde, None),
    );
    let event = event();
    let options = AppendOptions::default();
    let (mut uncached, mut cached) = (Vec::new(), Vec::new());
    let mut logs = Vec::new();
    for _ in 0..rounds {
        let log_id = LogId::new();
        let mut state = seed.create(&log_id, &event, &options).await.unwrap();
        for _ in 1..events {
            state = seed.append(&log_id, state, &event, &options).await.unwrap();
        }
        let t = Instant::now();
        let reduced = seed.reduce(&log_id).await.unwrap();
        uncached.push(t.elapsed());
        assert_eq!(u64::from(reduced.through_index()), events - 1);
        let mut state = reduced.log_state();
        for _ in 0..5 {
            // The previous reduce's cache write is asynchronous.
            tokio::time::sleep(Duration::from_millis(50)).await;
            seed.append(&log_id, state, &event, &options).await.unwrap();
            let t = Instant::now();
            let reduced = seed.reduce(&log_id).await.unwrap();
            cached.push(t.elapsed());
            state = reduced.log_state();
        }
        logs.push(log_id);
    }
    tokio::time::sleep(Duration::from_millis(50)).await;
    let mut connection = redis.get().await.unwrap();
    for log_id in &logs {
        let () = deadpool_redis::redis::cmd("DEL")
            .arg(log_id.to_string())
            .query_async(&mut connection)
            .await
            .unwrap();
    }
    admin.close().await;
    Reduce {
        uncached: Latencies::merge(vec![uncached], Duration::ZERO),
        cached: Latencies::merge(vec![cached], Duration::ZERO),
    }
}
