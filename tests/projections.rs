//! Projections over HTTP: payment totals over the feed equal the sums of
//! every payment log's own aggregate, advance incrementally, and are shared
//! by every process on the database; a new reducer version is built in the
//! background while the old result is served (blue/green); bad input is
//! refused and changes nothing.

use std::sync::Arc;
use std::time::Duration;

use eventlogs_e2e::{
    TestDaemon, assert_problem, json, plugin, postgres_database, sqlite_database, two_processes,
};
use reqwest::Method;
use serde_json::{Value, json};

const AMOUNTS: [&str; 3] = ["amount_approved", "amount_captured", "amount_refunded"];

async fn put(daemon: &TestDaemon, name: &str, body: Value) -> reqwest::Response {
    daemon
        .request(Method::PUT, &format!("/v1/projections/{name}"))
        .json(&body)
        .send()
        .await
        .unwrap()
}

/// Payment logs with captures, refunds and a refused append each; their
/// ids.
async fn payments(daemon: &TestDaemon, count: i64) -> Vec<String> {
    let mut logs = Vec::new();
    for n in 1..=count {
        let log = daemon
            .create_log("payment", vec![json!({"Authorized": {"amount": 1000 * n}})])
            .await;
        for event in [
            json!({"Captured": {"amount": 10 * n}}),
            json!({"Refunded": {"amount": n}}),
            // Refused (more than is outstanding): stored nowhere, folded
            // nowhere.
            json!({"Captured": {"amount": 1_000_000}}),
        ] {
            let status = daemon
                .post(&format!("/v1/logs/{log}/events"), json!({"event": event}))
                .await
                .status();
            assert!(status == 200 || status == 422);
        }
        logs.push(log);
    }
    logs
}

/// The sums of every log's own aggregate.
async fn sums(daemon: &TestDaemon, logs: &[String]) -> Vec<i64> {
    let mut sums = vec![0; AMOUNTS.len()];
    for log in logs {
        let (status, reduced) = json(daemon.get(&format!("/v1/logs/{log}/aggregate")).await).await;
        assert_eq!(status, 200, "{reduced}");
        for (sum, amount) in sums.iter_mut().zip(AMOUNTS) {
            *sum += reduced["aggregate"][amount].as_i64().unwrap();
        }
    }
    sums
}

fn amounts(result: &Value) -> Vec<i64> {
    AMOUNTS
        .iter()
        .map(|a| result["aggregate"][a].as_i64().unwrap())
        .collect()
}

/// Reads the projection until it is caught up and current through at least
/// `position` (a minute at most).
async fn read_caught_up(daemon: &TestDaemon, name: &str, position: u64) -> Value {
    for _ in 0..600 {
        let (status, result) = json(daemon.get(&format!("/v1/projections/{name}")).await).await;
        assert_eq!(status, 200, "{result}");
        if result["caught_up"] == true
            && result["position"].as_u64().unwrap() >= position
            && result.get("building").is_none()
        {
            return result;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("projection {name} did not catch up within a minute");
}

/// The feed's last position.
async fn head(daemon: &TestDaemon) -> u64 {
    let (_, created) = json(
        daemon
            .post(
                "/v1/logs",
                json!({"reducer": "payment", "event": {"Authorized": {"amount": 1}}}),
            )
            .await,
    )
    .await;
    created["last_position"].as_u64().unwrap()
}

async fn totals_equal_the_sums_of_every_log(daemons: [Arc<TestDaemon>; 2]) {
    let logs = payments(&daemons[0], 5).await;
    let name = format!("totals-{}", uuid::Uuid::now_v7());
    let response = put(
        &daemons[0],
        &name,
        json!({"reducer": "payment", "filter": {"reducer": "payment"}}),
    )
    .await;
    assert_eq!(response.status(), 201);
    assert_eq!(
        response.headers()["location"],
        format!("/v1/projections/{name}")
    );
    let end = head(&daemons[0]).await;
    // Read through the other process: the state is in the database.
    let result = read_caught_up(&daemons[1], &name, end).await;
    let (_, reducers) = json(daemons[1].get("/v1/reducers/payment").await).await;
    assert_eq!(result["version"], reducers["active_version"], "{reducers}");
    assert_eq!(result["active_version"], result["version"]);
    // The probe log created by `head` holds 1 approved.
    let mut expected = sums(&daemons[0], &logs).await;
    expected[0] += 1;
    assert_eq!(amounts(&result), expected, "{result}");
    let folded = result["events_folded"].as_u64().unwrap();
    assert_eq!(folded, 5 * 3 + 1, "stored events only");

    // Incrementally: only the new events are folded.
    let more = payments(&daemons[1], 2).await;
    let end = head(&daemons[1]).await;
    let result = read_caught_up(&daemons[0], &name, end).await;
    assert_eq!(
        result["events_folded"].as_u64().unwrap(),
        folded + 2 * 3 + 1
    );
    let mut expected = sums(&daemons[0], &logs).await;
    for (e, m) in expected.iter_mut().zip(sums(&daemons[0], &more).await) {
        *e += m;
    }
    expected[0] += 2;
    assert_eq!(amounts(&result), expected, "{result}");
    assert_eq!(
        result["projection"]["filter"],
        json!({"reducer": "payment"})
    );

    let (status, list) = json(daemons[1].get("/v1/projections").await).await;
    assert_eq!(status, 200);
    assert!(
        list.as_array()
            .unwrap()
            .iter()
            .any(|p| p["name"] == name.as_str())
    );
    let deleted = daemons[1]
        .request(Method::DELETE, &format!("/v1/projections/{name}"))
        .send()
        .await
        .unwrap();
    assert_eq!(deleted.status(), 204);
    assert_problem(
        daemons[0].get(&format!("/v1/projections/{name}")).await,
        404,
        "projection-not-found",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn payment_totals_on_postgres_in_any_process() {
    let Some(database) = postgres_database().await else {
        return;
    };
    totals_equal_the_sums_of_every_log(two_processes(&database, true).await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn payment_totals_embedded() {
    let daemon = Arc::new(TestDaemon::embedded().await);
    totals_equal_the_sums_of_every_log([daemon.clone(), daemon]).await;
}

/// A new version of the projection's reducer: the old result is served,
/// with `building`, until the new version has caught up; then the new one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_version_is_built_while_the_old_result_is_served() {
    let mut config = eventlogs_e2e::config(&sqlite_database());
    // No folding in a read beyond one page: builds go on in the background.
    config.projection_budget_ms = 0;
    let daemon = TestDaemon::start(config).await;
    assert_eq!(
        daemon
            .deploy("tally", plugin("fixture_large"))
            .await
            .status(),
        201
    );
    let logs = payments(&daemon, 3).await;
    let response = put(
        &daemon,
        "activity",
        json!({"reducer": "tally", "filter": {"reducer": "payment"}}),
    )
    .await;
    assert_eq!(response.status(), 201);
    let end = head(&daemon).await;
    let old = read_caught_up(&daemon, "activity", end).await;
    assert_eq!(old["aggregate"], json!({"count": 3 * 3 + 1}));

    // The payment reducer becomes the active version of "tally".
    let (status, deployed) = json(daemon.deploy("tally", plugin("payment")).await).await;
    assert_eq!(status, 201, "{deployed}");
    let (_, first) = json(daemon.get("/v1/projections/activity").await).await;
    assert_eq!(
        first["version"], old["version"],
        "the old result is served: {first}"
    );
    assert_eq!(first["aggregate"], old["aggregate"]);
    assert_ne!(first["active_version"], old["version"]);
    assert_eq!(
        first["building"]["version"], first["active_version"],
        "{first}"
    );

    let new = read_caught_up(&daemon, "activity", end).await;
    assert_eq!(new["version"], new["active_version"]);
    let mut expected = sums(&daemon, &logs).await;
    expected[0] += 1;
    assert_eq!(amounts(&new), expected, "{new}");

    // Rolling back serves the old version's state at once, folded on.
    let activate = daemon
        .request(Method::POST, "/v1/reducers/tally/activate")
        .json(&json!({"version": old["version"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(activate.status(), 200);
    let end = head(&daemon).await;
    let (_, back) = json(daemon.get("/v1/projections/activity").await).await;
    assert_eq!(back["version"], old["version"], "{back}");
    assert!(back.get("building").is_none(), "{back}");
    assert_eq!(back["position"].as_u64().unwrap(), end);
    assert_eq!(back["aggregate"], json!({"count": 3 * 3 + 2}));
}

/// Bad input: a clear 4xx, and nothing changes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_projection_requests_are_refused_and_change_nothing() {
    let daemon = TestDaemon::embedded().await;
    assert_eq!(
        put(&daemon, "p", json!({"reducer": "payment"}))
            .await
            .status(),
        201
    );
    for (body, status, kind) in [
        (
            json!({"reducer": "nothing-deployed"}),
            404,
            "reducer-not-found",
        ),
        (
            json!({"reducer": "payment", "filter": {"log_id": "x"}}),
            400,
            "invalid-log-id",
        ),
        (
            json!({"reducer": "payment", "filter": {"reducer": "Bad Name"}}),
            400,
            "invalid-reducer-name",
        ),
        (
            json!({"reducer": "payment", "colour": "red"}),
            422,
            "invalid-body",
        ),
    ] {
        assert_problem(put(&daemon, "p", body).await, status, kind).await;
    }
    assert_problem(
        put(&daemon, "a%2Fb", json!({"reducer": "payment"})).await,
        400,
        "invalid-projection-name",
    )
    .await;
    assert_problem(
        daemon.get("/v1/projections/nope").await,
        404,
        "projection-not-found",
    )
    .await;
    // A reducer that refuses an event stops its projection there: 422.
    payments(&daemon, 1).await;
    assert_eq!(
        daemon
            .deploy("once", plugin("fixture_single_event"))
            .await
            .status(),
        201
    );
    assert_eq!(
        put(&daemon, "refused", json!({"reducer": "once"}))
            .await
            .status(),
        201
    );
    let refused = assert_problem(
        daemon.get("/v1/projections/refused").await,
        422,
        "reducer-rejected-event",
    )
    .await;
    assert_eq!(refused["index"], 1, "{refused}");
    let deleted = daemon
        .request(Method::DELETE, "/v1/projections/refused")
        .send()
        .await
        .unwrap();
    assert_eq!(deleted.status(), 204);
    let (_, list) = json(daemon.get("/v1/projections").await).await;
    assert_eq!(list.as_array().unwrap().len(), 1);
    assert_eq!(list[0]["reducer"], "payment");
    assert_eq!(list[0]["filter"], json!({}));
}
