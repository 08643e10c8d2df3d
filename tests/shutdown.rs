//! Graceful shutdown: a request in flight when shutdown begins still gets
//! its response, and pending cache writes are flushed before the daemon
//! returns.

use std::time::{Duration, Instant};

use eventlogs_e2e::{TestDaemon, json, plugin};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_flight_requests_finish_during_shutdown() {
    let daemon = TestDaemon::embedded().await;
    // A reducer that spins until its 1 s deadline makes a slow request.
    assert_eq!(
        daemon
            .deploy("spinner", plugin("fixture_infinite_loop"))
            .await
            .status(),
        201
    );
    let (_, log) = json(
        daemon
            .post("/v1/logs", json!({"reducer": "spinner", "event": {}}))
            .await,
    )
    .await;
    let slow = daemon
        .request(
            reqwest::Method::GET,
            &format!("/v1/logs/{}/aggregate", log["log_id"].as_str().unwrap()),
        )
        .send();
    let in_flight = tokio::spawn(slow);
    tokio::time::sleep(Duration::from_millis(200)).await;

    let started = Instant::now();
    daemon.stop().await;
    let waited = started.elapsed();
    let response = in_flight
        .await
        .unwrap()
        .expect("the in-flight request got a response, not a reset");
    let (status, body) = json(response).await;
    assert_eq!(status, 422, "{body}");
    assert_eq!(body["failure"], "timeout");
    assert!(
        waited >= Duration::from_millis(500),
        "shutdown returned after {waited:?}, before the request finished"
    );
}
