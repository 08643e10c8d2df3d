//! Large events: pages and fold batches are cut at a byte budget, so a log
//! of large events reduces within a small reducer memory and pages in
//! bounded pieces; one event larger than the cap is refused and stores
//! nothing.

use eventlogs_e2e::{
    TestDaemon, assert_problem, config, json, plugin, postgres_database, sqlite_database,
};
use serde_json::{Value, json as value};

/// Events in the log, 512 KiB each: 20 MiB together.
const EVENTS: usize = 40;
const EVENT_BYTES: usize = 512 << 10;
/// The fold and page budget: four such events.
const BUDGET: u64 = 2 << 20;

fn large_event(n: usize) -> Value {
    // `{"n":N,"pad":"…"}` of exactly EVENT_BYTES bytes.
    let head = format!("{{\"n\":{n},\"pad\":\"");
    let pad = "x".repeat(EVENT_BYTES - head.len() - 2);
    serde_json::from_str(&format!("{head}{pad}\"}}")).unwrap()
}

async fn daemon_on(database: &str) -> TestDaemon {
    let mut settings = config(database);
    // Folding all 20 MiB in one call would not fit.
    settings.reducer_memory_bytes = 16 << 20;
    settings.fold_batch_bytes = BUDGET;
    settings.page_bytes = BUDGET;
    // Room for a body just over the per-event cap (1 MiB).
    settings.body_limit_bytes = 2 << 20;
    let daemon = TestDaemon::start(settings).await;
    assert_eq!(
        daemon.deploy("counter", plugin("counter")).await.status(),
        201
    );
    daemon
}

async fn large_log(daemon: &TestDaemon) -> String {
    let log = daemon.create_log("counter", vec![large_event(0)]).await;
    for n in 1..EVENTS {
        let appended = daemon
            .post(
                &format!("/v1/logs/{log}/events"),
                value!({"event": large_event(n)}),
            )
            .await;
        assert_eq!(appended.status(), 200);
    }
    log
}

async fn large_events_reduce_and_page_in_bounded_pieces(database: &str) {
    let daemon = daemon_on(database).await;
    let log = large_log(&daemon).await;

    let (status, reduced) = json(daemon.get(&format!("/v1/logs/{log}/aggregate")).await).await;
    assert_eq!(status, 200, "{reduced}");
    assert_eq!(reduced["aggregate"]["count"], EVENTS);

    // Paging with a limit far above what the budget allows: every page
    // stops at the budget (plus at most one event), and links the next.
    let mut next = Some(format!("/v1/logs/{log}/events?limit=1000"));
    let (mut seen, mut pages) = (Vec::new(), 0);
    while let Some(path) = next.take() {
        let response = daemon.get(&path).await;
        assert_eq!(response.status(), 200);
        let length = response.content_length();
        next = response.headers().get("link").map(|link| {
            let link = link.to_str().unwrap();
            link[1..link.find('>').unwrap()].to_owned()
        });
        let page: Vec<Value> = response.json().await.unwrap();
        if !page.is_empty() {
            // Written element by element, so its length is not known up
            // front.
            assert_eq!(length, None, "the page is not streamed");
        }
        let bytes: usize = page.iter().map(|e| e["event"].to_string().len()).sum();
        assert!(
            bytes as u64 <= BUDGET + EVENT_BYTES as u64,
            "a page of {bytes} bytes"
        );
        seen.extend(page.iter().map(|e| e["event"]["n"].as_u64().unwrap()));
        pages += 1;
    }
    assert_eq!(seen, (0..EVENTS as u64).collect::<Vec<_>>());
    assert!(pages >= EVENTS / 4, "{pages} pages");

    // One byte over the per-event cap: refused, nothing stored.
    let mut too_large = large_event(EVENTS).to_string();
    too_large.truncate(too_large.len() - 2);
    too_large.push_str(&"y".repeat((1 << 20) - too_large.len() - 1));
    too_large.push_str("\"}");
    assert_eq!(too_large.len(), (1 << 20) + 1);
    let refused = daemon
        .request(reqwest::Method::POST, &format!("/v1/logs/{log}/events"))
        .header("content-type", "application/json")
        .body(format!("{{\"event\":{too_large}}}"))
        .send()
        .await
        .unwrap();
    let body = assert_problem(refused, 413, "event-too-large").await;
    assert_eq!(body["event"], 0);
    let (_, info) = json(daemon.get(&format!("/v1/logs/{log}")).await).await;
    assert_eq!(info["last_index"], EVENTS - 1, "{info}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_sqlite() {
    large_events_reduce_and_page_in_bounded_pieces(&sqlite_database()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_postgres() {
    if let Some(database) = postgres_database().await {
        large_events_reduce_and_page_in_bounded_pieces(&database).await;
    }
}

/// When the cached reduction's own event fills a whole fold batch's byte
/// budget, the events after it are still folded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_after_a_cached_event_larger_than_the_batch_budget_are_folded() {
    let mut settings = config(&sqlite_database());
    settings.fold_batch_bytes = 1024;
    let daemon = TestDaemon::start(settings).await;
    assert_eq!(
        daemon.deploy("counter", plugin("counter")).await.status(),
        201
    );
    let big = || value!({ "pad": "x".repeat(2048) });
    let log = daemon
        .create_log("counter", vec![big(), big(), big()])
        .await;
    let reduce = async || {
        json(daemon.get(&format!("/v1/logs/{log}/aggregate")).await)
            .await
            .1
    };
    assert_eq!(reduce().await["aggregate"]["count"], 3);
    // The reduction reaches the cache in the background.
    let started = std::time::Instant::now();
    while reduce().await["from_cache"] != true {
        assert!(
            started.elapsed() < std::time::Duration::from_secs(5),
            "never cached"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let appended = daemon
        .post(
            &format!("/v1/logs/{log}/events"),
            value!({"events": [big(), big()]}),
        )
        .await;
    assert_eq!(appended.status(), 200);
    let reduced = reduce().await;
    assert_eq!(reduced["aggregate"]["count"], 5, "{reduced}");
    assert_eq!(reduced["from_cache"], true);
    assert_eq!(reduced["events_folded"], 2);
}
