//! Log managers over real parts, for the behavioural suites that run on
//! PostgreSQL + Redis and on SQLite + the in-process cache.

use std::sync::Arc;
use std::time::{Duration, Instant};

use eventlogs_host::LogId;
use eventlogs_host::cache::memory::MemoryCache;
use eventlogs_host::cache::redis::RedisCache;
use eventlogs_host::cache::{CacheKey, ReductionCache};
use eventlogs_host::log_manager::{LogManager, LogManagerOptions, Reduction};
use eventlogs_host::registry::Registry;
use eventlogs_host::store::EventStore;
use eventlogs_host::store::catalog::ReducerCatalog;
use serde_json::Value;

use super::{plugin, postgres, runtime, sqlite};
pub use eventlogs_test_env::SHARED_REDIS;

/// A log manager and the parts a test inspects.
pub struct Parts {
    /// The manager under test.
    pub manager: LogManager,
    /// Its cache.
    pub cache: Arc<dyn ReductionCache>,
    /// Its registry, with `payment` deployed.
    pub registry: Arc<Registry>,
    /// Its event store.
    pub store: Arc<dyn EventStore>,
    /// Its options.
    pub options: LogManagerOptions,
}

impl Parts {
    /// Another manager on the same parts, with memory of its own, as
    /// another daemon process on the same database and cache is.
    #[allow(dead_code, reason = "not every test binary runs two processes")]
    pub fn another(&self) -> LogManager {
        LogManager::new(
            self.store.clone(),
            self.cache.clone(),
            self.registry.clone(),
            self.options.clone(),
        )
    }

    /// Another manager on the same parts that keeps no aggregates in
    /// memory: every reduce reads the shared cache, as a daemon started
    /// with `--memory-cache-bytes 0` does.
    #[allow(
        dead_code,
        reason = "not every test binary reads the shared cache alone"
    )]
    pub fn reader(&self) -> LogManager {
        let options = LogManagerOptions {
            near_cache_bytes: 0,
            ..self.options.clone()
        };
        LogManager::new(
            self.store.clone(),
            self.cache.clone(),
            self.registry.clone(),
            options,
        )
    }
}

/// A manager over `store` (also its reducer catalog) and `cache`, with the
/// payment reducer deployed, folding `batch_size` events per call.
pub async fn parts<S>(store: S, cache: Arc<dyn ReductionCache>, batch_size: u32) -> Parts
where
    S: EventStore + ReducerCatalog + 'static,
{
    let store = Arc::new(store);
    let registry = Registry::open(runtime(|_| {}), store.clone())
        .await
        .expect("registry opens");
    registry
        .deploy("payment", plugin("payment"))
        .await
        .expect("payment deploys");
    let options = LogManagerOptions {
        batch_size,
        ..Default::default()
    };
    Parts {
        manager: LogManager::new(
            store.clone(),
            cache.clone(),
            registry.clone(),
            options.clone(),
        ),
        cache,
        options,
        registry,
        store,
    }
}

/// A Redis cache on the shared server under a prefix of its own.
pub fn shared_redis() -> Arc<dyn ReductionCache> {
    Arc::new(
        RedisCache::new(
            SHARED_REDIS,
            &format!("eventlogs-test-{}:", LogId::new()),
            super::cache_secret(),
        )
        .unwrap(),
    )
}

/// PostgreSQL (a database of its own) and Redis, or `None` (loudly).
pub async fn on_postgres_and_redis(batch_size: u32) -> Option<Parts> {
    Some(parts(postgres().await?, shared_redis(), batch_size).await)
}

/// SQLite (a file of its own) and the in-process cache.
pub async fn embedded(batch_size: u32) -> Parts {
    parts(
        sqlite().await,
        Arc::new(MemoryCache::new(16 << 20)),
        batch_size,
    )
    .await
}

/// A field of a reduction's aggregate, as an integer.
pub fn amount(reduction: &Reduction, field: &str) -> i64 {
    let aggregate: Value = serde_json::from_str(&reduction.aggregate).unwrap();
    aggregate[field].as_i64().unwrap()
}

/// Waits for a background cache write that reaches `through_index`.
pub async fn cached_through(cache: &dyn ReductionCache, key: &CacheKey, through_index: u64) {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        if let Ok(Some(entry)) = cache.get(key).await
            && entry.through_index == through_index
            && !entry.aggregate.contains("bogus")
        {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "cache never reached index {through_index}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Generates one test per backend for each named `async fn(Parts)`.
#[macro_export]
macro_rules! on_both {
    ($batch_size:expr; $($name:ident),* $(,)?) => {
        mod on_postgres_and_redis {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    if let Some(parts) = $crate::common::manager::on_postgres_and_redis($batch_size).await {
                        super::$name(parts).await;
                    }
                }
            )*
        }
        mod embedded {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name($crate::common::manager::embedded($batch_size).await).await;
                }
            )*
        }
    };
}
