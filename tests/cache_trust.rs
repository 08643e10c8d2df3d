//! Daemons trust only the Redis entries written under their cache secret:
//! without `--cache-secret`, every daemon on one database shares a secret
//! generated and stored there; a daemon with another secret ignores their
//! entries and folds from the store.

use eventlogs_e2e::{TestDaemon, config, json, plugin, postgres_database, with_redis};
use serde_json::Value;

async fn reduce(daemon: &TestDaemon, log: &str) -> Value {
    let (status, body) = json(daemon.get(&format!("/v1/logs/{log}/aggregate")).await).await;
    assert_eq!(status, 200, "{body}");
    body
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn daemons_on_one_database_share_a_generated_secret_and_others_are_not_trusted() {
    let Some(database) = postgres_database().await else {
        return;
    };
    let settings = with_redis(config(&database));
    let first = TestDaemon::start(settings.clone()).await;
    assert_eq!(
        first.deploy("counter", plugin("counter")).await.status(),
        201
    );
    let created = first
        .create_log("counter", vec![serde_json::json!({}); 3])
        .await;
    let log = created.as_str();
    // The first reduce folds and caches (the counter does not validate, so
    // its create wrote nothing through); let that background write land.
    assert_eq!(reduce(&first, log).await["from_cache"], false);
    let cached = async |daemon: &TestDaemon| {
        for _ in 0..100 {
            let body = reduce(daemon, log).await;
            if body["from_cache"] == true {
                return body;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        panic!("never served from the cache");
    };
    let by_first = cached(&first).await;

    // A second daemon on the same database and Redis, no secret given: it
    // reads the same generated secret, so the first one's entry verifies.
    let second = TestDaemon::start(settings.clone()).await;
    let by_second = reduce(&second, log).await;
    assert_eq!(by_second["from_cache"], true, "{by_second}");
    assert_eq!(by_second["aggregate"], by_first["aggregate"]);

    // A daemon with a secret of its own does not trust that entry.
    let mut own = settings;
    own.cache_secret = Some("another-secret-0123456789".into());
    let third = TestDaemon::start(own).await;
    let by_third = reduce(&third, log).await;
    assert_eq!(by_third["from_cache"], false, "{by_third}");
    assert_eq!(by_third["events_folded"], 3);
    assert_eq!(by_third["aggregate"], by_first["aggregate"]);
    // And counts it where operators look.
    let metrics = third.get("/metrics").await.text().await.unwrap();
    let rejected: f64 = metrics
        .lines()
        .find_map(|line| {
            line.strip_prefix("eventlogs_cache_rejected_total")?
                .trim()
                .parse()
                .ok()
        })
        .unwrap_or_else(|| panic!("eventlogs_cache_rejected_total missing from {metrics}"));
    assert!(rejected >= 1.0, "{rejected} rejected");
}
