//! The baseline: raw sqlx doing the same single-row inserts the daemon's
//! appends store, with the same concurrency, on the same server.

use std::time::Duration;

use sqlx::postgres::PgPoolOptions;

use crate::load::{Latencies, run_timed};

/// `tasks` tasks inserting one event row each per statement (autocommit)
/// into a table shaped like `events`, each on its own log, for `span`.
pub async fn inserts(database: &str, tasks: usize, span: Duration) -> Latencies {
    // At most 32 connections, like the daemon's pool (and so that the
    // daemon, both baselines and the server's limit of 100 fit together).
    let pool = PgPoolOptions::new()
        .max_connections(tasks.min(32) as u32)
        .connect(database)
        .await
        .unwrap();
    sqlx::query(
        "CREATE TABLE IF NOT EXISTS baseline_events (
             log_id uuid NOT NULL, idx bigint NOT NULL,
             recorded_at timestamptz NOT NULL DEFAULT clock_timestamp(),
             payload jsonb NOT NULL, PRIMARY KEY (log_id, idx))",
    )
    .execute(&pool)
    .await
    .unwrap();
    let payload = serde_json::json!({"Authorized": {"amount": 1, "approval_code": "bench"}});
    let logs: Vec<uuid::Uuid> = (0..tasks).map(|_| uuid::Uuid::now_v7()).collect();
    let next = std::sync::Arc::new(
        (0..tasks)
            .map(|_| std::sync::atomic::AtomicI64::new(0))
            .collect::<Vec<_>>(),
    );
    let closing = pool.clone();
    let latencies = run_timed(tasks, span, move |task, _| {
        let (pool, payload, next) = (pool.clone(), payload.clone(), next.clone());
        let log = logs[task];
        async move {
            let idx = next[task].fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            sqlx::query("INSERT INTO baseline_events (log_id, idx, payload) VALUES ($1, $2, $3)")
                .bind(log)
                .bind(idx)
                .bind(&payload)
                .execute(&pool)
                .await
                .unwrap();
        }
    })
    .await;
    closing.close().await;
    latencies
}
