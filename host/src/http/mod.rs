//! The HTTP API (`/v1`), probes, metrics and the OpenAPI document.
//!
//! Handlers translate HTTP to log-manager and registry calls and back;
//! nothing below them knows about HTTP. One file per resource (`logs`,
//! `feed`, `subscriptions`, `projections`, `reducers`, `probes`), `error`
//! for problem documents, `extract` for request parsing, `auth` for tokens
//! and scopes, `metrics` for request metrics, `console` for the operator
//! console's page. The OpenAPI document is generated from the handlers'
//! annotations (and `openapi` for what every operation shares), so it lists
//! exactly the routes served.

pub mod auth;
mod console;
pub mod error;
mod extract;
mod feed;
mod host_check;
mod json_array;
mod logs;
mod metrics;
mod openapi;
mod probes;
mod projections;
mod reducers;
pub mod server;
mod shed;
mod subscriptions;

use std::time::Duration;

use axum::Router;
use axum::extract::{DefaultBodyLimit, Request};
use axum::http::{HeaderName, StatusCode, header};
use axum::middleware;
use axum::response::{IntoResponse, Response};
use metrics_exporter_prometheus::PrometheusHandle;
use tower_http::limit::RequestBodyLimitLayer;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::TraceLayer;
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::log_manager::LogManager;
use auth::Tokens;
use error::{PROBLEM_JSON, Problem};

pub use metrics::handle as metrics_handle;

/// The header carrying each request's id (set when the client sent none,
/// echoed in the response, recorded in every log line of the request).
const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// What handlers share.
#[derive(Clone)]
pub struct AppState {
    /// Logs and reducers.
    pub manager: LogManager,
    /// Renders `/metrics`.
    pub metrics: PrometheusHandle,
    /// Largest `limit` of an events page.
    pub page_limit_max: u32,
    /// Most events one create or append may carry.
    pub max_events_per_request: u32,
    /// Largest event (its JSON text) a create or append may carry, in bytes.
    pub max_event_bytes: usize,
    /// How often an idle feed stream sends a heartbeat comment.
    pub feed_heartbeat: Duration,
}

/// Limits and access control of a router.
#[derive(Debug, Clone)]
pub struct RouterOptions {
    /// Largest JSON body.
    pub body_limit: usize,
    /// Largest deployed component.
    pub component_limit: usize,
    /// Longest a request may take.
    pub request_timeout: Duration,
    /// Who may do what.
    pub tokens: Tokens,
    /// API requests handled at once; more are answered 503 `overloaded`
    /// at once (probes are not counted).
    pub max_in_flight: usize,
    /// Answer only requests for loopback hosts (421 otherwise): the
    /// DNS-rebinding guard of a daemon without tokens.
    pub loopback_hosts_only: bool,
}

#[derive(OpenApi)]
#[openapi(
    info(title = "eventlogs", description = "Event logs with WebAssembly reducers."),
    tags(
        (name = "logs", description = "create logs, append and read events, reduce"),
        (name = "feed", description = "every log's events in position order: pages and a live stream"),
        (name = "subscriptions", description = "named consumers of the feed with checkpoints"),
        (name = "projections", description = "reducers folding the feed into one aggregate"),
        (name = "reducers", description = "deploy and activate reducer versions"),
        (name = "probes", description = "liveness, readiness, metrics"),
    )
)]
struct ApiDoc;

/// The API's routes and their OpenAPI description, before layers.
fn routes(options: &RouterOptions) -> (Router<AppState>, utoipa::openapi::OpenApi) {
    let logs = OpenApiRouter::new()
        .routes(routes!(logs::create))
        .routes(routes!(logs::metadata))
        .routes(routes!(logs::append))
        .routes(routes!(logs::events))
        .routes(routes!(logs::aggregate))
        .routes(routes!(feed::page))
        .routes(routes!(feed::stream))
        .routes(routes!(subscriptions::list))
        .routes(routes!(
            subscriptions::put,
            subscriptions::describe,
            subscriptions::delete
        ))
        .routes(routes!(subscriptions::events))
        .routes(routes!(subscriptions::checkpoint))
        .routes(routes!(projections::list))
        .routes(routes!(
            projections::put,
            projections::read,
            projections::delete
        ))
        .layer(RequestBodyLimitLayer::new(options.body_limit));
    let reducers = OpenApiRouter::new()
        .routes(routes!(reducers::deploy))
        .routes(routes!(reducers::describe))
        .routes(routes!(reducers::list))
        .layer(RequestBodyLimitLayer::new(options.component_limit))
        .merge(
            OpenApiRouter::new()
                .routes(routes!(reducers::activate))
                .layer(RequestBodyLimitLayer::new(options.body_limit)),
        );
    let protected = logs
        .merge(reducers)
        .routes(routes!(probes::metrics))
        .route_layer(middleware::from_fn_with_state(
            options.tokens.clone(),
            auth::authorize,
        ))
        .route_layer(middleware::from_fn_with_state(
            shed::InFlight::new(options.max_in_flight),
            shed::shed_load,
        ));
    let public = OpenApiRouter::new()
        .routes(routes!(probes::healthz))
        .routes(routes!(probes::readyz));
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .merge(protected)
        .merge(public)
        .route_layer(middleware::from_fn(metrics::record))
        .split_for_parts()
}

/// The whole HTTP service.
pub fn router(state: AppState, options: &RouterOptions) -> Router {
    let (routes, mut api) = routes(options);
    openapi::complete(&mut api);
    let document = axum::Json(api);
    let router = routes
        .route(
            "/openapi.json",
            axum::routing::get(move || async move { document.clone() }),
        )
        .merge(console::routes())
        .fallback(|| async { Problem::for_status(StatusCode::NOT_FOUND) })
        .layer(DefaultBodyLimit::disable())
        .layer(TimeoutLayer::with_status_code(
            StatusCode::SERVICE_UNAVAILABLE,
            options.request_timeout,
        ))
        .layer(middleware::map_response(bare_errors_as_problems))
        .layer(PropagateRequestIdLayer::new(REQUEST_ID))
        .layer(TraceLayer::new_for_http().make_span_with(|request: &Request| {
            let id = request
                .headers()
                .get(REQUEST_ID)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("-");
            tracing::info_span!("request", method = %request.method(), uri = %request.uri(), request_id = %id)
        }))
        .layer(SetRequestIdLayer::new(REQUEST_ID, MakeRequestUuid))
        .layer(middleware::map_request(drop_unfit_request_id))
        .with_state(state);
    if options.loopback_hosts_only {
        router.layer(middleware::from_fn(host_check::loopback_hosts_only))
    } else {
        router
    }
}

/// Drops a client's `x-request-id` that is not 1 to 64 characters of
/// `[A-Za-z0-9._-]`, so that one is generated instead: the id is echoed and
/// written into every log line of the request.
async fn drop_unfit_request_id(mut request: Request) -> Request {
    let fit = request.headers().get(REQUEST_ID).is_none_or(|id| {
        let id = id.as_bytes();
        (1..=64).contains(&id.len())
            && id
                .iter()
                .all(|&b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
    });
    if !fit {
        request.headers_mut().remove(REQUEST_ID);
    }
    request
}

/// Layers (body limit, timeout) and axum itself (wrong method, extractor
/// rejections that are not ours) answer some errors with plain text; give
/// them the problem format every other error has.
async fn bare_errors_as_problems(response: Response) -> Response {
    let status = response.status();
    let is_problem = response
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes() == PROBLEM_JSON.as_bytes());
    if (status.is_client_error() || status.is_server_error()) && !is_problem {
        return Problem::for_status(status).into_response();
    }
    response
}
