//! Admission control between reducers: a reducer runs at most
//! `--reducer-concurrency` folds at once, a fold waits at most
//! `--reducer-queue-timeout-ms` for a turn and is then refused with 503
//! `reducer-busy`, other reducers are served meanwhile, and concurrent
//! reduces of one log share one fold.

use std::time::Duration;

use eventlogs_e2e::{TestDaemon, assert_problem, config, json, plugin, sqlite_database};
use serde_json::{Value, json};

/// An embedded daemon whose reducers run one fold at a time, waiting at
/// most 100 ms for a turn, with `spinner` (a reducer that loops until its
/// 1 s deadline when it folds) and `counter` deployed.
async fn one_fold_per_reducer() -> TestDaemon {
    let mut settings = config(&sqlite_database());
    settings.reducer_concurrency = 1;
    settings.reducer_queue_timeout_ms = 100;
    settings.reducer_timeout_ms = 1000;
    let daemon = TestDaemon::start(settings).await;
    for (name, file) in [("spinner", "fixture_infinite_loop"), ("counter", "counter")] {
        assert_eq!(daemon.deploy(name, plugin(file)).await.status(), 201);
    }
    daemon
}

async fn create(daemon: &TestDaemon, reducer: &str) -> String {
    daemon.create_log(reducer, vec![json!({})]).await
}

fn reduce(daemon: &TestDaemon, log: &str) -> impl Future<Output = (u16, Value)> + use<> {
    let request = daemon.request(reqwest::Method::GET, &format!("/v1/logs/{log}/aggregate"));
    async move { json(request.send().await.unwrap()).await }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_busy_reducer_is_refused_after_its_queue_timeout_and_others_are_served() {
    let daemon = one_fold_per_reducer().await;
    let (first, second) = (
        create(&daemon, "spinner").await,
        create(&daemon, "spinner").await,
    );
    let counted = create(&daemon, "counter").await;

    let running = tokio::spawn(reduce(&daemon, &first));
    tokio::time::sleep(Duration::from_millis(200)).await;
    let refused = daemon.get(&format!("/v1/logs/{second}/aggregate")).await;
    assert_eq!(
        refused
            .headers()
            .get("retry-after")
            .map(|v| v.to_str().unwrap()),
        Some("1")
    );
    let body = assert_problem(refused, 503, "reducer-busy").await;
    assert_eq!(body["reducer"], "spinner");

    // Another reducer is not held up.
    let (status, counter) = reduce(&daemon, &counted).await;
    assert_eq!(status, 200, "{counter}");
    assert_eq!(counter["aggregate"]["count"], 1);

    let (status, timed_out) = running.await.unwrap();
    assert_eq!(status, 422, "{timed_out}");
    assert_eq!(timed_out["failure"], "timeout");
    // The same reduce again, on the same events, would loop again: it is
    // answered with the same failure, paced like the fold was, but without
    // a fold, so it holds no turn.
    let again = {
        let reduced = reduce(&daemon, &first);
        tokio::spawn(async move {
            let asked = std::time::Instant::now();
            (reduced.await, asked.elapsed())
        })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    // With the turn free, the second log is folded (and times out); were
    // the repeat folding, this would be refused as busy after 100 ms.
    let (status, body) = reduce(&daemon, &second).await;
    assert_eq!(
        (status, &body["failure"]),
        (422, &json!("timeout")),
        "{body}"
    );
    let ((status, again), took) = again.await.unwrap();
    assert_eq!(status, 422, "{again}");
    // Paced like the fold, which ran into its 1 s deadline.
    assert!(
        took >= Duration::from_millis(900),
        "answered after {took:?}"
    );
    assert_eq!(
        (&again["failure"], &again["detail"]),
        (&timed_out["failure"], &timed_out["detail"])
    );
    // After three looping folds, the fourth starts at the lowest priority.
    for _ in 0..2 {
        let log = create(&daemon, "spinner").await;
        let (status, _) = reduce(&daemon, &log).await;
        assert_eq!(status, 422);
    }

    // All are counted: the refusal, the looping calls that continued at the
    // lowest priority, those that started there, and the repeat.
    let metrics = daemon.get("/metrics").await.text().await.unwrap();
    for name in [
        "eventlogs_reducer_busy_total",
        "eventlogs_reducer_calls_demoted_total",
        "eventlogs_reducer_calls_started_demoted_total",
        "eventlogs_reduce_failures_repeated_total",
    ] {
        let count: f64 = metrics
            .lines()
            .find_map(|line| line.strip_prefix(name)?.trim().parse().ok())
            .unwrap_or_else(|| panic!("{name} missing from {metrics}"));
        assert!(count >= 1.0, "{name} is {count}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_reduces_of_one_log_share_one_fold() {
    let daemon = one_fold_per_reducer().await;
    let log = create(&daemon, "spinner").await;
    // One fold at a time and a 100 ms queue: without sharing, all but one
    // of these would be refused as busy while the first runs for 1 s.
    let reduces: Vec<_> = (0..10)
        .map(|_| tokio::spawn(reduce(&daemon, &log)))
        .collect();
    for reduce in reduces {
        let (status, body) = reduce.await.unwrap();
        assert_eq!(status, 422, "{body}");
        assert_eq!(body["failure"], "timeout");
    }
}
