//! Appends through the log manager, on PostgreSQL + Redis and on SQLite +
//! the in-process cache: idempotent retries, racing writers (in one manager
//! and across two managers with their own connection pools), and batches
//! that are all or nothing.

mod common;

use std::sync::Arc;

use common::manager::{Parts, parts};
use eventlogs_host::LogId;
use eventlogs_host::cache::memory::MemoryCache;
use eventlogs_host::log_manager::{LogError, LogManager};
use eventlogs_host::store::postgres::PostgresStore;
use eventlogs_host::store::sqlite::SqliteStore;
use eventlogs_host::store::{Append, Appended, StoreError};
use serde_json::{Value, json};
use tokio::sync::Barrier;

const RACERS: usize = 32;
const ROUNDS: u64 = 200;

fn authorized(amount: i64) -> Value {
    json!({"Authorized": {"amount": amount}})
}

async fn retries_with_the_same_key_replay(parts: Parts) {
    let m = &parts.manager;
    let log_id = LogId::new();
    let create_key = format!("create-{log_id}");
    let first = [authorized(1)];
    let created = m
        .create(Some(log_id), "payment", &first, Some(&create_key))
        .await
        .unwrap();
    assert!(matches!(
        m.create(Some(log_id), "payment", &first, Some(&create_key)).await,
        Err(LogError::Store(StoreError::IdempotentReplay(replayed))) if replayed == created
    ));
    // The same key with another body is a reuse, not a replay.
    assert!(matches!(
        m.create(Some(log_id), "payment", &[authorized(2)], Some(&create_key))
            .await,
        Err(LogError::Store(StoreError::IdempotencyKeyReused))
    ));

    let key = format!("append-{log_id}");
    let batch = [authorized(10), authorized(20)];
    let request = Append {
        log_id,
        events: &batch,
        expected_last_index: Some(0),
        idempotency_key: Some(&key),
    };
    let appended = m.append(request).await.unwrap();
    assert_eq!((appended.first_index, appended.last_index), (1, 2));
    // Someone else appends; the retry's expected index is now stale, and it
    // still replays instead of reporting a conflict.
    m.append(Append {
        log_id,
        events: &[authorized(100)],
        expected_last_index: None,
        idempotency_key: None,
    })
    .await
    .unwrap();
    assert!(matches!(
        m.append(request).await,
        Err(LogError::Store(StoreError::IdempotentReplay(replayed))) if replayed == appended
    ));
    assert!(matches!(
        m.append(Append {
            events: &[authorized(11)],
            ..request
        })
        .await,
        Err(LogError::Store(StoreError::IdempotencyKeyReused))
    ));

    // Nothing was stored twice.
    let stored: Vec<String> = m
        .load(log_id, 0, 100)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.payload)
        .collect();
    assert_eq!(stored.len(), 4);
    let reduced = m.reduce(log_id, None).await.unwrap();
    assert_eq!(common::manager::amount(&reduced, "amount_approved"), 131);
}

async fn concurrent_retries_with_one_key_store_once(parts: Parts) {
    let m = &parts.manager;
    let log_id = LogId::new();
    m.create(Some(log_id), "payment", &[authorized(1)], None)
        .await
        .unwrap();
    let outcomes: Vec<Result<Appended, LogError>> = race(RACERS, |_| {
        let m = m.clone();
        async move {
            let events = [authorized(5)];
            m.append(Append {
                log_id,
                events: &events,
                expected_last_index: Some(0),
                idempotency_key: Some("one-key"),
            })
            .await
        }
    })
    .await;
    let stored = outcomes.iter().filter(|o| o.is_ok()).count();
    assert_eq!(stored, 1, "{outcomes:?}");
    for outcome in &outcomes {
        match outcome {
            Ok(a) | Err(LogError::Store(StoreError::IdempotentReplay(a))) => {
                assert_eq!((a.first_index, a.last_index), (1, 1));
            }
            other => panic!("a retry was neither stored nor replayed: {other:?}"),
        }
    }
    assert_eq!(m.load(log_id, 0, 100).await.unwrap().len(), 2);
}

async fn racing_appends_have_one_winner_per_index(parts: Parts) {
    let manager = parts.manager.clone();
    racing_managers(&[manager.clone(), manager]).await;
}

async fn a_conflicting_batch_stores_nothing(parts: Parts) {
    let m = &parts.manager;
    let log_id = LogId::new();
    m.create(
        Some(log_id),
        "payment",
        &[authorized(1), authorized(2)],
        None,
    )
    .await
    .unwrap();
    let batch: Vec<Value> = (0..50).map(authorized).collect();
    assert!(matches!(
        m.append(Append {
            log_id,
            events: &batch,
            expected_last_index: Some(0),
            idempotency_key: Some("stale"),
        })
        .await,
        Err(LogError::Store(StoreError::ConcurrentAppend {
            current_last_index: 1
        }))
    ));
    assert_eq!(m.load(log_id, 0, 100).await.unwrap().len(), 2);
    // The key was not consumed by the failed attempt.
    let stored = m
        .append(Append {
            log_id,
            events: &batch,
            expected_last_index: Some(1),
            idempotency_key: Some("stale"),
        })
        .await
        .unwrap();
    assert_eq!((stored.first_index, stored.last_index), (2, 51));
}

/// `RACERS` tasks spread over `managers` append at the same expected index
/// for `ROUNDS` rounds; exactly one wins each round and the log ends up
/// contiguous with every winner's event.
async fn racing_managers(managers: &[LogManager]) {
    let log_id = LogId::new();
    managers[0]
        .create(Some(log_id), "payment", &[authorized(0)], None)
        .await
        .unwrap();
    let barrier = Arc::new(Barrier::new(RACERS));
    let wins: Vec<Vec<u64>> = race(RACERS, |racer| {
        let m = managers[racer % managers.len()].clone();
        let barrier = barrier.clone();
        async move {
            let mut won = Vec::new();
            for round in 0..ROUNDS {
                barrier.wait().await;
                let events = [json!({"Authorized": {"amount": 1, "approval_code": format!("{racer}/{round}")}})];
                match m
                    .append(Append {
                        log_id,
                        events: &events,
                        expected_last_index: Some(round),
                        idempotency_key: None,
                    })
                    .await
                {
                    Ok(appended) => {
                        assert_eq!(appended.first_index, round + 1);
                        won.push(round);
                    }
                    Err(LogError::Store(StoreError::ConcurrentAppend { current_last_index })) => {
                        assert_eq!(current_last_index, round + 1);
                    }
                    Err(other) => panic!("racer {racer} round {round}: {other}"),
                }
            }
            won
        }
    })
    .await;
    let mut rounds: Vec<u64> = wins.iter().flatten().copied().collect();
    rounds.sort_unstable();
    assert_eq!(
        rounds,
        (0..ROUNDS).collect::<Vec<_>>(),
        "one winner per round"
    );

    let mut stored = Vec::new();
    let mut from = 0;
    loop {
        let page = managers[1 % managers.len()]
            .load(log_id, from, 64)
            .await
            .unwrap();
        let Some(last) = page.last() else { break };
        from = last.index + 1;
        stored.extend(page);
    }
    assert_eq!(stored.len() as u64, ROUNDS + 1);
    assert!(stored.iter().enumerate().all(|(i, e)| e.index == i as u64));
    // Each stored event is its round's winner's.
    for round in 0..ROUNDS {
        let winner = wins.iter().position(|w| w.contains(&round)).unwrap();
        assert!(
            stored[round as usize + 1]
                .payload
                .contains(&format!("\"{winner}/{round}\"")),
            "index {} holds {}",
            round + 1,
            stored[round as usize + 1].payload
        );
    }
}

/// Runs `racers` copies of a task at once and collects their results.
async fn race<T, F>(racers: usize, task: impl Fn(usize) -> F) -> Vec<T>
where
    T: Send + 'static,
    F: Future<Output = T> + Send + 'static,
{
    let handles: Vec<_> = (0..racers).map(|i| tokio::spawn(task(i))).collect();
    let mut results = Vec::with_capacity(racers);
    for handle in handles {
        results.push(handle.await.unwrap());
    }
    results
}

on_both!(1000;
    retries_with_the_same_key_replay,
    concurrent_retries_with_one_key_store_once,
    racing_appends_have_one_winner_per_index,
    a_conflicting_batch_stores_nothing,
);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_managers_on_one_postgres_race_fairly() {
    let Some(url) = common::postgres_database().await else {
        return;
    };
    let mut managers = Vec::new();
    for _ in 0..2 {
        let store = PostgresStore::connect(&url).await.unwrap();
        let cache = common::manager::shared_redis();
        managers.push(parts(store, cache, 1000).await.manager);
    }
    racing_managers(&managers).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_managers_on_one_sqlite_file_race_fairly() {
    let url = common::sqlite_database();
    let mut managers = Vec::new();
    for _ in 0..2 {
        let store = SqliteStore::connect(&url).await.unwrap();
        let cache = Arc::new(MemoryCache::new(1 << 20));
        managers.push(parts(store, cache, 1000).await.manager);
    }
    racing_managers(&managers).await;
}
