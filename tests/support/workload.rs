//! A write load that mixes stored appends with requests that store nothing
//! (stale `If-Match`, refused events, reused keys, replays), for tests that
//! read while it runs.

use std::sync::Arc;

use reqwest::Method;
use serde_json::json;
use tokio::task::JoinHandle;

use crate::TestDaemon;

/// A seed for randomised tests: `EVENTLOGS_TEST_SEED` if set (to replay a
/// failure), else a random one; printed either way.
pub fn seed() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let seed = match std::env::var("EVENTLOGS_TEST_SEED") {
        Ok(text) => text.parse().expect("EVENTLOGS_TEST_SEED is a number"),
        Err(_) => std::collections::hash_map::RandomState::new()
            .build_hasher()
            .finish(),
    };
    eprintln!("seed {seed} (replay with EVENTLOGS_TEST_SEED={seed})");
    seed
}

/// The next number of a xorshift sequence.
pub fn next(state: &mut u64) -> u64 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    *state
}

/// Starts `writers` tasks, each sending `each` requests of kinds drawn from
/// `seed` to the payment logs `logs` through the daemons in turn. Every
/// answer must be 200, 412 or 422; anything else fails the task.
pub fn mixed_writers(
    daemons: &[Arc<TestDaemon>],
    logs: &[String],
    writers: usize,
    each: usize,
    seed: u64,
) -> Vec<JoinHandle<()>> {
    (0..writers)
        .map(|writer| {
            let daemon = daemons[writer % daemons.len()].clone();
            let logs = logs.to_vec();
            let mut draws = seed ^ (writer as u64 + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
            tokio::spawn(async move {
                for i in 0..each {
                    let log = &logs[(writer + i) % logs.len()];
                    let path = format!("/v1/logs/{log}/events");
                    let send = |request: reqwest::RequestBuilder| async move {
                        let status = request.send().await.unwrap().status().as_u16();
                        assert!([200, 412, 422].contains(&status), "status {status}");
                    };
                    let request = daemon.request(Method::POST, &path);
                    match next(&mut draws) % 6 {
                        // Stale: 412.
                        1 => {
                            send(request.header("if-match", "\"0\"").json(&json!({"event": {"Captured": {"amount": 1}}})))
                                .await;
                        }
                        // Refused by the reducer in the middle of a batch: 422.
                        2 => {
                            send(request.json(&json!({"events": [{"Captured": {"amount": 1}}, {"Bogus": {}}]})))
                                .await;
                        }
                        // A key reused with another body: 422 after its
                        // first use stored.
                        3 => {
                            send(request
                                .header("idempotency-key", format!("reused-{writer}"))
                                .json(&json!({"event": {"Captured": {"amount": i}}})))
                            .await;
                        }
                        // The same request twice: the second is a replay.
                        4 => {
                            let key = format!("replayed-{writer}-{i}");
                            let body = json!({"event": {"Refunded": {"amount": 1}}});
                            for _ in 0..2 {
                                let request = daemon.request(Method::POST, &path);
                                send(request.header("idempotency-key", &key).json(&body)).await;
                            }
                        }
                        _ => {
                            send(request.json(&json!({"events": [{"Captured": {"amount": 1}}, {"Refunded": {"amount": 1}}]})))
                                .await;
                        }
                    }
                }
            })
        })
        .collect()
}
