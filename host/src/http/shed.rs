//! Load shedding: a cap on API requests in flight. A request over the cap
//! is answered at once with 503 `overloaded` and `Retry-After`, instead of
//! queueing until every request times out.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use tokio::sync::Semaphore;

use super::error::Problem;

/// The requests in flight, out of a fixed number of slots.
#[derive(Debug, Clone)]
pub(crate) struct InFlight {
    slots: Arc<Semaphore>,
    limit: usize,
}

impl InFlight {
    /// Room for `limit` requests at once (at least one).
    pub(crate) fn new(limit: usize) -> Self {
        let limit = limit.max(1);
        Self {
            slots: Arc::new(Semaphore::new(limit)),
            limit,
        }
    }
}

/// The layer's check: a slot for the request's duration, or 503.
pub(crate) async fn shed_load(
    State(in_flight): State<InFlight>,
    request: Request,
    next: Next,
) -> Response {
    match in_flight.slots.clone().try_acquire_owned() {
        Ok(_slot) => next.run(request).await,
        Err(_) => {
            metrics::counter!("eventlogs_requests_shed_total").increment(1);
            Problem::overloaded(in_flight.limit).into_response()
        }
    }
}
