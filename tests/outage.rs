//! PostgreSQL unreachable: requests get 503 with Retry-After, `/readyz`
//! fails, and the daemon recovers by itself when the database returns: the
//! first requests after it succeed, however many pooled connections the
//! outage broke. The outage is a TCP proxy the test cuts, never the shared
//! server.

use std::time::Instant;

use eventlogs_e2e::proxy::Proxy;
use eventlogs_e2e::{TestDaemon, assert_problem, config, json, postgres_database};
use reqwest::Method;
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_unreachable_is_503_and_recovers() {
    let Some(database) = postgres_database().await else {
        return;
    };
    let mut proxy = Proxy::start("127.0.0.1:5432".parse().unwrap()).await;
    let (_, name) = database.rsplit_once('/').unwrap();
    let through_proxy = format!("postgres://postgres@{}/{name}", proxy.addr());
    let daemon = TestDaemon::start(config(&through_proxy)).await;
    let (status, log) = json(
        daemon
            .post(
                "/v1/logs",
                json!({"reducer": "payment", "event": {"Authorized": {"amount": 1}}}),
            )
            .await,
    )
    .await;
    assert_eq!(status, 201);
    let events = format!("/v1/logs/{}/events", log["log_id"].as_str().unwrap());
    let append = || daemon.post(&events, json!({"event": {"Authorized": {"amount": 1}}}));
    let page = format!("{events}?limit=10");
    // Reads at once, so the pool holds several connections for the outage
    // to break; their statuses.
    let reads = || {
        let mut reads = tokio::task::JoinSet::new();
        for path in ["/readyz", &page].repeat(6) {
            let read = daemon.request(Method::GET, path).send();
            reads.spawn(async move { read.await.unwrap().status() });
        }
        reads.join_all()
    };
    assert!(reads().await.iter().all(|s| *s == 200));

    proxy.cut();
    let down = append().await;
    assert_eq!(
        down.headers()
            .get("retry-after")
            .map(|v| v.to_str().unwrap()),
        Some("1")
    );
    assert_problem(down, 503, "unavailable").await;
    let ready = daemon.get("/readyz").await;
    assert_eq!(ready.status(), 503);
    assert_eq!(daemon.get("/healthz").await.status(), 200);

    proxy.restore().await;
    let started = Instant::now();
    let first = append().await;
    eprintln!(
        "first append {:?} after the database returned",
        started.elapsed()
    );
    assert_eq!(first.status(), 200, "the first append after the outage");
    // Not one of the connections the outage broke is handed out again.
    let after = reads().await;
    assert!(after.iter().all(|s| *s == 200), "reads after it: {after:?}");
    let (_, page) = json(daemon.get(&page).await).await;
    assert_eq!(
        page.as_array().unwrap().len(),
        2,
        "exactly the acknowledged appends"
    );
    daemon.stop().await;
}
