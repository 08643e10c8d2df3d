//! Racing writers: many clients appending with `If-Match` to one log.

use std::sync::Arc;

use reqwest::Method;
use serde_json::json;
use tokio::sync::Barrier;

use crate::{TestDaemon, assert_problem};

/// `racers` clients, spread over `daemons`, append to `log` with
/// `If-Match: "ROUND"` for `rounds` rounds, all starting each round
/// together. A loser must get 412 with the winner's index. Returns how many
/// won each round (exactly one each, if all is well).
pub async fn if_match_race(
    daemons: &[Arc<TestDaemon>],
    log: &str,
    racers: usize,
    rounds: u64,
) -> Vec<u32> {
    let barrier = Arc::new(Barrier::new(racers));
    let handles: Vec<_> = (0..racers)
        .map(|racer| {
            let daemon = daemons[racer % daemons.len()].clone();
            let (log, barrier) = (log.to_owned(), barrier.clone());
            tokio::spawn(async move {
                let mut won = Vec::new();
                for round in 0..rounds {
                    barrier.wait().await;
                    let event =
                        json!({"Authorized": {"amount": 1, "approval_code": format!("{racer}")}});
                    let response = daemon
                        .request(Method::POST, &format!("/v1/logs/{log}/events"))
                        .header("if-match", format!("\"{round}\""))
                        .json(&json!({ "event": event }))
                        .send()
                        .await
                        .unwrap();
                    match response.status().as_u16() {
                        200 => won.push(round),
                        412 => {
                            let problem = assert_problem(response, 412, "concurrent-append").await;
                            assert_eq!(problem["current_index"], json!(round + 1));
                        }
                        other => panic!("round {round}: status {other}"),
                    }
                }
                won
            })
        })
        .collect();
    let mut winners = vec![0u32; rounds as usize];
    for handle in handles {
        for round in handle.await.unwrap() {
            winners[round as usize] += 1;
        }
    }
    winners
}
