//! The race suite (`scripts/suite races`): many HTTP clients on PostgreSQL,
//! checked in the database. Ignored by the regular test run for its
//! length; bounded in time, loopback only.

use std::sync::Arc;

use eventlogs_e2e::race::if_match_race;
use eventlogs_e2e::{TestDaemon, config, json, postgres_database, with_redis};
use reqwest::Method;
use serde_json::json;

const RACERS: usize = 32;
const ROUNDS: u64 = 1000;
const KEYS: usize = 1000;
const RETRIES: usize = 10;
/// Keys in flight at once (each with all its retries).
const KEYS_AT_ONCE: usize = 25;

async fn rows(database: &str, log: &str) -> (i64, i64, i64) {
    let pool = sqlx::PgPool::connect(database).await.unwrap();
    sqlx::query_as(
        "SELECT count(*), count(DISTINCT idx), coalesce(max(idx), -1) FROM events WHERE log_id = $1::uuid",
    )
    .bind(log)
    .fetch_one(&pool)
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "race suite: run with scripts/suite races"]
async fn racers_on_one_log_one_winner_per_index() {
    let database = postgres_database().await.expect("PostgreSQL");
    let daemon = Arc::new(TestDaemon::start(with_redis(config(&database))).await);
    let (_, log) = json(
        daemon
            .post(
                "/v1/logs",
                json!({"reducer": "payment", "event": {"Authorized": {"amount": 1}}}),
            )
            .await,
    )
    .await;
    let log = log["log_id"].as_str().unwrap().to_owned();
    let started = std::time::Instant::now();
    let winners = if_match_race(&[daemon], &log, RACERS, ROUNDS).await;
    eprintln!(
        "{RACERS} racers x {ROUNDS} rounds in {:?}",
        started.elapsed()
    );
    assert!(
        winners.iter().all(|&w| w == 1),
        "rounds without exactly one winner: {:?}",
        winners
            .iter()
            .enumerate()
            .filter(|(_, w)| **w != 1)
            .take(10)
            .collect::<Vec<_>>()
    );
    let (count, distinct, max) = rows(&database, &log).await;
    assert_eq!(
        (count, distinct, max),
        (ROUNDS as i64 + 1, ROUNDS as i64 + 1, ROUNDS as i64),
        "gaps or duplicates"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "race suite: run with scripts/suite races"]
async fn retried_keys_store_exactly_once() {
    let database = postgres_database().await.expect("PostgreSQL");
    let daemon = Arc::new(TestDaemon::start(with_redis(config(&database))).await);
    let (_, log) = json(
        daemon
            .post(
                "/v1/logs",
                json!({"reducer": "payment", "event": {"Authorized": {"amount": 1}}}),
            )
            .await,
    )
    .await;
    let log: Arc<str> = log["log_id"].as_str().unwrap().into();
    let started = std::time::Instant::now();
    let mut stored = 0;
    let mut replayed = 0;
    for chunk in (0..KEYS).collect::<Vec<_>>().chunks(KEYS_AT_ONCE) {
        let mut handles = Vec::new();
        for &key in chunk {
            for _ in 0..RETRIES {
                let (daemon, log) = (daemon.clone(), log.clone());
                handles.push(tokio::spawn(async move {
                    let response = daemon
                        .request(Method::POST, &format!("/v1/logs/{log}/events"))
                        .header("idempotency-key", format!("key-{key}"))
                        .json(&json!({"event": {"Authorized": {"amount": 1, "approval_code": format!("{key}")}}}))
                        .send()
                        .await
                        .unwrap();
                    let status = response.status().as_u16();
                    let (_, body) = json(response).await;
                    assert_eq!(status, 200, "{body}");
                    body["replayed"].as_bool().unwrap()
                }));
            }
        }
        for handle in handles {
            if handle.await.unwrap() {
                replayed += 1;
            } else {
                stored += 1;
            }
        }
    }
    eprintln!(
        "{KEYS} keys x {RETRIES} retries in {:?}: {stored} stored, {replayed} replayed",
        started.elapsed()
    );
    assert_eq!(stored, KEYS);
    let (count, distinct, max) = rows(&database, &log).await;
    assert_eq!(
        (count, distinct, max),
        (KEYS as i64 + 1, KEYS as i64 + 1, KEYS as i64)
    );
}
