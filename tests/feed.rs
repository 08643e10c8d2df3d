//! The feed over HTTP while two daemon processes write (PostgreSQL + Redis)
//! or several tasks write through one (the embedded defaults), with
//! conflicts, refused events, reused keys and replays mixed in at random
//! (the seed is printed; `EVENTLOGS_TEST_SEED` replays one): a reader
//! following `/v1/feed/stream`, cut off in the middle and resumed with
//! `Last-Event-ID`, and a reader paging `/v1/feed` both end with every
//! stored event exactly once, in position order. Subscriptions resume from
//! their checkpoint in any process; bad input is refused and changes
//! nothing.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use eventlogs_e2e::sse::{SseItem, SseStream};
use eventlogs_e2e::workload::{mixed_writers, seed};
use eventlogs_e2e::{
    TestDaemon, assert_problem, json, postgres_database, sqlite_database, two_processes,
};
use eventlogs_host::store::EventStore;
use eventlogs_host::store::postgres::PostgresStore;
use eventlogs_host::store::sqlite::SqliteStore;
use reqwest::Method;
use serde_json::{Value, json};

/// An event as a reader saw it: position, log, index, reducer, payload.
type Seen = (u64, String, u64, String, Value);

fn seen(record: &Value) -> Seen {
    (
        record["position"].as_u64().unwrap(),
        record["log_id"].as_str().unwrap().to_owned(),
        record["index"].as_u64().unwrap(),
        record["reducer"].as_str().unwrap().to_owned(),
        record["event"].clone(),
    )
}

async fn create_payments(daemon: &TestDaemon, count: usize) -> Vec<String> {
    let mut logs = Vec::new();
    for _ in 0..count {
        logs.push(
            daemon
                .create_log(
                    "payment",
                    vec![json!({"Authorized": {"amount": 1_000_000}})],
                )
                .await,
        );
    }
    logs
}

/// Follows the stream until it has seen position `head` (once the writers
/// are done, `head` is sent), cutting the connection after `cut_after`
/// events and resuming with the last id.
async fn follow_stream(
    daemon: Arc<TestDaemon>,
    cut_after: usize,
    head: tokio::sync::watch::Receiver<Option<u64>>,
) -> Vec<Seen> {
    let mut stream = SseStream::open(&daemon, "/v1/feed/stream?after=0", None).await;
    let mut events: Vec<Seen> = Vec::new();
    let mut cut = false;
    loop {
        if let (Some(head), Some(last)) = (*head.borrow(), events.last())
            && last.0 >= head
        {
            assert!(
                cut,
                "the stream was cut after {cut_after} events and resumed"
            );
            return events;
        }
        if !cut && events.len() >= cut_after {
            // The client goes away mid-stream and comes back.
            cut = true;
            drop(stream);
            let last = events.last().map(|e| e.0.to_string());
            stream = SseStream::open(&daemon, "/v1/feed/stream?after=0", last.as_deref()).await;
        }
        let item = tokio::time::timeout(Duration::from_secs(60), stream.next())
            .await
            .expect("the stream went quiet for a minute");
        match item {
            Some(SseItem::Event { id, data }) => {
                let record: Value = serde_json::from_str(&data).unwrap();
                let event = seen(&record);
                assert_eq!(id, Some(event.0.to_string()), "the id is the position");
                events.push(event);
            }
            Some(SseItem::Comment(_)) => {}
            None => panic!("the stream ended after {} events", events.len()),
        }
    }
}

/// Pages `/v1/feed` until it has read position `head`, following
/// `Link: rel="next"` and polling when caught up.
async fn page_feed(
    daemon: Arc<TestDaemon>,
    head: tokio::sync::watch::Receiver<Option<u64>>,
) -> Vec<Seen> {
    let mut events: Vec<Seen> = Vec::new();
    let mut path = "/v1/feed?after=0&limit=37".to_owned();
    loop {
        let response = daemon.get(&path).await;
        let link = response
            .headers()
            .get("link")
            .map(|v| v.to_str().unwrap().to_owned());
        let (status, page) = json(response).await;
        assert_eq!(status, 200, "{page}");
        events.extend(page.as_array().unwrap().iter().map(seen));
        if let (Some(head), Some(last)) = (*head.borrow(), events.last())
            && last.0 >= head
        {
            return events;
        }
        path = match link {
            Some(link) => {
                let next = link.strip_prefix('<').unwrap().split_once('>').unwrap();
                assert_eq!(next.1, "; rel=\"next\"");
                next.0.to_owned()
            }
            None => {
                tokio::time::sleep(Duration::from_millis(5)).await;
                let after = events.last().map_or(0, |e| e.0);
                format!("/v1/feed?after={after}&limit=37")
            }
        };
    }
}

/// Both readers against the stored events.
async fn readers_see_every_event_once_in_order(
    daemons: [Arc<TestDaemon>; 2],
    writers: usize,
    store: Arc<dyn EventStore>,
) {
    let seed = seed();
    let logs = create_payments(&daemons[0], 4).await;
    let (head_tx, head) = tokio::sync::watch::channel(None);
    // Cut somewhere in the first half of what will be written.
    let cut_after = 10 + (seed % (writers as u64 * 10)) as usize;
    let streamed = tokio::spawn(follow_stream(daemons[0].clone(), cut_after, head.clone()));
    let paged = tokio::spawn(page_feed(daemons[1].clone(), head));
    for writer in mixed_writers(&daemons, &logs, writers, 30, seed) {
        writer.await.unwrap();
    }
    let last = store.feed_head().await.unwrap();
    head_tx.send_replace(Some(last));
    let streamed = tokio::time::timeout(Duration::from_secs(120), streamed)
        .await
        .expect("the stream reader finishes")
        .unwrap();
    let paged = paged.await.unwrap();

    // What is stored, log by log, from the logs' own pages.
    let mut stored: BTreeMap<String, Vec<Value>> = BTreeMap::new();
    for log in &logs {
        let (status, events) = json(
            daemons[1]
                .get(&format!("/v1/logs/{log}/events?limit=1000"))
                .await,
        )
        .await;
        assert_eq!(status, 200);
        let payloads = events
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["event"].clone())
            .collect();
        stored.insert(log.clone(), payloads);
    }
    let total: usize = stored.values().map(Vec::len).sum();
    assert_eq!(last as usize, total, "positions are gap-free");
    for (name, read) in [("stream", &streamed), ("pages", &paged)] {
        let positions: Vec<u64> = read.iter().map(|e| e.0).collect();
        assert_eq!(
            positions,
            (1..=last).collect::<Vec<_>>(),
            "{name}: every position once, in order"
        );
        let mut per_log: BTreeMap<String, Vec<Value>> = BTreeMap::new();
        for (_, log, index, reducer, event) in read {
            assert_eq!(reducer, "payment");
            let events = per_log.entry(log.clone()).or_default();
            assert_eq!(*index as usize, events.len(), "{name}: indexes in order");
            events.push(event.clone());
        }
        assert_eq!(per_log, stored, "{name}: exactly the stored events");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readers_while_two_processes_write_on_postgres() {
    let Some(database) = postgres_database().await else {
        return;
    };
    let daemons = two_processes(&database, true).await;
    let store = Arc::new(PostgresStore::connect(&database).await.unwrap());
    readers_see_every_event_once_in_order(daemons, 8, store).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readers_while_tasks_write_on_sqlite() {
    let database = sqlite_database();
    // One daemon written through by several tasks; the readers use it too.
    let daemon = Arc::new(TestDaemon::start(eventlogs_e2e::config(&database)).await);
    let store = Arc::new(SqliteStore::connect(&database).await.unwrap());
    readers_see_every_event_once_in_order([daemon.clone(), daemon], 6, store).await;
}

/// A consumer that handles events and checkpoints, killed before it
/// acknowledged everything, resumes from its checkpoint (here through the
/// other process: checkpoints live in the database).
async fn a_restarted_consumer_resumes_from_its_checkpoint(daemons: [Arc<TestDaemon>; 2]) {
    let name = format!("orders-{}", uuid::Uuid::now_v7());
    let logs = create_payments(&daemons[0], 2).await;
    let other = daemons[0]
        .create_log("payment", vec![json!({"Authorized": {"amount": 5}})])
        .await;
    let put = |daemon: &TestDaemon, body: Value| {
        daemon
            .request(Method::PUT, &format!("/v1/subscriptions/{name}"))
            .json(&body)
            .send()
    };
    let response = put(&daemons[0], json!({"filter": {"log_id": logs[0]}}))
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    assert_eq!(
        response.headers()["location"],
        format!("/v1/subscriptions/{name}")
    );
    let (_, created) = json(response).await;
    assert_eq!(created["position"], 0);
    // PUT again: the same subscription, its filter replaced.
    let (status, _) = json(
        put(&daemons[0], json!({"filter": {"reducer": "payment"}}))
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 200);
    for log in &logs {
        for amount in 1..=3 {
            let (status, body) = json(
                daemons[0]
                    .post(
                        &format!("/v1/logs/{log}/events"),
                        json!({"event": {"Captured": {"amount": amount}}}),
                    )
                    .await,
            )
            .await;
            assert_eq!(status, 200, "{body}");
        }
    }
    let events_path = format!("/v1/subscriptions/{name}/events?limit=5");
    let (status, first) = json(daemons[0].get(&events_path).await).await;
    assert_eq!(status, 200, "{first}");
    let batch = first["events"].as_array().unwrap();
    assert_eq!(batch.len(), 5);
    // The consumer handles two events, acknowledges them, and dies.
    let acknowledged = batch[1]["position"].as_u64().unwrap();
    let checkpoint = format!("/v1/subscriptions/{name}/checkpoint");
    let (status, moved) = json(
        daemons[0]
            .post(&checkpoint, json!({"position": acknowledged}))
            .await,
    )
    .await;
    assert_eq!(status, 200, "{moved}");
    assert_eq!(moved["position"], acknowledged);
    // Restarted against the other process: it resumes right after them.
    let (_, resumed) = json(daemons[1].get(&events_path).await).await;
    assert_eq!(resumed["subscription"]["position"], acknowledged);
    let again = resumed["events"].as_array().unwrap();
    assert_eq!(again[0], batch[2], "delivery resumes after the checkpoint");
    // Reading to the end and acknowledging `through` leaves nothing.
    let (_, rest) = json(
        daemons[1]
            .get(&format!("/v1/subscriptions/{name}/events?limit=1000"))
            .await,
    )
    .await;
    let positions: Vec<u64> = rest["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["position"].as_u64().unwrap())
        .collect();
    assert!(positions.iter().all(|p| *p > acknowledged));
    assert!(
        rest["events"]
            .as_array()
            .unwrap()
            .iter()
            .all(|e| e["reducer"] == "payment")
    );
    assert!(
        rest["events"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["log_id"] == other.as_str())
    );
    let through = rest["through"].as_u64().unwrap();
    let (status, _) = json(
        daemons[1]
            .post(&checkpoint, json!({"position": through}))
            .await,
    )
    .await;
    assert_eq!(status, 200);
    let (_, done) = json(daemons[0].get(&events_path).await).await;
    assert_eq!(done["events"], json!([]));
    // Moving the checkpoint back replays.
    let (status, _) = json(daemons[0].post(&checkpoint, json!({"position": 0})).await).await;
    assert_eq!(status, 200);
    let (_, replayed) = json(daemons[0].get(&events_path).await).await;
    assert_eq!(replayed["events"][0]["index"], 0);
    let (status, _) = json(
        daemons[0]
            .post(&checkpoint, json!({"position": through}))
            .await,
    )
    .await;
    assert_eq!(status, 200);
    let (status, list) = json(daemons[1].get("/v1/subscriptions").await).await;
    assert_eq!(status, 200);
    assert!(
        list.as_array()
            .unwrap()
            .iter()
            .any(|s| s["name"] == name.as_str() && s["position"] == through)
    );
    let deleted = daemons[1]
        .request(Method::DELETE, &format!("/v1/subscriptions/{name}"))
        .send()
        .await
        .unwrap();
    assert_eq!(deleted.status(), 204);
    assert_problem(
        daemons[0].get(&events_path).await,
        404,
        "subscription-not-found",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscriptions_resume_on_postgres_in_any_process() {
    let Some(database) = postgres_database().await else {
        return;
    };
    a_restarted_consumer_resumes_from_its_checkpoint(two_processes(&database, true).await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscriptions_resume_embedded() {
    let daemon = Arc::new(TestDaemon::embedded().await);
    a_restarted_consumer_resumes_from_its_checkpoint([daemon.clone(), daemon]).await;
}

/// Bad input: a clear 4xx, and nothing changes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_feed_and_subscription_requests_are_refused_and_change_nothing() {
    let daemon = TestDaemon::embedded().await;
    daemon
        .create_log("payment", vec![json!({"Authorized": {"amount": 5}})])
        .await;
    for (path, kind) in [
        ("/v1/feed?limit=0", "invalid-limit"),
        ("/v1/feed?limit=100000000", "invalid-limit"),
        ("/v1/feed?after=-1", "invalid-query"),
        ("/v1/feed?after=9223372036854775808", "invalid-after"),
        ("/v1/feed?log_id=nope", "invalid-log-id"),
        ("/v1/feed?reducer=Not%20A%20Name", "invalid-reducer-name"),
        ("/v1/feed/stream?log_id=nope", "invalid-log-id"),
        ("/v1/subscriptions/a%2Fb", "invalid-subscription-name"),
    ] {
        assert_problem(daemon.get(path).await, 400, kind).await;
    }
    let response = daemon
        .request(Method::GET, "/v1/feed/stream")
        .header("last-event-id", "yesterday")
        .send()
        .await
        .unwrap();
    assert_problem(response, 400, "invalid-last-event-id").await;

    let name = "bad-input";
    let put = |body: Value| {
        daemon
            .request(Method::PUT, &format!("/v1/subscriptions/{name}"))
            .json(&body)
            .send()
    };
    let (status, _) = json(
        put(json!({"filter": {"reducer": "payment"}}))
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 201);
    for (body, kind) in [
        (
            json!({"filter": {"reducer": "Payment!"}}),
            "invalid-reducer-name",
        ),
        (json!({"filter": {"log_id": "nope"}}), "invalid-log-id"),
    ] {
        assert_problem(put(body).await.unwrap(), 400, kind).await;
    }
    assert_problem(
        put(json!({"filter": {"color": "red"}})).await.unwrap(),
        422,
        "invalid-body",
    )
    .await;
    let checkpoint = format!("/v1/subscriptions/{name}/checkpoint");
    assert_problem(
        daemon.post(&checkpoint, json!({"position": 1000})).await,
        422,
        "checkpoint-beyond-feed",
    )
    .await;
    assert_problem(
        daemon.post(&checkpoint, json!({"position": -1})).await,
        422,
        "invalid-body",
    )
    .await;
    assert_problem(
        daemon
            .post(
                "/v1/subscriptions/nobody/checkpoint",
                json!({"position": 0}),
            )
            .await,
        404,
        "subscription-not-found",
    )
    .await;
    // Unchanged by all of that.
    let (_, unchanged) = json(daemon.get(&format!("/v1/subscriptions/{name}")).await).await;
    assert_eq!(unchanged["filter"], json!({"reducer": "payment"}));
    assert_eq!(unchanged["position"], 0);
}

/// An idle stream gets heartbeats, and a stopping daemon ends its streams
/// instead of waiting for them until the shutdown deadline.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_streams_get_heartbeats_and_end_at_shutdown() {
    let database = sqlite_database();
    let mut config = eventlogs_e2e::config(&database);
    config.feed_heartbeat_secs = 1;
    let daemon = TestDaemon::start(config).await;
    let mut stream = SseStream::open(&daemon, "/v1/feed/stream", None).await;
    let first = tokio::time::timeout(Duration::from_secs(5), stream.next())
        .await
        .expect("a heartbeat within 5 s");
    assert!(matches!(first, Some(SseItem::Comment(_))), "{first:?}");
    let metrics = daemon.get("/metrics").await.text().await.unwrap();
    assert!(
        metrics.lines().any(|l| l == "eventlogs_feed_followers 1"),
        "{metrics}"
    );
    // An event arrives at once, and its delivery time is measured.
    daemon
        .create_log("payment", vec![json!({"Authorized": {"amount": 1}})])
        .await;
    let (id, _) = tokio::time::timeout(Duration::from_secs(5), stream.next_event())
        .await
        .expect("the event within 5 s")
        .expect("the stream is open");
    assert_eq!(id.as_deref(), Some("1"));
    let metrics = daemon.get("/metrics").await.text().await.unwrap();
    assert!(
        metrics.contains("eventlogs_feed_delivery_seconds"),
        "{metrics}"
    );
    let stopped = tokio::time::Instant::now();
    daemon.stop().await;
    assert!(
        stopped.elapsed() < Duration::from_secs(5),
        "shutdown waited {:?}",
        stopped.elapsed()
    );
    let rest = tokio::time::timeout(Duration::from_secs(5), async {
        while stream.next().await.is_some() {}
    })
    .await;
    assert!(rest.is_ok(), "the stream ended");
}

/// Filters over HTTP, and `Link: rel="next"` carrying them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pages_filter_and_their_links_keep_the_filter() {
    let daemon = TestDaemon::embedded().await;
    let counter = eventlogs_e2e::plugin("counter");
    assert_eq!(daemon.deploy("counter", counter).await.status(), 201);
    let a = daemon
        .create_log("payment", vec![json!({"Authorized": {"amount": 5}})])
        .await;
    let b = daemon.create_log("counter", vec![json!({"add": 1})]).await;
    let c = daemon
        .create_log("payment", vec![json!({"Authorized": {"amount": 7}})])
        .await;
    daemon
        .post(
            &format!("/v1/logs/{b}/events"),
            json!({"event": {"add": 2}}),
        )
        .await;
    let response = daemon.get("/v1/feed?reducer=payment&limit=1").await;
    let link = response.headers()["link"].to_str().unwrap().to_owned();
    let (_, first) = json(response).await;
    assert_eq!(first.as_array().unwrap().len(), 1);
    assert_eq!(first[0]["log_id"], a.as_str());
    assert_eq!(first[0]["reducer"], "payment");
    assert_eq!(
        link,
        "</v1/feed?after=1&limit=1&reducer=payment>; rel=\"next\""
    );
    let next = link
        .strip_prefix('<')
        .unwrap()
        .split_once('>')
        .unwrap()
        .0
        .to_owned();
    let response = daemon.get(&next).await;
    let link = response.headers()["link"].to_str().unwrap().to_owned();
    assert_eq!(
        link,
        "</v1/feed?after=3&limit=1&reducer=payment>; rel=\"next\""
    );
    let (_, second) = json(response).await;
    assert_eq!(second.as_array().unwrap().len(), 1);
    assert_eq!(second[0]["log_id"], c.as_str());
    // Nothing more matches: an empty page that looked through the end,
    // with nothing to link to.
    let next = link
        .strip_prefix('<')
        .unwrap()
        .split_once('>')
        .unwrap()
        .0
        .to_owned();
    let response = daemon.get(&next).await;
    assert!(response.headers().get("link").is_none());
    assert_eq!(json(response).await.1, json!([]));
    let (_, of_b) = json(daemon.get(&format!("/v1/feed?log_id={b}")).await).await;
    let indexes: Vec<u64> = of_b
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["index"].as_u64().unwrap())
        .collect();
    assert_eq!(indexes, [0, 1]);
    assert_eq!(of_b[1]["event"], json!({"add": 2}));
}

/// A client that stops reading while events keep coming falls behind the
/// server's buffer: its stream ends with a `lagged` comment over a real
/// socket, the daemon counts it, and a reconnect with `Last-Event-ID`
/// gets every event after the last one it had, from the database.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_stops_reading_ends_lagged_and_resumes_from_its_last_id() {
    const REQUESTS: usize = 40;
    const EACH: usize = 40;
    let database = sqlite_database();
    let mut config = eventlogs_e2e::config(&database);
    config.feed_buffer_bytes = 1 << 20;
    let daemon = TestDaemon::start(config).await;
    let counter = eventlogs_e2e::plugin("counter");
    assert_eq!(daemon.deploy("counter", counter).await.status(), 201);
    let mut stream = SseStream::open(&daemon, "/v1/feed/stream", None).await;
    // 25 MiB of events, more than the socket buffers and the daemon's
    // 1 MiB buffer hold, while the client reads nothing.
    let pad = "x".repeat(16 << 10);
    let log = daemon
        .create_log("counter", vec![json!({"pad": pad})])
        .await;
    for _ in 1..REQUESTS {
        let events: Vec<Value> = (0..EACH).map(|_| json!({"pad": pad})).collect();
        let response = daemon
            .post(&format!("/v1/logs/{log}/events"), json!({"events": events}))
            .await;
        assert_eq!(response.status(), 200);
    }
    let total = 1 + (REQUESTS - 1) * EACH;
    let mut last = 0u64;
    let mut comments = Vec::new();
    while let Some(item) = tokio::time::timeout(Duration::from_secs(30), stream.next())
        .await
        .expect("the stream moves or ends within 30 s")
    {
        match item {
            SseItem::Event { id, .. } => {
                let id: u64 = id.unwrap().parse().unwrap();
                assert_eq!(id, last + 1, "events in order, none skipped");
                last = id;
            }
            SseItem::Comment(comment) => comments.push(comment),
        }
    }
    assert!(
        comments.last().is_some_and(|c| c.starts_with("lagged")),
        "the stream ended with {comments:?} after {last} of {total} events"
    );
    assert!((last as usize) < total, "the client was not behind");
    let metrics = daemon.get("/metrics").await.text().await.unwrap();
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("eventlogs_feed_followers_lagged_total") && !l.ends_with(" 0")),
        "{metrics}"
    );
    let resumed_from = last.to_string();
    let mut stream = SseStream::open(&daemon, "/v1/feed/stream", Some(&resumed_from)).await;
    while (last as usize) < total {
        let (id, _) = tokio::time::timeout(Duration::from_secs(30), stream.next_event())
            .await
            .expect("the rest within 30 s")
            .expect("the resumed stream stays open");
        let id: u64 = id.unwrap().parse().unwrap();
        assert_eq!(id, last + 1, "resumed exactly after the last id");
        last = id;
    }
}
