//! Long logs stay reducible under a short request timeout: a fold that
//! outlives its request finishes in the background and caches its result,
//! and a fold leaves checkpoints in the cache, so a retry — even on another
//! daemon after this one died — resumes instead of starting from zero.

use std::time::{Duration, Instant};

use eventlogs_e2e::{
    SHARED_REDIS, TestDaemon, config, json, plugin, plugin_path, postgres_database, sqlite_database,
};
use serde_json::{Value, json as value};

/// Events in the long log; folded one per batch (a reducer call each),
/// they take longer than the tests' one-second request timeout (40,000 no
/// longer did on a fast machine, folded from one streamed read).
const EVENTS: u64 = 120_000;

async fn long_log(daemon: &TestDaemon) -> String {
    let thousand: Vec<Value> = (0..1000).map(|_| value!({})).collect();
    let (status, created) = json(
        daemon
            .post(
                "/v1/logs",
                value!({"reducer": "counter", "events": thousand}),
            )
            .await,
    )
    .await;
    assert_eq!(status, 201, "{created}");
    let log = created["log_id"].as_str().unwrap().to_owned();
    for _ in 1..EVENTS / 1000 {
        let appended = daemon
            .post(
                &format!("/v1/logs/{log}/events"),
                value!({"events": thousand}),
            )
            .await;
        assert_eq!(appended.status(), 200);
    }
    log
}

async fn reduce(daemon: &TestDaemon, log: &str) -> (u16, Value) {
    json(daemon.get(&format!("/v1/logs/{log}/aggregate")).await).await
}

/// Without checkpoints, every retry of a reduce that timed out joins the
/// fold still running in the background, until it is done.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fold_that_outlives_its_request_finishes_in_the_background() {
    let mut settings = config(&sqlite_database());
    settings.request_timeout_secs = 1;
    settings.fold_batch = 1;
    settings.checkpoint_batches = 0;
    let daemon = TestDaemon::start(settings).await;
    assert_eq!(
        daemon.deploy("counter", plugin("counter")).await.status(),
        201
    );
    let log = long_log(&daemon).await;

    let started = Instant::now();
    let (status, first) = reduce(&daemon, &log).await;
    assert_eq!(
        status, 503,
        "the fold was not longer than a request: {first}"
    );
    let mut timeouts = 1;
    let done = loop {
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "never finished"
        );
        match reduce(&daemon, &log).await {
            (200, body) => break body,
            (503, _) => timeouts += 1,
            (status, body) => panic!("{status}: {body}"),
        }
    };
    println!(
        "reduced {EVENTS} events after {timeouts} timed-out requests in {:?}",
        started.elapsed()
    );
    assert_eq!(done["aggregate"]["count"], EVENTS);
    assert_eq!(done["through_index"], EVENTS - 1);
}

/// A daemon killed in the middle of a long fold leaves checkpoints in
/// Redis; another daemon resumes from the last one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_on_another_daemon_resumes_from_a_checkpoint() {
    let Some(database) = postgres_database().await else {
        return;
    };
    let prefix = format!("eventlogs-e2e-{}:", uuid::Uuid::now_v7());
    let counter = format!("counter={}", plugin_path("counter").display());
    let args = [
        "--database-url",
        &database,
        "--redis-url",
        SHARED_REDIS,
        "--redis-prefix",
        &prefix,
        "--request-timeout-secs",
        "1",
        "--fold-batch",
        "1",
        "--checkpoint-batches",
        "50",
        "--deploy",
        &counter,
    ];
    let first = TestDaemon::spawn(&args).await;
    let log = long_log(&first).await;
    let (status, body) = reduce(&first, &log).await;
    assert_eq!(
        status, 503,
        "the fold was not longer than a request: {body}"
    );
    // Killed mid-fold: only its checkpoints survive.
    drop(first);

    let mut settings = config(&database);
    settings.redis_url = Some(SHARED_REDIS.into());
    settings.redis_prefix = prefix;
    let second = TestDaemon::start(settings).await;
    let (status, done) = reduce(&second, &log).await;
    assert_eq!(status, 200, "{done}");
    assert_eq!(done["aggregate"]["count"], EVENTS);
    assert_eq!(done["from_cache"], true, "{done}");
    let folded = done["events_folded"].as_u64().unwrap();
    println!("resumed with {folded} of {EVENTS} events left");
    assert!(folded < EVENTS, "{done}");
}
