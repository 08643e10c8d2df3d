//! Errors as RFC 9457 problem documents (`application/problem+json`).
//!
//! Every kind has a stable `type` URN (`urn:eventlogs:problem:KIND`), listed
//! in the README, and machine-readable extensions where a client needs them
//! (`current_index`, `failure`, `index`). Internal error text never reaches a
//! client: it is logged once, inside the request's span (which carries its
//! request id), and the client sees a generic detail.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value, json};

use super::auth::Scope;
use crate::log_manager::{DeployError, LogError, ProjectionError, SubscriptionError};
use crate::registry::RegistryError;
use crate::runtime::{FailureKind, InvalidComponent, ReducerError};
use crate::store::StoreError;

/// The media type of problem documents.
pub const PROBLEM_JSON: &str = "application/problem+json";

/// Seconds a client should wait before retrying after a 503.
const RETRY_AFTER_SECS: u32 = 1;

/// An error response.
#[derive(Debug, Clone)]
pub struct Problem {
    status: StatusCode,
    kind: String,
    title: &'static str,
    detail: String,
    extensions: Map<String, Value>,
}

impl Problem {
    /// A problem of `kind` (the last part of its type URN).
    pub fn new(
        status: StatusCode,
        kind: impl Into<String>,
        title: &'static str,
        detail: impl Into<String>,
    ) -> Self {
        Self {
            status,
            kind: kind.into(),
            title,
            detail: detail.into(),
            extensions: Map::new(),
        }
    }

    /// Adds a machine-readable member.
    pub fn with(mut self, name: &str, value: impl Into<Value>) -> Self {
        self.extensions.insert(name.to_owned(), value.into());
        self
    }

    /// The response status.
    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// The request was malformed (`kind` says how).
    pub fn bad_request(kind: &str, detail: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, kind, "Bad request", detail)
    }

    /// No usable bearer token.
    pub fn unauthorized() -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "Missing or unknown bearer token",
            "send Authorization: Bearer <token>",
        )
    }

    /// The token lacks a scope.
    pub fn forbidden(needed: Scope) -> Self {
        Self::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            "Token lacks a scope",
            format!("this request needs the {:?} scope", needed.as_str()),
        )
        .with("required_scope", needed.as_str())
    }

    /// The store or another dependency is down; retry shortly.
    pub fn unavailable() -> Self {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "Service unavailable",
            "the event store is unreachable; retry shortly",
        )
    }

    /// The request named a host this daemon does not answer for (without
    /// tokens, only loopback names and addresses).
    pub fn misdirected(host: &str) -> Self {
        Self::new(
            StatusCode::MISDIRECTED_REQUEST,
            "host-not-allowed",
            "Host not allowed",
            "without tokens this daemon only answers requests for loopback hosts \
             (localhost, 127.0.0.1, [::1]); configure --token to serve other names",
        )
        .with("host", host.chars().take(255).collect::<String>())
    }

    /// Every reducer instance slot is in use; retry shortly.
    pub fn instances_busy() -> Self {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "Service unavailable",
            "every reducer instance is busy; retry shortly",
        )
    }

    /// More requests are in flight than the daemon takes at once; retry
    /// shortly.
    pub fn overloaded(limit: usize) -> Self {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "overloaded",
            "Overloaded",
            format!("{limit} requests are already in flight; retry shortly"),
        )
    }

    /// A bug or an unexpected failure: logged with `error`, never echoed.
    pub fn internal(error: &dyn std::fmt::Display) -> Self {
        tracing::error!(%error, "internal error");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "Internal error",
            "the error was logged with this request's id",
        )
    }

    /// The problem for a response that a layer produced without a body
    /// (body limit, timeout, unknown route, wrong method).
    pub fn for_status(status: StatusCode) -> Self {
        let (kind, title, detail) = match status {
            StatusCode::PAYLOAD_TOO_LARGE => (
                "payload-too-large",
                "Request body too large",
                "the body exceeds this route's size limit",
            ),
            StatusCode::REQUEST_TIMEOUT | StatusCode::GATEWAY_TIMEOUT => (
                "timeout",
                "Request timed out",
                "the request took longer than the server allows",
            ),
            StatusCode::NOT_FOUND => ("not-found", "Not found", "no such route"),
            StatusCode::METHOD_NOT_ALLOWED => (
                "method-not-allowed",
                "Method not allowed",
                "this route does not accept this method",
            ),
            StatusCode::UNSUPPORTED_MEDIA_TYPE => (
                "unsupported-media-type",
                "Unsupported media type",
                "wrong Content-Type for this route",
            ),
            StatusCode::SERVICE_UNAVAILABLE => (
                "unavailable",
                "Service unavailable",
                "the server could not answer in time; retry shortly",
            ),
            _ if status.is_server_error() => ("internal", "Internal error", "unexpected failure"),
            _ => (
                "bad-request",
                "Bad request",
                "the request was not understood",
            ),
        };
        Self::new(status, kind, title, detail)
    }
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let mut body = json!({
            "type": format!("urn:eventlogs:problem:{}", self.kind),
            "title": self.title,
            "status": self.status.as_u16(),
            "detail": self.detail,
        });
        if let Value::Object(members) = &mut body {
            members.extend(self.extensions);
        }
        let mut response = (self.status, axum::Json(body)).into_response();
        let headers = response.headers_mut();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON));
        if self.status == StatusCode::SERVICE_UNAVAILABLE {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(RETRY_AFTER_SECS));
        }
        response
    }
}

impl From<StoreError> for Problem {
    fn from(error: StoreError) -> Self {
        match error {
            StoreError::LogNotFound(id) => Self::new(
                StatusCode::NOT_FOUND,
                "log-not-found",
                "Log not found",
                format!("no log {id}"),
            )
            .with("log_id", id.to_string()),
            StoreError::LogExists(id) => Self::new(
                StatusCode::CONFLICT,
                "log-exists",
                "Log already exists",
                format!("log {id} already exists"),
            )
            .with("log_id", id.to_string()),
            StoreError::ConcurrentAppend { current_last_index } => Self::new(
                StatusCode::PRECONDITION_FAILED,
                "concurrent-append",
                "Log does not end at the expected index",
                format!("the log's last index is {current_last_index}"),
            )
            .with("current_index", current_last_index),
            StoreError::IdempotencyKeyReused => Self::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "idempotency-key-reused",
                "Idempotency key reused",
                "this Idempotency-Key was used for a different request",
            ),
            StoreError::NoEvents => {
                Self::bad_request("no-events", "at least one event is required")
            }
            StoreError::Unstorable(message) => {
                tracing::info!(error = %message, "the database refused a request's data");
                Self::bad_request(
                    "unstorable-event",
                    "the database cannot store a value in this request",
                )
            }
            StoreError::Unavailable(message) => {
                tracing::warn!(error = %message, "event store unavailable");
                Self::unavailable()
            }
        }
    }
}

impl From<ReducerError> for Problem {
    fn from(error: ReducerError) -> Self {
        let kind = error.kind.name();
        if matches!(error.kind, FailureKind::Instantiation(_)) {
            tracing::warn!(%error, "no reducer instance available");
            return Self::instances_busy();
        }
        let mut problem = Self::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            format!("reducer-{kind}"),
            "Reducer failed",
            error.to_string(),
        )
        .with("failure", kind)
        .with("reducer_version", error.version.to_string());
        if let FailureKind::UndecodableEvent { index, .. }
        | FailureKind::RejectedEvent { index, .. } = error.kind
        {
            problem = problem.with("index", index);
        }
        metrics::counter!("eventlogs_reducer_failures_total", "kind" => kind).increment(1);
        problem
    }
}

impl From<RegistryError> for Problem {
    fn from(error: RegistryError) -> Self {
        match error {
            RegistryError::InvalidName(_) => {
                Self::bad_request("invalid-reducer-name", error.to_string())
            }
            // The trial run found every instance slot busy: not the
            // component's fault, and worth retrying.
            RegistryError::Invalid(InvalidComponent::InitFailed(ReducerError {
                kind: FailureKind::Instantiation(message),
                ..
            })) => {
                tracing::warn!(error = %message, "no reducer instance free for a deploy's trial run");
                Self::instances_busy()
            }
            RegistryError::Invalid(invalid) => Self::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid-reducer",
                "Not a valid reducer",
                invalid.to_string(),
            ),
            RegistryError::ReducerNotFound(name) => reducer_not_found(&name),
            RegistryError::VersionNotFound(name, version) => Self::new(
                StatusCode::NOT_FOUND,
                "reducer-version-not-found",
                "Reducer version not found",
                format!("reducer {name:?} has no version {version}"),
            ),
            RegistryError::Store(error) => error.into(),
        }
    }
}

impl From<LogError> for Problem {
    fn from(error: LogError) -> Self {
        match error {
            LogError::Store(error) => error.into(),
            LogError::ReducerNotFound(name) => reducer_not_found(&name),
            LogError::VersionNotFound(name, version) => {
                RegistryError::VersionNotFound(name, version).into()
            }
            LogError::Reducer(error) => error.into(),
            LogError::Registry(error) => error.into(),
            LogError::Deploy(error) => deploy_refused(&error),
            LogError::ReducerBusy { reducer, limit } => Self::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "reducer-busy",
                "Reducer busy",
                format!("reducer {reducer:?} already runs {limit} folds at once; retry shortly"),
            )
            .with("reducer", reducer),
            LogError::Subscription(error) => subscription_refused(&error),
            LogError::Projection(error) => projection_refused(&error),
        }
    }
}

fn projection_refused(error: &ProjectionError) -> Problem {
    match error {
        ProjectionError::InvalidName => {
            Problem::bad_request("invalid-projection-name", error.to_string())
        }
        ProjectionError::NotFound(name) => Problem::new(
            StatusCode::NOT_FOUND,
            "projection-not-found",
            "Projection not found",
            error.to_string(),
        )
        .with("projection", name.as_str()),
    }
}

fn subscription_refused(error: &SubscriptionError) -> Problem {
    match error {
        SubscriptionError::InvalidName => {
            Problem::bad_request("invalid-subscription-name", error.to_string())
        }
        SubscriptionError::NotFound(name) => Problem::new(
            StatusCode::NOT_FOUND,
            "subscription-not-found",
            "Subscription not found",
            error.to_string(),
        )
        .with("subscription", name.as_str()),
        SubscriptionError::BeyondFeed { position, head } => Problem::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "checkpoint-beyond-feed",
            "Checkpoint past the feed",
            error.to_string(),
        )
        .with("position", *position)
        .with("feed_position", *head),
    }
}

fn reducer_not_found(name: &str) -> Problem {
    Problem::new(
        StatusCode::NOT_FOUND,
        "reducer-not-found",
        "Reducer not found",
        format!("no reducer named {name:?} is deployed"),
    )
}

/// A deploy whose new version fails on existing logs: each failing log with
/// how the reducer failed on it.
fn deploy_refused(error: &DeployError) -> Problem {
    let failing: Vec<Value> = error
        .failures
        .iter()
        .map(|(log_id, failure)| {
            let mut entry = json!({
                "log_id": log_id.to_string(),
                "failure": failure.kind.name(),
                "detail": failure.to_string(),
            });
            if let FailureKind::UndecodableEvent { index, .. }
            | FailureKind::RejectedEvent { index, .. } = failure.kind
            {
                entry["index"] = index.into();
            }
            entry
        })
        .collect();
    Problem::new(
        StatusCode::UNPROCESSABLE_ENTITY,
        "deploy-breaks-logs",
        "New version fails on existing logs",
        format!("{error}; nothing was activated (deploy with ?force=true to activate anyway)"),
    )
    .with("version", error.version.to_string())
    .with("replayed_logs", error.replayed_logs)
    .with("failing_logs", failing)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn data_the_database_refuses_is_a_400_that_leaks_nothing() {
        let problem = Problem::from(StoreError::Unstorable("secret table detail".into()));
        assert_eq!(problem.status(), StatusCode::BAD_REQUEST);
        assert_eq!(problem.kind, "unstorable-event");
        assert!(!problem.detail.contains("secret"));
        let outage = Problem::from(StoreError::Unavailable("secret".into()));
        assert_eq!(outage.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert!(!outage.detail.contains("secret"));
    }
}
