//! The feed's figures: delivery lag from an append's answer to the event
//! arriving on a `/v1/feed/stream` subscriber under the 16-client append
//! load; feed pages against reading the `events` table directly with sqlx;
//! appends with 1,000 idle stream subscribers against appends without.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use sqlx::Row;
use sqlx::postgres::PgPoolOptions;

use crate::load::{Client, Latencies, own_logs, run_timed};

/// Delivery lags, and how many appends were measured.
pub struct Lag {
    /// Lags, sorted.
    pub lags: Vec<Duration>,
    /// Appends answered during the phase.
    pub appends: usize,
}

impl Lag {
    fn quantile(&self, q: f64) -> f64 {
        let i = ((self.lags.len() as f64 - 1.0) * q).round() as usize;
        self.lags
            .get(i)
            .map_or(f64::NAN, |d| d.as_secs_f64() * 1000.0)
    }

    /// Median lag in milliseconds.
    pub fn p50(&self) -> f64 {
        self.quantile(0.5)
    }

    /// 99th percentile lag in milliseconds.
    pub fn p99(&self) -> f64 {
        self.quantile(0.99)
    }
}

/// An open stream whose `id:` lines are timed as they arrive.
async fn open_stream(client: &Client, query: &str) -> reqwest::Response {
    let response = client
        .http()
        .get(format!("{}/v1/feed/stream?{query}", client.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    response
}

/// `clients` clients appending to their own payment logs for `span` while
/// one subscriber follows the stream from the current head: for each
/// append, the time from its answer to its event's arrival (0 if the event
/// arrived first).
pub async fn delivery_lag(client: &Client, clients: usize, span: Duration) -> Lag {
    let mut logs = Vec::new();
    let mut head = 0;
    for _ in 0..clients {
        let (log, position) = create(client).await;
        logs.push(log);
        head = head.max(position);
    }
    let arrived: Arc<Mutex<HashMap<u64, Instant>>> = Arc::default();
    let mut stream = open_stream(client, &format!("after={head}")).await;
    let reader = tokio::spawn({
        let arrived = arrived.clone();
        async move {
            let mut buffer = String::new();
            while let Ok(Some(chunk)) = stream.chunk().await {
                let now = Instant::now();
                buffer.push_str(std::str::from_utf8(&chunk).unwrap());
                let complete = buffer.rfind('\n').map_or(0, |i| i + 1);
                let mut arrived = arrived.lock().unwrap();
                for line in buffer[..complete].lines() {
                    if let Some(id) = line.strip_prefix("id: ") {
                        arrived.insert(id.parse().unwrap(), now);
                    }
                }
                buffer.drain(..complete);
            }
        }
    });
    let answered: Arc<Mutex<Vec<(u64, Instant)>>> = Arc::default();
    let logs = Arc::new(logs);
    let (http, url) = (client.http().clone(), client.url().to_owned());
    run_timed(clients, span, {
        let answered = answered.clone();
        move |worker, _| {
            let (http, url, logs, answered) =
                (http.clone(), url.clone(), logs.clone(), answered.clone());
            async move {
                let response = http
                    .post(format!("{url}/v1/logs/{}/events", logs[worker]))
                    .json(&json!({"event": authorized()}))
                    .send()
                    .await
                    .unwrap();
                assert_eq!(response.status(), 200);
                let body: Value = response.json().await.unwrap();
                let position = body["last_position"].as_u64().unwrap();
                answered.lock().unwrap().push((position, Instant::now()));
            }
        }
    })
    .await;
    // The last events' arrival.
    tokio::time::sleep(Duration::from_secs(1)).await;
    reader.abort();
    let arrived = arrived.lock().unwrap();
    let answered = answered.lock().unwrap();
    let mut lags: Vec<Duration> = answered
        .iter()
        .map(|(position, at)| match arrived.get(position) {
            Some(arrival) => arrival.saturating_duration_since(*at),
            // Never arrived within a second of the load's end.
            None => Duration::from_secs(3600),
        })
        .collect();
    lags.sort();
    Lag {
        appends: answered.len(),
        lags,
    }
}

/// Creates a payment log; its id and the position of its event.
async fn create(client: &Client) -> (String, u64) {
    let response = client
        .http()
        .post(format!("{}/v1/logs", client.url()))
        .json(&json!({"reducer": "payment", "event": authorized()}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    let body: Value = response.json().await.unwrap();
    (
        body["log_id"].as_str().unwrap().to_owned(),
        body["last_position"].as_u64().unwrap(),
    )
}

/// Events per second reading the whole feed in pages of 1,000 over HTTP,
/// and reading the same rows from `events` directly with sqlx in pages of
/// 1,000, in the same run.
pub async fn page_throughput(client: &Client, database: &str) -> (f64, f64) {
    let started = Instant::now();
    let (mut after, mut read) = (0u64, 0usize);
    loop {
        let page: Value = client
            .http()
            .get(format!("{}/v1/feed?after={after}&limit=1000", client.url()))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let page = page.as_array().unwrap();
        let Some(last) = page.last() else { break };
        after = last["position"].as_u64().unwrap();
        read += page.len();
    }
    let http = read as f64 / started.elapsed().as_secs_f64();

    let pool = PgPoolOptions::new()
        .max_connections(1)
        .connect(database)
        .await
        .unwrap();
    let started = Instant::now();
    let (mut after, mut direct) = (0i64, 0usize);
    loop {
        let rows = sqlx::query(
            "SELECT log_id, idx, position, recorded_at, payload::text FROM events
             WHERE position > $1 ORDER BY position LIMIT 1000",
        )
        .bind(after)
        .fetch_all(&pool)
        .await
        .unwrap();
        let Some(last) = rows.last() else { break };
        after = last.get::<i64, _>("position");
        direct += rows.len();
    }
    pool.close().await;
    assert_eq!(read, direct, "both read every event");
    (http, direct as f64 / started.elapsed().as_secs_f64())
}

/// Appends (16 clients, payment) with `subscribers` idle streams open (each
/// following a log that never gets an event), and the daemon's RSS growth
/// from opening them (KiB, measured by `rss`).
pub async fn appends_with_idle_subscribers(
    client: &Client,
    subscribers: usize,
    span: Duration,
    rss: impl Fn() -> u64,
) -> (Latencies, i64) {
    let before = rss();
    let nobody = uuid::Uuid::now_v7();
    let mut streams = Vec::new();
    for _ in 0..subscribers {
        // A client of its own: one connection per stream.
        let own = Client::new(client.url());
        streams.push(open_stream(&own, &format!("log_id={nobody}")).await);
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let grown = rss() as i64 - before as i64;
    let appends = own_logs(client, "payment", 16, span).await;
    drop(streams);
    (appends, grown)
}

fn authorized() -> Value {
    json!({"Authorized": {"amount": 1, "approval_code": "bench"}})
}
