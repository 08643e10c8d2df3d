//! Probes and metrics: `/healthz` (the process answers), `/readyz` (the
//! event store is reachable and migrated) and `/metrics` (Prometheus text).

use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};

use super::AppState;
use super::error::Problem;

/// Liveness: the process is serving.
#[utoipa::path(get, path = "/healthz", tag = "probes", responses((status = 200, description = "alive")))]
pub async fn healthz() -> &'static str {
    "ok\n"
}

/// Readiness: the event store answers and its migrations are applied.
#[utoipa::path(
    get, path = "/readyz", tag = "probes",
    responses((status = 200, description = "ready"), (status = 503, description = "the event store is unreachable"))
)]
pub async fn readyz(State(state): State<AppState>) -> Result<&'static str, Problem> {
    state.manager.ping().await?;
    Ok("ready\n")
}

/// Prometheus metrics.
#[utoipa::path(get, path = "/metrics", tag = "probes", responses((status = 200, description = "Prometheus text format")))]
pub async fn metrics(State(state): State<AppState>) -> Response {
    let counters = state.manager.cache_counters();
    let load = |c: &std::sync::atomic::AtomicU64| c.load(std::sync::atomic::Ordering::Relaxed);
    metrics::counter!("eventlogs_cache_hits_total").absolute(load(&counters.hits));
    metrics::counter!("eventlogs_cache_misses_total").absolute(load(&counters.misses));
    metrics::counter!("eventlogs_cache_errors_total").absolute(load(&counters.errors));
    metrics::counter!("eventlogs_cache_writes_total").absolute(load(&counters.writes));
    metrics::counter!("eventlogs_cache_rejected_total").absolute(load(&counters.rejected));
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        state.metrics.render(),
    )
        .into_response()
}
