//! Hot deploy over HTTP: a new version serves at once and never reads the
//! old version's cached aggregates; rollback; and a second daemon on the
//! same PostgreSQL (a separate process) serving a deploy made on the
//! first within a second, and stopping gracefully on SIGTERM.

use std::time::{Duration, Instant};

use eventlogs_e2e::{TestDaemon, config, json, plugin, postgres_database, with_redis};
use reqwest::Method;
use serde_json::{Value, json};

async fn aggregate(daemon: &TestDaemon, log: &str) -> Value {
    let (status, body) = json(daemon.get(&format!("/v1/logs/{log}/aggregate")).await).await;
    assert_eq!(status, 200, "{body}");
    body
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deploy_rollback_and_a_second_daemon() {
    let Some(database) = postgres_database().await else {
        return;
    };
    let first = TestDaemon::start(with_redis(config(&database))).await;
    // The second daemon is a separate `eventlogs serve` process.
    let second = TestDaemon::spawn(&[
        "--database-url",
        &database,
        "--redis-url",
        eventlogs_e2e::SHARED_REDIS,
        "--redis-prefix",
        &format!("eventlogs-e2e-{}:", uuid::Uuid::now_v7()),
    ])
    .await;

    let (_, v1) = json(first.get("/v1/reducers/payment").await).await;
    let v1 = v1["active_version"].as_str().unwrap().to_owned();
    let events: Vec<Value> = (0..5)
        .map(|_| json!({"Authorized": {"amount": 2}}))
        .collect();
    let (_, log) = json(
        first
            .post("/v1/logs", json!({"reducer": "payment", "events": events}))
            .await,
    )
    .await;
    let log = log["log_id"].as_str().unwrap().to_owned();
    let on_v1 = aggregate(&first, &log).await;
    assert_eq!(on_v1["aggregate"]["amount_approved"], 10);
    first
        .post(
            &format!("/v1/logs/{log}/events"),
            json!({"event": {"Authorized": {"amount": 1}}}),
        )
        .await;

    // v2 (another component under the same name) serves at once, folding
    // from the start: v1's cached aggregate is not v2's.
    let deployed = first.deploy("payment", plugin("counter")).await;
    assert_eq!(deployed.status(), 201);
    let (_, deployed) = json(deployed).await;
    let v2 = deployed["version"].as_str().unwrap().to_owned();
    let on_v2 = aggregate(&first, &log).await;
    assert_eq!(on_v2["reducer_version"], v2);
    assert_eq!(on_v2["aggregate"], json!({"count": 6}));
    assert_eq!(
        (on_v2["from_cache"].clone(), on_v2["events_folded"].clone()),
        (json!(false), json!(6))
    );

    // The second daemon serves v2 within a second of the deploy.
    let started = Instant::now();
    loop {
        let seen = aggregate(&second, &log).await;
        if seen["reducer_version"] == v2 {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "second daemon still on v1"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    eprintln!("second daemon served v2 after {:?}", started.elapsed());

    // Deploying the same bytes again is idempotent.
    let (status, again) = json(first.deploy("payment", plugin("counter")).await).await;
    assert_eq!(
        (
            status,
            again["version"].as_str().unwrap(),
            again["created"].clone()
        ),
        (200, v2.as_str(), json!(false))
    );

    // Rollback to v1, seen by both daemons.
    let (status, activated) = json(
        first
            .request(Method::POST, "/v1/reducers/payment/activate")
            .json(&json!({"version": v1}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(
        (status, activated["active_version"].as_str().unwrap()),
        (200, v1.as_str())
    );
    let rolled_back = aggregate(&first, &log).await;
    assert_eq!(rolled_back["reducer_version"], v1);
    assert_eq!(rolled_back["aggregate"]["amount_approved"], 11);
    let started = Instant::now();
    while aggregate(&second, &log).await["reducer_version"] != v1 {
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "second daemon did not roll back"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let (_, listed) = json(second.get("/v1/reducers").await).await;
    assert_eq!(listed[0]["versions"].as_array().unwrap().len(), 2);
    first.stop().await;
    second.stop().await;
}
