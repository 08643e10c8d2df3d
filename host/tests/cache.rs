//! Reduction caches: the same behaviour from Redis (the real server, a key
//! prefix per test) and the in-process cache, and Redis faults that turn
//! into errors the caller can treat as misses.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

mod common;

use common::redis::{PrivateRedis, free_port};
use eventlogs_host::LogId;
use eventlogs_host::cache::memory::MemoryCache;
use eventlogs_host::cache::redis::RedisCache;
use eventlogs_host::cache::{Anchor, CacheError, CacheKey, CachedReduction, ReductionCache};
use eventlogs_host::runtime::Version;

const SHARED_REDIS: &str = "redis://127.0.0.1:6379/";

/// A cache on the shared Redis under a prefix of its own, or `None`
/// (loudly) when Redis is not reachable outside CI.
async fn redis() -> Option<(RedisCache, String)> {
    let prefix = format!("eventlogs-test-{}:", LogId::new());
    let cache = RedisCache::new(SHARED_REDIS, &prefix, common::cache_secret()).unwrap();
    match cache.get(&key("probe")).await {
        Ok(_) => Some((cache, prefix)),
        Err(e) if std::env::var("CI").as_deref() != Ok("true") => {
            eprintln!("SKIPPED: Redis not reachable at {SHARED_REDIS}: {e}");
            None
        }
        Err(e) => panic!("Redis is required under CI=true: {e}"),
    }
}

fn key(reducer: &str) -> CacheKey {
    CacheKey {
        reducer: reducer.to_owned(),
        version: Version::of(reducer.as_bytes()),
        log_id: LogId::new(),
    }
}

fn reduction(through_index: u64) -> CachedReduction {
    CachedReduction {
        through_index,
        reduced_at: 1_700_000_000_000_000,
        anchor: Anchor {
            position: through_index + 100,
            recorded_at: 1_600_000_000_000_000,
        },
        aggregate: format!(r#"{{"count":{through_index}}}"#),
    }
}

async fn round_trips_and_separates_versions(cache: Arc<dyn ReductionCache>) {
    let key = key("payment");
    assert_eq!(cache.get(&key).await, Ok(None));
    cache.put(&key, &reduction(7), None).await.unwrap();
    assert_eq!(cache.get(&key).await, Ok(Some(reduction(7))));
    cache.put(&key, &reduction(9), None).await.unwrap();
    assert_eq!(cache.get(&key).await, Ok(Some(reduction(9))));
    let other_version = CacheKey {
        version: Version::of(b"payment v2"),
        ..key.clone()
    };
    assert_eq!(
        cache.get(&other_version).await,
        Ok(None),
        "a new version never sees old aggregates"
    );
}

async fn expires_after_its_ttl(cache: Arc<dyn ReductionCache>) {
    let key = key("payment");
    cache
        .put(&key, &reduction(1), Some(Duration::from_millis(100)))
        .await
        .unwrap();
    assert_eq!(cache.get(&key).await, Ok(Some(reduction(1))));
    tokio::time::sleep(Duration::from_millis(250)).await;
    assert_eq!(cache.get(&key).await, Ok(None));
}

#[tokio::test]
async fn memory_round_trips_and_separates_versions() {
    round_trips_and_separates_versions(Arc::new(MemoryCache::new(1 << 20))).await;
}

#[tokio::test]
async fn memory_expires_after_its_ttl() {
    expires_after_its_ttl(Arc::new(MemoryCache::new(1 << 20))).await;
}

#[tokio::test]
async fn memory_stays_within_its_byte_budget() {
    let cache = MemoryCache::new(64 << 10);
    let keys: Vec<CacheKey> = (0..1000).map(|_| key("counter")).collect();
    for key in &keys {
        cache.put(key, &reduction(1), None).await.unwrap();
    }
    let mut held = 0;
    for key in &keys {
        held += cache.get(key).await.unwrap().is_some() as usize;
    }
    assert!(
        held < 1000,
        "a 64 KiB budget cannot hold 1000 entries, held {held}"
    );
}

#[tokio::test]
async fn redis_round_trips_and_separates_versions() {
    if let Some((cache, _)) = redis().await {
        round_trips_and_separates_versions(Arc::new(cache)).await;
    }
}

#[tokio::test]
async fn redis_expires_after_its_ttl() {
    if let Some((cache, _)) = redis().await {
        expires_after_its_ttl(Arc::new(cache)).await;
    }
}

#[tokio::test]
async fn redis_corrupt_entry_is_an_error_not_a_value() {
    let Some((cache, prefix)) = redis().await else {
        return;
    };
    let key = key("payment");
    let client = redis::Client::open(SHARED_REDIS).unwrap();
    let mut raw = client.get_multiplexed_async_connection().await.unwrap();
    let _: () = redis::cmd("SET")
        .arg(key.to_text(&prefix))
        .arg(b"\x00garbage")
        .query_async(&mut raw)
        .await
        .unwrap();
    assert!(matches!(cache.get(&key).await, Err(CacheError::Corrupt(_))));
}

#[tokio::test]
async fn redis_nobody_listening_fails_fast() {
    let cache = RedisCache::new(
        &format!("redis://127.0.0.1:{}/", free_port()),
        "t:",
        common::cache_secret(),
    )
    .unwrap();
    let started = Instant::now();
    assert!(matches!(
        cache.get(&key("payment")).await,
        Err(CacheError::Unavailable(_))
    ));
    assert!(matches!(
        cache.put(&key("payment"), &reduction(1), None).await,
        Err(CacheError::Unavailable(_))
    ));
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn redis_stopped_and_restarted_recovers_without_a_new_cache() {
    let Some(mut server) = PrivateRedis::start().await else {
        return;
    };
    let cache = RedisCache::new(&server.url(), "t:", common::cache_secret()).unwrap();
    let key = key("payment");
    cache.put(&key, &reduction(3), None).await.unwrap();
    assert_eq!(cache.get(&key).await, Ok(Some(reduction(3))));

    server.stop();
    assert!(matches!(
        cache.get(&key).await,
        Err(CacheError::Unavailable(_))
    ));

    server.restart().await;
    // The restarted server kept nothing; the cache reconnects by itself.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match cache.get(&key).await {
            Ok(found) => {
                assert_eq!(found, None);
                break;
            }
            Err(e) if Instant::now() < deadline => {
                let _ = e;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => panic!("cache did not reconnect: {e}"),
        }
    }
    cache.put(&key, &reduction(4), None).await.unwrap();
    assert_eq!(cache.get(&key).await, Ok(Some(reduction(4))));
}

/// Puts made at once go to Redis together and every one lands; of the
/// puts to one key, the one made last stays.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_concurrent_puts_all_land_and_the_last_to_a_key_stays() {
    let Some((cache, _)) = redis().await else {
        return;
    };
    let cache = Arc::new(cache);
    let keys: Vec<CacheKey> = (0..200).map(|_| key("payment")).collect();
    let puts = keys.iter().enumerate().map(|(i, key)| {
        let (cache, key) = (cache.clone(), key.clone());
        tokio::spawn(async move { cache.put(&key, &reduction(i as u64), None).await })
    });
    for put in futures_util::future::join_all(puts).await {
        put.unwrap().unwrap();
    }
    for (i, key) in keys.iter().enumerate() {
        assert_eq!(cache.get(key).await, Ok(Some(reduction(i as u64))));
    }
    // One key written 100 times in order, without waiting for each: the
    // queue keeps their order, so the last is what Redis holds.
    let one = key("counter");
    let waker = std::task::Waker::noop();
    let mut pending = Vec::new();
    for i in 0..100u64 {
        let (cache, one) = (cache.clone(), one.clone());
        let mut put = Box::pin(async move { cache.put(&one, &reduction(i), None).await });
        // Queued in this order: each put enqueues on its first poll (which
        // may even see it answered, if this thread was preempted there).
        match put
            .as_mut()
            .poll(&mut std::task::Context::from_waker(waker))
        {
            std::task::Poll::Ready(outcome) => outcome.unwrap(),
            std::task::Poll::Pending => pending.push(put),
        }
    }
    for put in futures_util::future::join_all(pending).await {
        put.unwrap();
    }
    assert_eq!(cache.get(&one).await, Ok(Some(reduction(99))));
}

/// A cache used from one async runtime and then, that runtime gone, from
/// another (as tests and tools do) still writes. (The connection itself
/// breaks with the runtime it ran on; the cache reconnects, and the first
/// call after may fail, as any call during an outage.)
#[test]
fn redis_puts_outlive_the_runtime_that_started_them() {
    let new_runtime = || tokio::runtime::Runtime::new().unwrap();
    let Some((cache, _)) = new_runtime().block_on(redis()) else {
        return;
    };
    let key = key("payment");
    for through in 1..=3 {
        let runtime = new_runtime();
        runtime.block_on(async {
            let deadline = Instant::now() + Duration::from_secs(5);
            while let Err(error) = cache.put(&key, &reduction(through), None).await {
                assert!(Instant::now() < deadline, "puts keep failing: {error}");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            assert_eq!(cache.get(&key).await, Ok(Some(reduction(through))));
        });
        drop(runtime);
    }
}
