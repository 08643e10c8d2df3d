//! A Redis cache flushed, stopped and restarted while reductions run: every
//! request still succeeds with the aggregate a full replay gives.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use common::manager::{amount, parts};
use common::redis::PrivateRedis;
use common::sqlite;
use eventlogs_host::LogId;
use eventlogs_host::cache::redis::RedisCache;
use eventlogs_host::log_manager::Append;
use serde_json::json;

const LOGS: usize = 4;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_flushed_stopped_and_restarted_during_reductions() {
    let Some(mut redis) = PrivateRedis::start().await else {
        return;
    };
    let cache = Arc::new(RedisCache::new(&redis.url(), "outage:", common::cache_secret()).unwrap());
    let parts = parts(sqlite().await, cache, 16).await;
    let manager = parts.manager.clone();
    let logs: Vec<LogId> = (0..LOGS).map(|_| LogId::new()).collect();
    for log_id in &logs {
        manager
            .create(
                Some(*log_id),
                "payment",
                common::events(&[json!({"Authorized": {"amount": 1}})]),
                None,
            )
            .await
            .unwrap();
    }

    // Append and reduce in a loop until told to stop; every event approves
    // 1, so a correct aggregate has approved exactly one per event.
    let stop = Arc::new(AtomicBool::new(false));
    let load = tokio::spawn({
        let stop = stop.clone();
        let logs = logs.clone();
        async move {
            let mut reductions = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let log_id = logs[reductions as usize % LOGS];
                manager
                    .append(Append {
                        log_id,
                        events: common::events(&[json!({"Authorized": {"amount": 1}})]),
                        expected_last_index: None,
                        idempotency_key: None,
                    })
                    .await
                    .expect("append");
                let reduced = manager.reduce(log_id, None).await.expect("reduce");
                assert_eq!(
                    amount(&reduced, "amount_approved") as u64,
                    reduced.through_index + 1,
                    "aggregate differs from a full replay"
                );
                reductions += 1;
            }
            reductions
        }
    });

    let pause = || tokio::time::sleep(Duration::from_millis(300));
    pause().await;
    let client = redis::Client::open(redis.url()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    redis::cmd("FLUSHALL")
        .query_async::<()>(&mut conn)
        .await
        .unwrap();
    pause().await;
    redis.stop();
    pause().await;
    redis.restart().await;
    // Long enough for the connection manager to reconnect and the cache to
    // serve again.
    tokio::time::sleep(Duration::from_secs(2)).await;
    stop.store(true, Ordering::Relaxed);
    let reductions = load.await.expect("no request failed");

    let counters = parts.manager.cache_counters();
    let (hits, errors) = (
        counters.hits.load(Ordering::Relaxed),
        counters.errors.load(Ordering::Relaxed),
    );
    eprintln!("{reductions} reductions, {hits} cache hits, {errors} cache errors");
    assert!(errors > 0, "the outage was never noticed");
    assert!(hits > 0, "the cache was never used");

    // After the restart the cache serves again.
    parts.manager.flush_cache_writes().await;
    let before = counters.hits.load(Ordering::Relaxed);
    parts.manager.reduce(logs[0], None).await.unwrap();
    assert_eq!(counters.hits.load(Ordering::Relaxed), before + 1);
}
