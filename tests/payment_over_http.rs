//! The seed's payment scenario over HTTP, on PostgreSQL + Redis and on the
//! embedded defaults.

use eventlogs_e2e::{TestDaemon, json};
use reqwest::Method;
use serde_json::json;

/// The scenario on `daemon`; the daemon's `/metrics` text at the end.
async fn payment_scenario(daemon: TestDaemon) -> String {
    // Create, with an idempotency key; a retry replays.
    let create = json!({
        "reducer": "payment",
        "event": {"Requested": {"request": {"amount_requested": 10000}}}
    });
    let first = daemon
        .request(Method::POST, "/v1/logs")
        .header("idempotency-key", "create-payment-1")
        .json(&create)
        .send()
        .await
        .unwrap();
    assert_eq!(first.status(), 201);
    let location = first.headers()["location"].to_str().unwrap().to_owned();
    let (_, created) = json(first).await;
    let log_id = created["log_id"].as_str().unwrap().to_owned();
    assert_eq!(location, format!("/v1/logs/{log_id}"));
    assert_eq!(created["replayed"], false);
    assert_eq!(
        (&created["first_position"], &created["last_position"]),
        (&json!(1), &json!(1))
    );
    let retry = daemon
        .request(Method::POST, "/v1/logs")
        .header("idempotency-key", "create-payment-1")
        .json(&create)
        .send()
        .await
        .unwrap();
    assert_eq!(retry.headers()["idempotent-replayed"], "true");
    let (status, replayed) = json(retry).await;
    assert_eq!(
        (status, &replayed["log_id"], &replayed["replayed"]),
        (201, &created["log_id"], &json!(true))
    );

    let events = format!("/v1/logs/{log_id}/events");
    let append = |body, if_match: &str| {
        daemon
            .request(Method::POST, &events)
            .header("if-match", if_match)
            .json(&body)
            .send()
    };
    let authorized = append(
        json!({"event": {"Authorized": {"amount": 10000, "approval_code": "xyz123"}}}),
        "\"0\"",
    )
    .await
    .unwrap();
    assert_eq!(authorized.status(), 200);

    // The aggregate, whose ETag is the next append's If-Match.
    let aggregate = format!("/v1/logs/{log_id}/aggregate");
    let response = daemon.get(&aggregate).await;
    let etag = response.headers()["etag"].to_str().unwrap().to_owned();
    let (status, reduced) = json(response).await;
    assert_eq!((status, etag.as_str()), (200, "\"1\""));
    assert_eq!(reduced["aggregate"]["amount_outstanding"], 10000);
    // The append wrote its aggregate through to the cache: nothing to fold.
    assert_eq!(
        (
            reduced["from_cache"].clone(),
            reduced["events_folded"].clone()
        ),
        (json!(true), json!(0))
    );

    let captured = append(
        json!({"event": {"Captured": {"amount": 4000, "statement_descriptor": "Widgets, Inc"}}}),
        &etag,
    )
    .await
    .unwrap();
    assert_eq!(captured.status(), 200);
    // A second writer with the same If-Match loses.
    let late = append(json!({"event": {"Captured": {"amount": 4000}}}), &etag)
        .await
        .unwrap();
    assert_eq!(late.status(), 412);
    let (_, problem) = json(late).await;
    assert_eq!(problem["current_index"], 2);
    let (_, second) = json(daemon.get(&aggregate).await).await;
    assert_eq!(
        (&second["from_cache"], &second["events_folded"]),
        (&json!(true), &json!(0)),
        "{second}"
    );
    assert_eq!(second["aggregate"]["amount_captured"], 4000);
    assert_eq!(second["through_index"], 2);

    // Refunding more than is outstanding is refused; nothing is stored.
    let too_much = daemon
        .post(&events, json!({"event": {"Refunded": {"amount": 7000}}}))
        .await;
    assert_eq!(too_much.status(), 422);
    let (_, problem) = json(too_much).await;
    assert_eq!(
        (&problem["type"], &problem["index"]),
        (
            &json!("urn:eventlogs:problem:reducer-rejected-event"),
            &json!(3)
        )
    );

    // Without If-Match: appended at the end.
    let refunded = daemon
        .post(
            &events,
            json!({"event": {"Refunded": {"amount": 6000, "reference_number": "abc789"}}}),
        )
        .await;
    assert_eq!(refunded.status(), 200);
    let (_, last) = json(daemon.get(&aggregate).await).await;
    assert_eq!(last["aggregate"]["amount_outstanding"], 0);
    assert_eq!(last["aggregate"]["amount_refunded"], 6000);
    // A settled payment declines caching: resumed from index 2, one folded.
    assert_eq!(
        (
            &last["from_cache"],
            &last["events_folded"],
            &last["through_index"]
        ),
        (&json!(true), &json!(1), &json!(3))
    );

    // Events, one page of 4, then paged by 3 with a Link to the rest.
    let (status, page) = json(daemon.get(&format!("{events}?limit=4")).await).await;
    assert_eq!(status, 200);
    assert_eq!(page.as_array().unwrap().len(), 4);
    assert_eq!(page[1]["event"]["Authorized"]["approval_code"], "xyz123");
    let positions: Vec<u64> = (0..4)
        .map(|i| page[i]["position"].as_u64().unwrap())
        .collect();
    assert_eq!(positions, [1, 2, 3, 4]);
    let paged = daemon.get(&format!("{events}?limit=3")).await;
    let link = paged.headers()["link"].to_str().unwrap().to_owned();
    assert_eq!(link, format!("<{events}?from=3&limit=3>; rel=\"next\""));
    let rest = daemon.get(&format!("{events}?from=3&limit=3")).await;
    assert!(rest.headers().get("link").is_none());

    let (status, metadata) = json(daemon.get(&format!("/v1/logs/{log_id}")).await).await;
    assert_eq!(
        (
            status,
            metadata["last_index"].clone(),
            metadata["reducer"].clone()
        ),
        (200, json!(3), json!("payment"))
    );
    let metrics = daemon.get("/metrics").await.text().await.unwrap();
    for expected in [
        "eventlogs_reductions_total",
        "eventlogs_cache_hits_total",
        "eventlogs_folded_events_total",
        "eventlogs_write_batch_size_count",
    ] {
        assert!(metrics.contains(expected), "no {expected} in\n{metrics}");
    }
    daemon.stop().await;
    metrics
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn payment_scenario_on_postgres_and_redis() {
    if let Some(daemon) = TestDaemon::on_postgres_and_redis().await {
        let metrics = payment_scenario(daemon).await;
        // Every validated append wrote its aggregate through to Redis, in
        // batches whose sizes the histogram records.
        assert!(
            metrics.contains("eventlogs_cache_put_batch_size_count"),
            "no put batch sizes in\n{metrics}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn payment_scenario_embedded() {
    let metrics = payment_scenario(TestDaemon::embedded().await).await;
    assert!(!metrics.contains("eventlogs_cache_put_batch_size"));
}
