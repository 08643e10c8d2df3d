//! The write path over HTTP, on PostgreSQL + Redis and on the embedded
//! defaults: unconditional appends from two daemon processes all succeed,
//! `If-Match` racers have one winner per round, refused events store
//! nothing, payloads come back byte for byte, NUL is a 400, positions are
//! gap-free for a reader paging while two processes write, and a deploy
//! that would break existing logs is refused unless forced.

use std::collections::HashSet;
use std::sync::Arc;

use eventlogs_e2e::race::if_match_race;
use eventlogs_e2e::{
    TestDaemon, assert_problem, config, json, plugin, postgres_database, sqlite_database,
    two_processes, with_redis,
};
use eventlogs_host::store::postgres::PostgresStore;
use eventlogs_host::store::sqlite::SqliteStore;
use eventlogs_host::store::{EventStore, FeedFilter};
use reqwest::Method;
use serde_json::{Value, json};

async fn create_payment(daemon: &TestDaemon, events: Value) -> String {
    let (status, body) = json(
        daemon
            .post("/v1/logs", json!({"reducer": "payment", "events": events}))
            .await,
    )
    .await;
    assert_eq!(status, 201, "{body}");
    body["log_id"].as_str().unwrap().to_owned()
}

/// Every event of a log, paged.
async fn all_events(daemon: &TestDaemon, log: &str) -> Vec<Value> {
    let mut events = Vec::new();
    loop {
        let (status, page) = json(
            daemon
                .get(&format!(
                    "/v1/logs/{log}/events?from={}&limit=1000",
                    events.len()
                ))
                .await,
        )
        .await;
        assert_eq!(status, 200, "{page}");
        let page = page.as_array().unwrap().clone();
        if page.is_empty() {
            return events;
        }
        events.extend(page);
    }
}

async fn unconditional_appends_from_two_processes(daemons: &[Arc<TestDaemon>; 2]) {
    const CLIENTS: usize = 32;
    const EACH: usize = 100;
    let log = create_payment(&daemons[0], json!([{"Authorized": {"amount": 1}}])).await;
    let handles: Vec<_> = (0..CLIENTS)
        .map(|client| {
            let daemon = daemons[client % 2].clone();
            let log = log.clone();
            tokio::spawn(async move {
                for i in 0..EACH {
                    let event = json!({"Authorized": {"amount": 1, "approval_code": format!("{client}/{i}")}});
                    let (status, body) = json(
                        daemon
                            .post(&format!("/v1/logs/{log}/events"), json!({"event": event}))
                            .await,
                    )
                    .await;
                    assert_eq!(status, 200, "client {client} append {i}: {body}");
                }
            })
        })
        .collect();
    for handle in handles {
        handle.await.unwrap();
    }
    let events = all_events(&daemons[1], &log).await;
    assert_eq!(events.len(), 1 + CLIENTS * EACH);
    let indexes: Vec<u64> = events
        .iter()
        .map(|e| e["index"].as_u64().unwrap())
        .collect();
    assert_eq!(indexes, (0..=(CLIENTS * EACH) as u64).collect::<Vec<_>>());
    let codes: HashSet<&str> = events[1..]
        .iter()
        .map(|e| e["event"]["Authorized"]["approval_code"].as_str().unwrap())
        .collect();
    assert_eq!(
        codes.len(),
        CLIENTS * EACH,
        "every append stored exactly once"
    );
    let (_, aggregate) = json(daemons[0].get(&format!("/v1/logs/{log}/aggregate")).await).await;
    assert_eq!(
        aggregate["aggregate"]["amount_approved"],
        json!(1 + CLIENTS * EACH)
    );
}

async fn if_match_racers_have_one_winner_per_round(daemons: &[Arc<TestDaemon>; 2]) {
    const RACERS: usize = 32;
    const ROUNDS: u64 = 200;
    let log = create_payment(&daemons[0], json!([{"Authorized": {"amount": 1}}])).await;
    let winners = if_match_race(daemons, &log, RACERS, ROUNDS).await;
    assert!(winners.iter().all(|&w| w == 1), "{winners:?}");
    assert_eq!(all_events(&daemons[1], &log).await.len() as u64, ROUNDS + 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_processes_on_postgres() {
    let Some(database) = postgres_database().await else {
        return;
    };
    let daemons = two_processes(&database, true).await;
    unconditional_appends_from_two_processes(&daemons).await;
    if_match_racers_have_one_winner_per_round(&daemons).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_processes_on_sqlite() {
    let daemons = two_processes(&sqlite_database(), false).await;
    unconditional_appends_from_two_processes(&daemons).await;
    if_match_racers_have_one_winner_per_round(&daemons).await;
}

/// A reader paging by position while two processes write, with requests
/// that store nothing mixed in (stale If-Match, reused keys, refused
/// events), sees every stored event exactly once, in order, without gaps.
async fn a_reader_paging_by_position_misses_nothing(
    daemons: [Arc<TestDaemon>; 2],
    store: Arc<dyn EventStore>,
) {
    const WRITERS: usize = 8;
    const EACH: usize = 40;
    let logs: Vec<String> = {
        let mut logs = Vec::new();
        for _ in 0..4 {
            logs.push(
                create_payment(&daemons[0], json!([{"Authorized": {"amount": 100000}}])).await,
            );
        }
        logs
    };
    let writers: Vec<_> = (0..WRITERS)
        .map(|writer| {
            let daemon = daemons[writer % 2].clone();
            let logs = logs.clone();
            tokio::spawn(async move {
                for i in 0..EACH {
                    let log = &logs[(writer + i) % logs.len()];
                    let path = format!("/v1/logs/{log}/events");
                    let request = daemon.request(Method::POST, &path);
                    let request = match i % 5 {
                        // Stale: 412.
                        1 => request.header("if-match", "\"0\"").json(&json!({"event": {"Captured": {"amount": 1}}})),
                        // Refused by the reducer: 422.
                        2 => request.json(&json!({"events": [{"Captured": {"amount": 1}}, {"Bogus": {}}]})),
                        // A key reused with another body: 422 (after the
                        // first use stored).
                        3 => request
                            .header("idempotency-key", format!("reused-{writer}"))
                            .json(&json!({"event": {"Captured": {"amount": i}}})),
                        _ => request.json(&json!({"events": [{"Captured": {"amount": 1}}, {"Refunded": {"amount": 1}}]})),
                    };
                    let status = request.send().await.unwrap().status().as_u16();
                    assert!([200, 412, 422].contains(&status), "status {status}");
                }
            })
        })
        .collect();
    let mut seen = Vec::new();
    let mut after = 0;
    let mut idle_rounds = 0;
    loop {
        let page = store
            .feed(after, &FeedFilter::default(), 50, u64::MAX)
            .await
            .unwrap();
        after = page.through;
        match page.events.last() {
            Some(_) => {
                seen.extend(page.events.into_iter().map(|e| e.event));
                idle_rounds = 0;
            }
            None if writers.iter().all(|w| w.is_finished()) => {
                idle_rounds += 1;
                if idle_rounds > 3 {
                    break;
                }
            }
            None => tokio::time::sleep(std::time::Duration::from_millis(2)).await,
        }
    }
    for writer in writers {
        writer.await.unwrap();
    }
    let positions: Vec<u64> = seen.iter().map(|e| e.position).collect();
    assert_eq!(positions, (1..=seen.len() as u64).collect::<Vec<_>>());
    let mut total = 0;
    for log in &logs {
        let stored = all_events(&daemons[1], log).await;
        total += stored.len();
        let read: Vec<u64> = seen
            .iter()
            .filter(|e| e.log_id.to_string() == *log)
            .map(|e| e.index)
            .collect();
        assert_eq!(read, (0..stored.len() as u64).collect::<Vec<_>>());
    }
    assert_eq!(seen.len(), total, "the reader saw every stored event once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn positions_while_two_processes_write_on_postgres() {
    let Some(database) = postgres_database().await else {
        return;
    };
    let daemons = two_processes(&database, true).await;
    let store = Arc::new(PostgresStore::connect(&database).await.unwrap());
    a_reader_paging_by_position_misses_nothing(daemons, store).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn positions_while_two_processes_write_on_sqlite() {
    let database = sqlite_database();
    let daemons = two_processes(&database, false).await;
    let store = Arc::new(SqliteStore::connect(&database).await.unwrap());
    a_reader_paging_by_position_misses_nothing(daemons, store).await;
}

/// Refusals, fidelity and NUL on one daemon.
async fn writes_are_validated_and_kept_exactly(daemon: TestDaemon) {
    let log = create_payment(&daemon, json!([{"Authorized": {"amount": 100}}])).await;
    let events = format!("/v1/logs/{log}/events");
    for (body, kind, index) in [
        (
            json!({"event": {"Captured": {"amount": 999999}}}),
            "reducer-rejected-event",
            1,
        ),
        (
            json!({"event": {"Bogus": {}}}),
            "reducer-undecodable-event",
            1,
        ),
        (
            json!({"events": [{"Captured": {"amount": 1}}, {"Bogus": {}}, {"Captured": {"amount": 1}}]}),
            "reducer-undecodable-event",
            2,
        ),
    ] {
        let problem = assert_problem(daemon.post(&events, body).await, 422, kind).await;
        assert_eq!(problem["index"], json!(index), "{problem}");
    }
    let (_, meta) = json(daemon.get(&format!("/v1/logs/{log}")).await).await;
    assert_eq!(meta["last_index"], json!(0), "nothing was stored");
    let (status, aggregate) = json(daemon.get(&format!("/v1/logs/{log}/aggregate")).await).await;
    assert_eq!(
        (status, &aggregate["aggregate"]["amount_outstanding"]),
        (200, &json!(100))
    );

    // Fidelity: the events of a counter log come back byte for byte.
    let texts = [
        r#"{"add": 18446744073709551617}"#,
        "1e300",
        "0.1",
        r#""é\n\"\\""#,
        "{ \"z\" : 1,\n  \"a\" : { \"y\": [1, 2.50, -0], \"b\": null }, \"z\": 2 }",
    ];
    daemon.deploy("counter", plugin("counter")).await;
    let body = format!(
        r#"{{"reducer": "counter", "events": [{}]}}"#,
        texts.join(",")
    );
    let created = daemon
        .request(Method::POST, "/v1/logs")
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap();
    let (status, created) = json(created).await;
    assert_eq!(status, 201, "{created}");
    let counter = created["log_id"].as_str().unwrap();
    let page = daemon
        .get(&format!("/v1/logs/{counter}/events"))
        .await
        .text()
        .await
        .unwrap();
    #[derive(serde::Deserialize)]
    struct Record<'a> {
        #[serde(borrow)]
        event: &'a serde_json::value::RawValue,
    }
    let records: Vec<Record> = serde_json::from_str(&page).unwrap();
    let back: Vec<&str> = records.iter().map(|r| r.event.get()).collect();
    assert_eq!(back, texts);

    // NUL cannot be stored on any backend: 400, nothing stored.
    let nul = daemon
        .request(Method::POST, &format!("/v1/logs/{counter}/events"))
        .header("content-type", "application/json")
        .body(r#"{"events": [1, "a\u0000b"]}"#)
        .send()
        .await
        .unwrap();
    let problem = assert_problem(nul, 400, "unstorable-event").await;
    assert_eq!(problem["event"], json!(1));
    let (_, meta) = json(daemon.get(&format!("/v1/logs/{counter}")).await).await;
    assert_eq!(meta["last_index"], json!(texts.len() - 1));
}

/// A deploy whose new version refuses events of an existing log.
async fn a_breaking_deploy_is_refused_unless_forced(daemon: TestDaemon) {
    let long = create_payment(
        &daemon,
        json!([{"Authorized": {"amount": 1}}, {"Authorized": {"amount": 2}}]),
    )
    .await;
    create_payment(&daemon, json!([{"Authorized": {"amount": 1}}])).await;
    let strict = plugin("fixture_single_event");
    let (_, before) = json(daemon.get("/v1/reducers/payment").await).await;
    // A dry run answers as the deploy would, and changes nothing.
    let dry_run = |query: &'static str| {
        daemon
            .request(Method::PUT, &format!("/v1/reducers/payment?{query}"))
            .header("content-type", "application/wasm")
            .body(strict.clone())
            .send()
    };
    let problem = assert_problem(
        dry_run("dry_run=true").await.unwrap(),
        422,
        "deploy-breaks-logs",
    )
    .await;
    assert_eq!(
        problem["failing_logs"][0]["log_id"],
        json!(long),
        "{problem}"
    );
    let (status, trial) = json(dry_run("dry_run=true&force=true").await.unwrap()).await;
    assert_eq!(status, 200, "{trial}");
    assert_eq!(
        (
            &trial["dry_run"],
            &trial["created"],
            &trial["replayed_logs"]
        ),
        (&json!(true), &json!(false), &json!(2))
    );
    assert_eq!(trial["failed_logs"], json!([long]));
    let (_, after) = json(daemon.get("/v1/reducers/payment").await).await;
    assert_eq!(after, before, "a dry run stored or activated something");

    let problem = assert_problem(
        daemon.deploy("payment", strict.clone()).await,
        422,
        "deploy-breaks-logs",
    )
    .await;
    assert_eq!(problem["replayed_logs"], json!(2));
    let failing = problem["failing_logs"].as_array().unwrap();
    assert_eq!(failing.len(), 1, "{problem}");
    assert_eq!(failing[0]["log_id"], json!(long));
    assert_eq!(failing[0]["index"], json!(1));
    let (_, reducer) = json(daemon.get("/v1/reducers/payment").await).await;
    assert_eq!(reducer["versions"].as_array().unwrap().len(), 1);

    let forced = daemon
        .request(Method::PUT, "/v1/reducers/payment?force=true")
        .header("content-type", "application/wasm")
        .body(strict)
        .send()
        .await
        .unwrap();
    let (status, body) = json(forced).await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["replayed_logs"], json!(2));
    assert_eq!(body["failed_logs"], json!([long]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn validated_and_exact_on_postgres() {
    let Some(database) = postgres_database().await else {
        return;
    };
    writes_are_validated_and_kept_exactly(TestDaemon::start(with_redis(config(&database))).await)
        .await;
    let Some(database) = postgres_database().await else {
        return;
    };
    a_breaking_deploy_is_refused_unless_forced(
        TestDaemon::start(with_redis(config(&database))).await,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn validated_and_exact_embedded() {
    writes_are_validated_and_kept_exactly(TestDaemon::embedded().await).await;
    a_breaking_deploy_is_refused_unless_forced(TestDaemon::embedded().await).await;
}
