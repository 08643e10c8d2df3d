//! Load generators over HTTP.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

/// A client for the daemon.
#[derive(Clone)]
pub struct Client {
    http: reqwest::Client,
    url: Arc<str>,
}

impl Client {
    /// A client for the daemon at `url`.
    pub fn new(url: &str) -> Self {
        Self {
            http: reqwest::Client::builder()
                .pool_max_idle_per_host(64)
                .build()
                .unwrap(),
            url: url.into(),
        }
    }

    /// The HTTP client (for requests the helpers here do not make).
    pub fn http(&self) -> &reqwest::Client {
        &self.http
    }

    /// The daemon's base URL.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Creates a payment log with `events`; its id.
    pub async fn create(&self, events: Vec<Value>) -> String {
        self.create_for("payment", events).await
    }

    /// Creates a log bound to `reducer` with `events`; its id.
    pub async fn create_for(&self, reducer: &str, events: Vec<Value>) -> String {
        let response = self
            .http
            .post(format!("{}/v1/logs", self.url))
            .json(&json!({"reducer": reducer, "events": events}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 201);
        let body: Value = response.json().await.unwrap();
        body["log_id"].as_str().unwrap().to_owned()
    }

    /// Appends; the status code.
    pub async fn append(&self, log: &str, events: Value, if_match: Option<u64>) -> u16 {
        let mut request = self
            .http
            .post(format!("{}/v1/logs/{log}/events", self.url))
            .json(&json!({"events": events}));
        if let Some(index) = if_match {
            request = request.header("if-match", format!("\"{index}\""));
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        let _ = response.bytes().await;
        status
    }

    /// Deploys `bytes` under `name`; the status.
    /// The daemon's Prometheus text.
    pub async fn metrics(&self) -> String {
        let url = format!("{}/metrics", self.url);
        self.http
            .get(url)
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    /// Deploys; the status code and the answer.
    pub async fn deploy_json(&self, name: &str, bytes: Vec<u8>) -> (u16, Value) {
        let response = self
            .http
            .put(format!("{}/v1/reducers/{name}", self.url))
            .header("content-type", "application/wasm")
            .body(bytes)
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    pub async fn deploy(&self, name: &str, bytes: Vec<u8>) -> u16 {
        self.deploy_json(name, bytes).await.0
    }

    /// The log's reduction, or the status of a failure.
    pub async fn try_reduce(&self, log: &str) -> Result<Value, u16> {
        let response = self
            .http
            .get(format!("{}/v1/logs/{log}/aggregate", self.url))
            .send()
            .await
            .unwrap();
        match response.status().as_u16() {
            200 => Ok(response.json().await.unwrap()),
            other => {
                let _ = response.bytes().await;
                Err(other)
            }
        }
    }

    /// The log's reduction.
    pub async fn reduce(&self, log: &str) -> Value {
        let response = self
            .http
            .get(format!("{}/v1/logs/{log}/aggregate", self.url))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        response.json().await.unwrap()
    }
}

/// Latencies of completed operations over a measured span.
#[derive(Default)]
pub struct Latencies {
    samples: Vec<Duration>,
    elapsed: Duration,
}

impl Latencies {
    /// Completed operations per second.
    pub fn per_second(&self) -> f64 {
        self.samples.len() as f64 / self.elapsed.as_secs_f64()
    }

    fn percentile(&self, p: f64) -> f64 {
        let mut sorted = self.samples.clone();
        sorted.sort_unstable();
        let at = ((sorted.len() as f64 * p) as usize).min(sorted.len() - 1);
        sorted[at].as_secs_f64() * 1000.0
    }

    /// Median latency, ms.
    pub fn p50(&self) -> f64 {
        self.percentile(0.50)
    }

    /// 99th percentile latency, ms.
    pub fn p99(&self) -> f64 {
        self.percentile(0.99)
    }

    /// Merges `workers`' samples measured over `elapsed`.
    pub fn merge(workers: Vec<Vec<Duration>>, elapsed: Duration) -> Self {
        Self {
            samples: workers.into_iter().flatten().collect(),
            elapsed,
        }
    }
}

fn authorized() -> Value {
    json!({"Authorized": {"amount": 1, "approval_code": "bench"}})
}

/// Runs `workers` loops of `step` until `span` has passed; every step's
/// latency is recorded.
pub async fn run_timed<S, Fut>(workers: usize, span: Duration, step: S) -> Latencies
where
    S: Fn(usize, u64) -> Fut + Clone + Send + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let started = Instant::now();
    let deadline = started + span;
    let handles: Vec<_> = (0..workers)
        .map(|worker| {
            let step = step.clone();
            tokio::spawn(async move {
                let mut samples = Vec::new();
                let mut n = 0;
                while Instant::now() < deadline {
                    let t = Instant::now();
                    step(worker, n).await;
                    samples.push(t.elapsed());
                    n += 1;
                }
                samples
            })
        })
        .collect();
    let mut all = Vec::new();
    for handle in handles {
        all.push(handle.await.unwrap());
    }
    Latencies::merge(all, started.elapsed())
}

/// `clients` clients, each appending single events to its own log bound
/// to `reducer` (`payment` validates appends, `counter` does not).
pub async fn own_logs(client: &Client, reducer: &str, clients: usize, span: Duration) -> Latencies {
    let mut logs = Vec::new();
    for _ in 0..clients {
        logs.push(client.create_for(reducer, vec![authorized()]).await);
    }
    let logs = Arc::new(logs);
    let client = client.clone();
    run_timed(clients, span, move |worker, _| {
        let client = client.clone();
        let logs = logs.clone();
        async move {
            let status = client
                .append(&logs[worker], json!([authorized()]), None)
                .await;
            assert_eq!(status, 200);
        }
    })
    .await
}

/// What appending to one log without `If-Match` achieved.
pub struct OneLog {
    /// Appends answered 2xx, per second.
    pub per_second: f64,
    /// Appends answered anything else.
    pub failed: u64,
}

/// `clients` clients appending single events to one payment log without
/// `If-Match`: every one must succeed.
pub async fn one_log(client: &Client, clients: usize, span: Duration) -> OneLog {
    let log = Arc::<str>::from(client.create(vec![authorized()]).await);
    let failed = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let latencies = run_timed(clients, span, {
        let (client, failed) = (client.clone(), failed.clone());
        move |_, _| {
            let (client, log, failed) = (client.clone(), log.clone(), failed.clone());
            async move {
                if client.append(&log, json!([authorized()]), None).await != 200 {
                    failed.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
            }
        }
    })
    .await;
    let failed = failed.load(std::sync::atomic::Ordering::Relaxed);
    OneLog {
        per_second: latencies.per_second() - failed as f64 / span.as_secs_f64(),
        failed,
    }
}

/// What racing on one log achieved.
pub struct Race {
    /// Appends that won their index, per second.
    pub winners_per_second: f64,
    /// Appends refused with 412, per second.
    pub conflicts_per_second: f64,
}

/// `clients` clients appending to one log with `If-Match`: each reads the
/// last index it knows, appends, and on 412 takes the current index from
/// the problem.
pub async fn racing(client: &Client, clients: usize, span: Duration) -> Race {
    let log = Arc::<str>::from(client.create(vec![authorized()]).await);
    let started = Instant::now();
    let deadline = started + span;
    let handles: Vec<_> = (0..clients)
        .map(|_| {
            let client = client.clone();
            let log = log.clone();
            tokio::spawn(async move {
                let (mut won, mut lost, mut expected) = (0u64, 0u64, 0u64);
                while Instant::now() < deadline {
                    let response = client
                        .http
                        .post(format!("{}/v1/logs/{log}/events", client.url))
                        .header("if-match", format!("\"{expected}\""))
                        .json(&json!({"event": authorized()}))
                        .send()
                        .await
                        .unwrap();
                    let status = response.status().as_u16();
                    let body: Value = response.json().await.unwrap();
                    match status {
                        200 => {
                            won += 1;
                            expected = body["last_index"].as_u64().unwrap();
                        }
                        412 => {
                            lost += 1;
                            expected = body["current_index"].as_u64().unwrap();
                        }
                        other => panic!("racing append: {other} {body}"),
                    }
                }
                (won, lost)
            })
        })
        .collect();
    let (mut won, mut lost) = (0, 0);
    for handle in handles {
        let (w, l) = handle.await.unwrap();
        won += w;
        lost += l;
    }
    let seconds = started.elapsed().as_secs_f64();
    Race {
        winners_per_second: won as f64 / seconds,
        conflicts_per_second: lost as f64 / seconds,
    }
}

/// `clients` clients appending `size`-event batches to their own logs.
pub async fn batches(client: &Client, clients: usize, size: usize, span: Duration) -> Latencies {
    let mut logs = Vec::new();
    for _ in 0..clients {
        logs.push(client.create(vec![authorized()]).await);
    }
    let logs = Arc::new(logs);
    let batch = Arc::new(Value::Array((0..size).map(|_| authorized()).collect()));
    let client = client.clone();
    run_timed(clients, span, move |worker, _| {
        let client = client.clone();
        let logs = logs.clone();
        let batch = batch.clone();
        async move {
            let status = client.append(&logs[worker], (*batch).clone(), None).await;
            assert_eq!(status, 200);
        }
    })
    .await
}

/// Reduce latencies: one uncached reduction per log and five right after
/// an append.
pub struct Reduce {
    /// Reductions folding the whole log (its cache entry deleted first).
    pub uncached: Latencies,
    /// Reductions right after an append of one event.
    pub cached: Latencies,
}

impl Reduce {
    /// All of `parts`' samples together.
    pub fn merge(parts: Vec<Reduce>) -> Self {
        let (uncached, cached) = parts
            .into_iter()
            .map(|part| (part.uncached.samples, part.cached.samples))
            .unzip();
        Self {
            uncached: Latencies::merge(uncached, Duration::ZERO),
            cached: Latencies::merge(cached, Duration::ZERO),
        }
    }
}

/// Reduce latency of `rounds` logs of `events` events: uncached (written
/// through `writer`, another daemon on the same database and Redis keys,
/// then its cache entry deleted in Redis under `prefix`, so the daemon
/// measured has nothing of it anywhere) and right after an append through
/// `client`.
pub async fn reduce_latency(
    client: &Client,
    writer: &Client,
    prefix: &str,
    events: u64,
    rounds: usize,
) -> Reduce {
    let mut uncached = Vec::new();
    let mut cached = Vec::new();
    for _ in 0..rounds {
        let log = long_log(writer, events).await;
        crate::daemon::evict(prefix, &log).await;
        let t = Instant::now();
        let reduced = client.reduce(&log).await;
        uncached.push(t.elapsed());
        assert_eq!(reduced["from_cache"], false, "{reduced}");
        for _ in 0..5 {
            client.append(&log, json!([authorized()]), None).await;
            let t = Instant::now();
            let reduced = client.reduce(&log).await;
            cached.push(t.elapsed());
            assert_eq!(reduced["from_cache"], true, "{reduced}");
            assert_eq!(reduced["events_folded"], 0, "{reduced}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    Reduce {
        uncached: Latencies::merge(vec![uncached], Duration::ZERO),
        cached: Latencies::merge(vec![cached], Duration::ZERO),
    }
}

/// A new log of `events` events, appended in batches of 1,000
/// (the log's order is the append order).
pub async fn long_log(client: &Client, events: u64) -> String {
    const BATCH: u64 = 1_000;
    let first = events.min(BATCH);
    let log = client
        .create((0..first).map(|_| authorized()).collect())
        .await;
    let batch = Value::Array((0..BATCH).map(|_| authorized()).collect());
    let mut written = first;
    while written < events {
        let size = (events - written).min(BATCH);
        let events = match size {
            BATCH => batch.clone(),
            _ => Value::Array((0..size).map(|_| authorized()).collect()),
        };
        assert_eq!(client.append(&log, events, None).await, 200);
        written += size;
    }
    log
}
