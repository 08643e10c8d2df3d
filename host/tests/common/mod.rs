//! Helpers shared by the runtime's integration tests.

#![allow(dead_code)]

pub mod manager;
pub mod redis;

use eventlogs_host::runtime::{EventBatch, Limits, Reducer, Runtime};
use eventlogs_host::store::postgres::PostgresStore;
use eventlogs_host::store::sqlite::SqliteStore;
pub use eventlogs_test_env::{plugin, postgres_database, sqlite_database};

/// A runtime with default limits except those `adjust` changes.
pub fn runtime(adjust: impl FnOnce(&mut Limits)) -> Runtime {
    let mut limits = Limits::default();
    adjust(&mut limits);
    Runtime::new(limits).expect("runtime starts")
}

/// Loads a plugin that must pass validation.
pub fn load(runtime: &Runtime, name: &str) -> Reducer {
    runtime
        .load(&plugin(name))
        .unwrap_or_else(|e| panic!("{name} should load: {e}"))
}

/// A batch of JSON events starting at `first_index`.
pub fn batch(first_index: u64, payloads: &[String]) -> EventBatch {
    let mut batch = EventBatch::default();
    for (i, payload) in payloads.iter().enumerate() {
        let index = first_index + i as u64;
        batch
            .push(
                index,
                1_700_000_000_000_000 + index as i64,
                payload.as_bytes(),
            )
            .expect("small batch");
    }
    batch
}

/// The resident set size of this process, in KiB (Linux).
pub fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS line")
}

/// A store on a database of its own, or `None` (loudly) when PostgreSQL is
/// not reachable outside CI. Under `CI=true` an unreachable server fails.
pub async fn postgres() -> Option<PostgresStore> {
    let url = postgres_database().await?;
    Some(
        PostgresStore::connect(&url)
            .await
            .expect("connect to test database"),
    )
}

/// An embedded store in a file of its own.
pub async fn sqlite() -> SqliteStore {
    SqliteStore::connect(&sqlite_database())
        .await
        .expect("open sqlite")
}

/// Events from JSON values (their compact text).
pub fn events(values: &[serde_json::Value]) -> eventlogs_host::store::Events {
    values
        .iter()
        .map(|v| eventlogs_host::payload::Payload::from_value(v).expect("storable"))
        .collect()
}

/// The secret test caches authenticate their entries under.
pub fn cache_secret() -> eventlogs_host::cache::CacheSecret {
    eventlogs_host::cache::CacheSecret::new(b"test-cache-secret-0123456789".to_vec()).unwrap()
}

/// Runs each behaviour (an async fn taking the store) against both stores,
/// in modules `on_postgres` and `on_sqlite` of the test file; the file
/// has `postgres` and `sqlite` from this module in scope.
#[allow(unused_macros)]
macro_rules! behaviours {
    ($($name:ident),* $(,)?) => {
        mod on_postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $name() {
                    if let Some(store) = super::postgres().await {
                        super::$name(std::sync::Arc::new(store)).await;
                    }
                }
            )*
        }
        mod on_sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $name() {
                    super::$name(std::sync::Arc::new(super::sqlite().await)).await;
                }
            )*
        }
    };
}
