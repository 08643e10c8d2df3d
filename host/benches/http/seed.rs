//! The second baseline: the seed library itself (crate `eventlogs` 0.2.1,
//! in-process, its `PostgresEventStore`, native aggregates), appending one
//! event per call to its own log per task, on the same server.

use std::sync::Arc;
use std::time::Duration;

use eventlogs_seed::caches::fake::FakeReductionCache;
use eventlogs_seed::ids::LogId;
use eventlogs_seed::stores::postgres::PostgresEventStore;
use eventlogs_seed::{Aggregate, AppendOptions, EventRecord, LogManager, LogState};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio::sync::Mutex;

use crate::load::{Latencies, run_timed};

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

type Seed = LogManager<Value, Approved, PostgresEventStore, FakeReductionCache<Approved>>;

/// `tasks` tasks, each appending single events to its own log through the
/// seed's `LogManager`, for `span`.
pub async fn appends(database: &str, tasks: usize, span: Duration) -> Latencies {
    let admin = sqlx::PgPool::connect(database).await.unwrap();
    for statement in SCHEMA {
        sqlx::query(statement).execute(&admin).await.unwrap();
    }
    let mut config = deadpool_postgres::Config::new();
    config.url = Some(database.to_owned());
    config.pool = Some(deadpool_postgres::PoolConfig::new(tasks.min(32)));
    let pool = config
        .create_pool(
            Some(deadpool_postgres::Runtime::Tokio1),
            tokio_postgres::NoTls,
        )
        .unwrap();
    let seed: Arc<Seed> = Arc::new(LogManager::new(
        PostgresEventStore::new(pool),
        FakeReductionCache::new(),
    ));
    let event = json!({"Authorized": {"amount": 1, "approval_code": "bench"}});
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
