//! Phases under a steady append-and-reduce load: a hot deploy, and hostile
//! reducers running beside well-behaved ones.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::daemon::{Daemon, plugin_bytes};
use crate::load::{Client, Latencies};

/// Workers of the steady load.
const WORKERS: usize = 8;

/// What a steady load saw.
pub struct Steady {
    /// Reduce latencies.
    pub reduces: Latencies,
    /// Requests that did not succeed.
    pub failed: u64,
}

/// `WORKERS` workers, each appending one event to its own log of `reducer`
/// and reducing it, until `stop`; every counter-shaped aggregate is checked
/// against the log's length.
async fn steady(
    client: &Client,
    reducer: &str,
    stop: Arc<AtomicBool>,
) -> tokio::task::JoinHandle<Steady> {
    let mut logs = Vec::new();
    for _ in 0..WORKERS {
        logs.push(
            client
                .create_for(reducer, vec![json!({"Authorized": {"amount": 1}})])
                .await,
        );
    }
    let client = client.clone();
    tokio::spawn(async move {
        let failed = Arc::new(AtomicU64::new(0));
        let started = Instant::now();
        let handles: Vec<_> = logs
            .into_iter()
            .map(|log| {
                let (client, stop, failed) = (client.clone(), stop.clone(), failed.clone());
                tokio::spawn(async move {
                    let mut samples = Vec::new();
                    while !stop.load(Ordering::Relaxed) {
                        if client
                            .append(&log, json!([{"Authorized": {"amount": 1}}]), None)
                            .await
                            != 200
                        {
                            failed.fetch_add(1, Ordering::Relaxed);
                        }
                        let t = Instant::now();
                        match client.try_reduce(&log).await {
                            Ok(reduced) => {
                                samples.push(t.elapsed());
                                if let Some(count) = reduced["aggregate"]["count"].as_u64() {
                                    assert_eq!(
                                        count,
                                        reduced["through_index"].as_u64().unwrap() + 1,
                                        "{reduced}"
                                    );
                                }
                            }
                            Err(_) => {
                                failed.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                    }
                    samples
                })
            })
            .collect();
        let mut all = Vec::new();
        for handle in handles {
            all.push(handle.await.unwrap());
        }
        Steady {
            reduces: Latencies::merge(all, started.elapsed()),
            failed: failed.load(Ordering::Relaxed),
        }
    })
}

/// What a hot deploy under load showed.
pub struct HotDeploy {
    /// Size of the deployed component.
    pub bytes: usize,
    /// From sending the upload to the daemon answering that the version is
    /// active (upload, validation, compilation, the deploy guard's replay
    /// of the name's logs, activation).
    pub deploy: Duration,
    /// The same upload under a name with no logs, so the guard replays
    /// nothing: the deploy with the guard off, in effect.
    pub deploy_unguarded: Duration,
    /// How many logs the guarded deploy replayed.
    pub replayed_logs: u64,
    /// From the deploy's answer to the first reduction by the new version.
    pub first_use: Duration,
    /// Requests of the steady load that failed.
    pub failed: u64,
}

/// Deploys a ~1 MiB component over the counter under `WORKERS` workers'
/// load, `span` after the load starts.
pub async fn hot_deploy(client: &Client, span: Duration) -> HotDeploy {
    assert_eq!(client.deploy("ledger", plugin_bytes("counter")).await, 201);
    let stop = Arc::new(AtomicBool::new(false));
    let load = steady(client, "ledger", stop.clone()).await;
    tokio::time::sleep(span / 2).await;
    let large = plugin_bytes("fixture_large");
    let bytes = large.len();
    let version = sha256_hex(&large);
    let started = Instant::now();
    let (status, _) = client
        .deploy_json("ledger-without-logs", large.clone())
        .await;
    let deploy_unguarded = started.elapsed();
    assert_eq!(status, 201);
    let started = Instant::now();
    let (status, answer) = client.deploy_json("ledger", large).await;
    let deploy = started.elapsed();
    assert_eq!(status, 201, "{answer}");
    let replayed_logs = answer["replayed_logs"].as_u64().unwrap_or(0);
    let probe_log = client.create_for("ledger", vec![json!({})]).await;
    let answered = Instant::now();
    let first_use = loop {
        let reduced = client.reduce(&probe_log).await;
        if reduced["reducer_version"] == Value::String(version.clone()) {
            break answered.elapsed();
        }
    };
    tokio::time::sleep(span / 2).await;
    stop.store(true, Ordering::Relaxed);
    let steady = load.await.unwrap();
    HotDeploy {
        bytes,
        deploy,
        deploy_unguarded,
        replayed_logs,
        first_use,
        failed: steady.failed,
    }
}

fn sha256_hex(bytes: &[u8]) -> String {
    eventlogs_host::Version::of(bytes).to_string()
}

/// Well-behaved reducers' latency and the daemon's memory, without and
/// with hostile reducers called beside them.
pub struct Hostile {
    /// p99 reduce latency of the payment load alone, ms.
    pub alone_p99: f64,
    /// The same with hostile reducers called concurrently, ms.
    pub beside_p99: f64,
    /// RSS before and after the hostile phase, KiB.
    pub rss_before: u64,
    /// RSS after it, KiB.
    pub rss_after: u64,
    /// Failed requests of the payment load (both phases).
    pub failed: u64,
    /// Hostile calls made (each fails, as it should).
    pub hostile_calls: u64,
}

/// The payment load for `span` alone, then for `span` beside one client
/// per hostile fixture calling it in a loop.
pub async fn hostile(client: &Client, daemon: &Daemon, span: Duration) -> Hostile {
    let stop = Arc::new(AtomicBool::new(false));
    let load = steady(client, "payment", stop.clone()).await;
    tokio::time::sleep(span).await;
    stop.store(true, Ordering::Relaxed);
    let alone = load.await.unwrap();

    let fixtures = [
        "fixture_infinite_loop",
        "fixture_memory_hog",
        "fixture_panicking",
        "fixture_deep_recursion",
    ];
    let mut hostile_logs = Vec::new();
    for fixture in fixtures {
        let name = fixture.trim_start_matches("fixture_").replace('_', "-");
        assert_eq!(client.deploy(&name, plugin_bytes(fixture)).await, 201);
        hostile_logs.push(client.create_for(&name, vec![json!({"n": 1})]).await);
    }
    let rss_before = daemon.rss_kib();
    let stop = Arc::new(AtomicBool::new(false));
    let calls = Arc::new(AtomicU64::new(0));
    let attackers: Vec<_> = hostile_logs
        .into_iter()
        .map(|log| {
            let (client, stop, calls) = (client.clone(), stop.clone(), calls.clone());
            tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    let outcome = client.try_reduce(&log).await;
                    assert!(outcome.is_err(), "a hostile reducer succeeded");
                    calls.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    let load = steady(client, "payment", stop.clone()).await;
    tokio::time::sleep(span).await;
    stop.store(true, Ordering::Relaxed);
    let beside = load.await.unwrap();
    for attacker in attackers {
        attacker.await.unwrap();
    }
    Hostile {
        alone_p99: alone.reduces.p99(),
        beside_p99: beside.reduces.p99(),
        rss_before,
        rss_after: daemon.rss_kib(),
        failed: alone.failed + beside.failed,
        hostile_calls: calls.load(Ordering::Relaxed),
    }
}
