//! The reduction cache on a Redis Cluster: a three-node cluster this test
//! starts on free ports, named by a `redis+cluster://` URL. Aggregates are
//! cached on every node; with one node stopped while appends and reduces
//! run, every request still succeeds, every aggregate is still right, and
//! the keys on the surviving nodes are still served from the cache.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use eventlogs_e2e::servers::RedisCluster;
use eventlogs_e2e::{TestDaemon, config, json, plugin_path, sqlite_database, tools_present};
use eventlogs_host::config::DeployAtStart;
use serde_json::{Value, json};

/// Logs in the run: enough that every node holds some of their keys.
const LOGS: usize = 24;

/// Appends one event to `log` and reduces it; returns the aggregate
/// response.
async fn append_and_reduce(daemon: &TestDaemon, log: &str) -> Value {
    let (status, body) = json(
        daemon
            .post(
                &format!("/v1/logs/{log}/events"),
                json!({"event": {"n": 1}}),
            )
            .await,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    reduce(daemon, log).await
}

async fn reduce(daemon: &TestDaemon, log: &str) -> Value {
    let (status, body) = json(daemon.get(&format!("/v1/logs/{log}/aggregate")).await).await;
    assert_eq!(status, 200, "{body}");
    body
}

/// Reduces `log` until the answer comes from the cache (a reduce writes its
/// aggregate to the cache in the background), or `None` after 2 seconds.
async fn reduce_from_cache(daemon: &TestDaemon, log: &str) -> Option<Value> {
    for _ in 0..100 {
        let body = reduce(daemon, log).await;
        if body["from_cache"] == true {
            return Some(body);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    None
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cache_works_on_a_cluster_and_survives_a_node_stopping() {
    if !tools_present(&["redis-server", "redis-cli"]) {
        return;
    }
    let mut cluster = RedisCluster::start().await;
    let mut settings = config(&sqlite_database());
    settings.deploy.push(DeployAtStart {
        name: "counter".into(),
        file: plugin_path("counter"),
    });
    settings.redis_url = Some(cluster.url());
    settings.redis_prefix = format!("eventlogs-e2e-{}:", uuid::Uuid::now_v7());
    // No aggregates kept in memory: every reduce reads the cluster.
    settings.memory_cache_bytes = 0;
    let daemon = TestDaemon::start(settings).await;

    let mut logs = Vec::new();
    for _ in 0..LOGS {
        logs.push(daemon.create_log("counter", vec![json!({"n": 1})]).await);
    }
    // The first reduce folds and writes through; the next reads the cache.
    for log in &logs {
        let first = append_and_reduce(&daemon, log).await;
        assert_eq!(first["aggregate"]["count"], 2, "{first}");
        let again = reduce_from_cache(&daemon, log)
            .await
            .expect("never served from the cluster");
        assert_eq!(again["events_folded"], 0, "{again}");
        assert_eq!(again["aggregate"]["count"], 2, "{again}");
    }
    for node in 0..3 {
        assert!(
            cluster.keys_on(node) > 0,
            "node {node} holds no cached aggregate: the keys did not spread"
        );
    }

    // A node stops while appends and reduces run: every one succeeds, and
    // every aggregate counts exactly the events appended.
    let daemon = Arc::new(daemon);
    let logs = Arc::new(logs);
    let stopped = Arc::new(AtomicBool::new(false));
    let load = tokio::spawn({
        let (daemon, logs, stopped) = (daemon.clone(), logs.clone(), stopped.clone());
        async move {
            let mut counts = vec![2u64; logs.len()];
            let mut rounds_after_stop = 0;
            while rounds_after_stop < 2 {
                if stopped.load(Ordering::Relaxed) {
                    rounds_after_stop += 1;
                }
                for (log, count) in logs.iter().zip(&mut counts) {
                    let reduced = append_and_reduce(&daemon, log).await;
                    *count += 1;
                    assert_eq!(reduced["aggregate"]["count"], *count, "{reduced}");
                }
            }
            counts
        }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    cluster.stop(1);
    // Past the cluster's node timeout, so the survivors have noticed.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    stopped.store(true, Ordering::Relaxed);
    let counts = load.await.expect("every request during the stop succeeded");

    let mut served_from_cache = 0;
    for (log, count) in logs.iter().zip(counts) {
        let reduced = append_and_reduce(&daemon, log).await;
        assert_eq!(reduced["aggregate"]["count"], count + 1, "{reduced}");
        if reduced["from_cache"] == true {
            served_from_cache += 1;
        }
    }
    assert!(
        served_from_cache > 0,
        "the surviving nodes' keys were never served from the cache"
    );
    let Ok(daemon) = Arc::try_unwrap(daemon) else {
        unreachable!("the load task has ended")
    };
    daemon.stop().await;
}
