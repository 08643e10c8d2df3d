//! Every error kind's status and problem type, and bad input that never
//! yields a 5xx and loses nothing.

use eventlogs_e2e::{
    TestDaemon, assert_problem, config, json, plugin, plugin_path, postgres_database,
    sqlite_database,
};
use reqwest::Method;
use serde_json::json;

async fn new_log(daemon: &TestDaemon) -> String {
    let (status, body) = json(
        daemon
            .post(
                "/v1/logs",
                json!({"reducer": "payment", "events": [{"Authorized": {"amount": 100}}]}),
            )
            .await,
    )
    .await;
    assert_eq!(status, 201, "{body}");
    body["log_id"].as_str().unwrap().to_owned()
}

async fn error_kinds(daemon: TestDaemon) {
    let log = new_log(&daemon).await;
    let events = format!("/v1/logs/{log}/events");

    // A stale If-Match: 412 with the current index; nothing stored.
    let stale = daemon
        .request(Method::POST, &events)
        .header("if-match", "\"5\"")
        .json(&json!({"events": [{"Captured": {"amount": 1}}, {"Captured": {"amount": 2}}]}))
        .send()
        .await
        .unwrap();
    let problem = assert_problem(stale, 412, "concurrent-append").await;
    assert_eq!(problem["current_index"], 0);

    // The same key twice: the original result, marked; another body: 422.
    let keyed = |body: serde_json::Value| {
        daemon
            .request(Method::POST, &events)
            .header("idempotency-key", "k-1")
            .header("if-match", "\"0\"")
            .json(&body)
            .send()
    };
    let (status, original) = json(
        keyed(json!({"event": {"Captured": {"amount": 10}}}))
            .await
            .unwrap(),
    )
    .await;
    assert_eq!((status, original["last_index"].clone()), (200, json!(1)));
    let (status, replay) = json(
        keyed(json!({"event": {"Captured": {"amount": 10}}}))
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(
        (
            status,
            replay["replayed"].clone(),
            replay["last_index"].clone()
        ),
        (200, json!(true), json!(1))
    );
    assert_problem(
        keyed(json!({"event": {"Captured": {"amount": 11}}}))
            .await
            .unwrap(),
        422,
        "idempotency-key-reused",
    )
    .await;

    // Unknown log, reducer, version.
    let ghost = uuid::Uuid::now_v7();
    assert_problem(
        daemon.get(&format!("/v1/logs/{ghost}")).await,
        404,
        "log-not-found",
    )
    .await;
    assert_problem(
        daemon.get(&format!("/v1/logs/{ghost}/aggregate")).await,
        404,
        "log-not-found",
    )
    .await;
    assert_problem(
        daemon
            .post(&format!("/v1/logs/{ghost}/events"), json!({"event": {}}))
            .await,
        404,
        "log-not-found",
    )
    .await;
    assert_problem(
        daemon
            .post("/v1/logs", json!({"reducer": "nonexistent", "event": {}}))
            .await,
        404,
        "reducer-not-found",
    )
    .await;
    assert_problem(
        daemon.get("/v1/reducers/nonexistent").await,
        404,
        "reducer-not-found",
    )
    .await;
    assert_problem(
        daemon
            .get(&format!(
                "/v1/logs/{log}/aggregate?version={}",
                "0".repeat(64)
            ))
            .await,
        404,
        "reducer-version-not-found",
    )
    .await;
    // A log id that is taken.
    assert_problem(
        daemon
            .post(
                "/v1/logs",
                json!({"reducer": "payment", "log_id": log, "event": {"Authorized": {"amount": 1}}}),
            )
            .await,
        409,
        "log-exists",
    )
    .await;

    // Reducer failures, by kind: appends the reducer refuses store nothing
    // and leave the log readable.
    let over_capture = new_log(&daemon).await;
    let rejected = assert_problem(
        daemon
            .post(
                &format!("/v1/logs/{over_capture}/events"),
                json!({"event": {"Captured": {"amount": 1000}}}),
            )
            .await,
        422,
        "reducer-rejected-event",
    )
    .await;
    assert_eq!(
        (rejected["failure"].clone(), rejected["index"].clone()),
        (json!("rejected-event"), json!(1))
    );
    let (status, _) = json(
        daemon
            .get(&format!("/v1/logs/{over_capture}/aggregate"))
            .await,
    )
    .await;
    assert_eq!(status, 200);
    let garbage = new_log(&daemon).await;
    assert_problem(
        daemon
            .post(
                &format!("/v1/logs/{garbage}/events"),
                json!({"event": {"NoSuchEvent": 1}}),
            )
            .await,
        422,
        "reducer-undecodable-event",
    )
    .await;
    let (_, meta) = json(daemon.get(&format!("/v1/logs/{garbage}")).await).await;
    assert_eq!(meta["last_index"], json!(0));
    assert_eq!(
        daemon
            .deploy("grenade", plugin("fixture_panicking"))
            .await
            .status(),
        201
    );
    let (_, log) = json(
        daemon
            .post("/v1/logs", json!({"reducer": "grenade", "event": {"n": 1}}))
            .await,
    )
    .await;
    let panicked = daemon
        .get(&format!(
            "/v1/logs/{}/aggregate",
            log["log_id"].as_str().unwrap()
        ))
        .await;
    let status = panicked.status().as_u16();
    let (_, body) = json(panicked).await;
    assert_eq!(status, 422, "{body}");
    assert!(
        body["type"]
            .as_str()
            .unwrap()
            .starts_with("urn:eventlogs:problem:reducer-"),
        "{body}"
    );
    assert!(body["reducer_version"].is_string());

    // What happened is in the metrics.
    let metrics = daemon.get("/metrics").await.text().await.unwrap();
    for expected in [
        r#"http_requests_total{route="/v1/logs/{id}/events",method="POST",status="412"}"#,
        "http_request_duration_seconds_bucket",
        "eventlogs_appended_events_total",
        "eventlogs_idempotent_replays_total",
        "eventlogs_cache_misses_total",
        r#"eventlogs_reducer_failures_total{kind="rejected-event"} 1"#,
        r#"eventlogs_deploys_total{outcome="ok"} 1"#,
    ] {
        assert!(metrics.contains(expected), "no {expected} in\n{metrics}");
    }
    daemon.stop().await;
}

/// A daemon in a process of its own, so the exact counts asserted in its
/// `/metrics` are its own whatever runs the tests (the metrics recorder is
/// process-wide, and `cargo test` runs a file's tests in one process).
async fn own_process(database: &str, redis: bool) -> TestDaemon {
    let payment = format!("payment={}", plugin_path("payment").display());
    let prefix = format!("eventlogs-e2e-{}:", uuid::Uuid::now_v7());
    let mut args = vec!["--database-url", database, "--deploy", &payment];
    if redis {
        args.extend([
            "--redis-url",
            "redis://127.0.0.1:6379/",
            "--redis-prefix",
            &prefix,
        ]);
    }
    TestDaemon::spawn(&args).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn error_kinds_on_postgres_and_redis() {
    if let Some(database) = postgres_database().await {
        error_kinds(own_process(&database, true).await).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn error_kinds_embedded() {
    error_kinds(own_process(&sqlite_database(), false).await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_a_4xx_and_loses_nothing() {
    let mut settings = config(&sqlite_database());
    settings.body_limit_bytes = 4096;
    let daemon = TestDaemon::start(settings).await;
    let log = new_log(&daemon).await;
    let events = format!("/v1/logs/{log}/events");

    let raw = |path: &str, content_type: &str, body: Vec<u8>| {
        daemon
            .request(Method::POST, path)
            .header("content-type", content_type)
            .body(body)
            .send()
    };
    assert_problem(
        raw(&events, "application/json", b"{\"event\": ".to_vec())
            .await
            .unwrap(),
        400,
        "malformed-json",
    )
    .await;
    assert_problem(
        raw(&events, "text/plain", b"{\"event\": {}}".to_vec())
            .await
            .unwrap(),
        415,
        "unsupported-media-type",
    )
    .await;
    assert_problem(
        raw(&events, "application/json", b"{\"evnt\": {}}".to_vec())
            .await
            .unwrap(),
        422,
        "invalid-body",
    )
    .await;
    assert_problem(
        raw(&events, "application/json", b"{\"events\": []}".to_vec())
            .await
            .unwrap(),
        400,
        "no-events",
    )
    .await;

    // A body exactly at the limit is accepted; one byte over is 413.
    let at_limit = |size: usize| {
        let prefix = b"{\"event\": {\"Authorized\": {\"amount\": 1, \"approval_code\": \"";
        let suffix = b"\"}}}";
        let mut body = prefix.to_vec();
        body.resize(size - suffix.len(), b'x');
        body.extend_from_slice(suffix);
        body
    };
    let (status, _) = json(
        raw(&events, "application/json", at_limit(4096))
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 200);
    assert_problem(
        raw(&events, "application/json", at_limit(4097))
            .await
            .unwrap(),
        413,
        "payload-too-large",
    )
    .await;

    assert_problem(
        daemon.get("/v1/logs/not-a-uuid").await,
        400,
        "invalid-log-id",
    )
    .await;
    assert_problem(
        daemon.get("/v1/logs/not-a-uuid/aggregate").await,
        400,
        "invalid-log-id",
    )
    .await;
    for bad in [
        "limit=-1",
        "limit=0",
        "limit=99999999999",
        "limit=1001",
        "from=-3",
        "from=abc",
    ] {
        let response = daemon.get(&format!("{events}?{bad}")).await;
        let (status, body) = json(response).await;
        assert_eq!(status, 400, "{bad}: {body}");
    }
    assert_problem(
        daemon
            .get(&format!("/v1/logs/{log}/aggregate?version=xyz"))
            .await,
        400,
        "invalid-version",
    )
    .await;
    assert_problem(
        daemon
            .request(Method::POST, &events)
            .header("if-match", "seven")
            .json(&json!({"event": {}}))
            .send()
            .await
            .unwrap(),
        400,
        "invalid-if-match",
    )
    .await;

    // Invalid wasm: 422, and the active version still serves.
    assert_problem(
        daemon.deploy("payment", b"not wasm at all".to_vec()).await,
        422,
        "invalid-reducer",
    )
    .await;
    assert_problem(
        daemon
            .request(Method::PUT, "/v1/reducers/payment")
            .header("content-type", "application/octet-stream")
            .body(plugin("payment"))
            .send()
            .await
            .unwrap(),
        415,
        "unsupported-media-type",
    )
    .await;
    assert_problem(
        daemon.deploy("Bad Name", plugin("payment")).await,
        400,
        "invalid-reducer-name",
    )
    .await;

    // Nothing was lost or added by any of that: the create, the event
    // exactly at the limit, and the aggregate still reduces.
    let (_, page) = json(daemon.get(&format!("{events}?limit=100")).await).await;
    assert_eq!(page.as_array().unwrap().len(), 2);
    let (status, aggregate) = json(daemon.get(&format!("/v1/logs/{log}/aggregate")).await).await;
    assert_eq!(
        (status, aggregate["aggregate"]["amount_approved"].clone()),
        (200, json!(101))
    );
    assert_problem(daemon.get("/v1/no-such-route").await, 404, "not-found").await;
    daemon.stop().await;
}
