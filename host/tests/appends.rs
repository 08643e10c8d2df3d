//! Appends through the log manager, on PostgreSQL + Redis and on SQLite +
//! the in-process cache: idempotent retries, racing writers (in one manager
//! and across two managers with their own connection pools), unconditional
//! appends that always succeed, and batches that are all or nothing.

mod common;

use std::sync::Arc;

use common::events;
use common::manager::{Parts, parts};
use eventlogs_host::LogId;
use eventlogs_host::cache::memory::MemoryCache;
use eventlogs_host::log_manager::{Append, LogError, LogManager};
use eventlogs_host::store::postgres::PostgresStore;
use eventlogs_host::store::sqlite::SqliteStore;
use eventlogs_host::store::{Appended, StoreError, Written};
use serde_json::{Value, json};
use tokio::sync::Barrier;

const RACERS: usize = 32;
const ROUNDS: u64 = 200;

fn authorized(amount: i64) -> Value {
    json!({"Authorized": {"amount": amount}})
}

fn append<'a>(
    log_id: LogId,
    values: &[Value],
    expected: Option<u64>,
    key: Option<&'a str>,
) -> Append<'a> {
    Append {
        log_id,
        events: events(values),
        expected_last_index: expected,
        idempotency_key: key,
    }
}

fn stored(written: Result<Written, LogError>) -> Appended {
    match written {
        Ok(Written::Stored(appended)) => appended,
        other => panic!("expected a stored write, got {other:?}"),
    }
}

async fn retries_with_the_same_key_replay(parts: Parts) {
    let m = &parts.manager;
    let log_id = LogId::new();
    let create_key = format!("create-{log_id}");
    let first = events(&[authorized(1)]);
    let created = stored(
        m.create(Some(log_id), "payment", first.clone(), Some(&create_key))
            .await,
    );
    assert!(matches!(
        m.create(Some(log_id), "payment", first, Some(&create_key)).await,
        Ok(Written::Replayed(replayed)) if replayed == created
    ));
    // The same key with another body is a reuse, not a replay.
    assert!(matches!(
        m.create(
            Some(log_id),
            "payment",
            events(&[authorized(2)]),
            Some(&create_key)
        )
        .await,
        Err(LogError::Store(StoreError::IdempotencyKeyReused))
    ));

    let key = format!("append-{log_id}");
    let batch = [authorized(10), authorized(20)];
    let appended = stored(m.append(append(log_id, &batch, Some(0), Some(&key))).await);
    assert_eq!((appended.first_index, appended.last_index), (1, 2));
    // Someone else appends; the retry's expected index is now stale, and it
    // still replays instead of reporting a conflict.
    stored(
        m.append(append(log_id, &[authorized(100)], None, None))
            .await,
    );
    assert!(matches!(
        m.append(append(log_id, &batch, Some(0), Some(&key))).await,
        Ok(Written::Replayed(replayed)) if replayed == appended
    ));
    // Without If-Match too.
    assert!(matches!(
        m.append(append(log_id, &batch, None, Some(&key))).await,
        Ok(Written::Replayed(replayed)) if replayed == appended
    ));
    assert!(matches!(
        m.append(append(log_id, &[authorized(11)], Some(0), Some(&key)))
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

/// A retry of a stored append is a replay even when its events would now
/// be refused (a capture of more than is outstanding after the first).
async fn a_retry_is_a_replay_even_if_validation_would_now_refuse_it(parts: Parts) {
    let m = &parts.manager;
    let log_id = LogId::new();
    stored(
        m.create(Some(log_id), "payment", events(&[authorized(10)]), None)
            .await,
    );
    let capture = [json!({"Captured": {"amount": 10}})];
    let first = stored(m.append(append(log_id, &capture, None, Some("cap"))).await);
    assert!(matches!(
        m.append(append(log_id, &capture, None, Some("cap"))).await,
        Ok(Written::Replayed(replayed)) if replayed == first
    ));
    assert_eq!(m.load(log_id, 0, 100).await.unwrap().len(), 2);
}

async fn concurrent_retries_with_one_key_store_once(parts: Parts) {
    let m = &parts.manager;
    let log_id = LogId::new();
    stored(
        m.create(Some(log_id), "payment", events(&[authorized(1)]), None)
            .await,
    );
    let outcomes: Vec<Result<Written, LogError>> = race(RACERS, |_| {
        let m = m.clone();
        async move {
            m.append(append(log_id, &[authorized(5)], Some(0), Some("one-key")))
                .await
        }
    })
    .await;
    let fresh = outcomes
        .iter()
        .filter(|o| matches!(o, Ok(Written::Stored(_))))
        .count();
    assert_eq!(fresh, 1, "{outcomes:?}");
    for outcome in &outcomes {
        match outcome {
            Ok(written) => {
                let a = written.appended();
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

async fn unconditional_appends_never_conflict(parts: Parts) {
    let manager = parts.manager.clone();
    unconditional_appends(&[manager.clone(), manager], 16, 25).await;
}

async fn a_conflicting_batch_stores_nothing(parts: Parts) {
    let m = &parts.manager;
    let log_id = LogId::new();
    stored(
        m.create(
            Some(log_id),
            "payment",
            events(&[authorized(1), authorized(2)]),
            None,
        )
        .await,
    );
    let batch: Vec<Value> = (1..=50).map(authorized).collect();
    assert!(matches!(
        m.append(append(log_id, &batch, Some(0), Some("stale")))
            .await,
        Err(LogError::Store(StoreError::ConcurrentAppend {
            current_last_index: 1
        }))
    ));
    assert_eq!(m.load(log_id, 0, 100).await.unwrap().len(), 2);
    // The key was not consumed by the failed attempt.
    let appended = stored(
        m.append(append(log_id, &batch, Some(1), Some("stale")))
            .await,
    );
    assert_eq!((appended.first_index, appended.last_index), (2, 51));
}

/// `racers` tasks spread over `managers` append `each` events to one log
/// without `If-Match`: every append succeeds and the log is contiguous.
async fn unconditional_appends(managers: &[LogManager], racers: usize, each: u64) {
    let log_id = LogId::new();
    stored(
        managers[0]
            .create(Some(log_id), "payment", events(&[authorized(1)]), None)
            .await,
    );
    let outcomes: Vec<Vec<u64>> = race(racers, |racer| {
        let m = managers[racer % managers.len()].clone();
        async move {
            let mut indexes = Vec::new();
            for _ in 0..each {
                let appended = stored(m.append(append(log_id, &[authorized(1)], None, None)).await);
                indexes.push(appended.first_index);
            }
            indexes
        }
    })
    .await;
    let mut indexes: Vec<u64> = outcomes.into_iter().flatten().collect();
    indexes.sort_unstable();
    let total = racers as u64 * each;
    assert_eq!(indexes, (1..=total).collect::<Vec<_>>());
    let info = managers[0].info(log_id).await.unwrap();
    assert_eq!(info.last_index, total);
    let reduced = managers[managers.len() - 1]
        .reduce(log_id, None)
        .await
        .unwrap();
    assert_eq!(reduced.through_index, total);
    assert_eq!(
        common::manager::amount(&reduced, "amount_approved"),
        total as i64 + 1
    );
}

/// `RACERS` tasks spread over `managers` append at the same expected index
/// for `ROUNDS` rounds; exactly one wins each round and the log ends up
/// contiguous with every winner's event.
async fn racing_managers(managers: &[LogManager]) {
    let log_id = LogId::new();
    stored(
        managers[0]
            .create(Some(log_id), "payment", events(&[authorized(1)]), None)
            .await,
    );
    let barrier = Arc::new(Barrier::new(RACERS));
    let wins: Vec<Vec<u64>> = race(RACERS, |racer| {
        let m = managers[racer % managers.len()].clone();
        let barrier = barrier.clone();
        async move {
            let mut won = Vec::new();
            for round in 0..ROUNDS {
                barrier.wait().await;
                let events = [json!({"Authorized": {"amount": 1, "approval_code": format!("{racer}/{round}")}})];
                match m.append(append(log_id, &events, Some(round), None)).await {
                    Ok(written) => {
                        assert_eq!(written.appended().first_index, round + 1);
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
    a_retry_is_a_replay_even_if_validation_would_now_refuse_it,
    unconditional_appends_never_conflict,
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
    unconditional_appends(&managers, 32, 100).await;
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
    unconditional_appends(&managers, 32, 100).await;
}
