//! `/v1/subscriptions`: named subscriptions to the feed, each a filter and
//! a checkpoint kept in the database; a consumer reads the events after
//! its checkpoint, handles them, and moves the checkpoint (at-least-once
//! delivery, resumed from any process after a restart).

use axum::extract::{Path, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::AppState;
use super::error::Problem;
use super::extract::{Json, Query, log_id};
use super::feed::FeedRecord;
use crate::registry::is_valid_name;
use crate::store::{FeedFilter, Subscription};

/// Default `limit` of a subscription's events.
const DEFAULT_PAGE: u32 = 100;

/// Which events a subscription delivers; an empty filter delivers all.
#[derive(Debug, Default, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct FilterView {
    /// Only events of logs bound to this reducer name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    reducer: Option<String>,
    /// Only events of this log.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(format = Uuid)]
    log_id: Option<String>,
}

/// A subscription to create or change.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PutSubscription {
    /// Which events it delivers (default: all).
    #[serde(default)]
    filter: FilterView,
}

/// A checkpoint: the last position the consumer handled.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Checkpoint {
    /// Delivery resumes after this position; at most the feed's last.
    position: u64,
}

/// A subscription.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = Subscription)]
pub struct SubscriptionView {
    /// Its name.
    name: String,
    /// Which events it delivers.
    filter: FilterView,
    /// Its checkpoint: delivery resumes after this position.
    position: u64,
    /// When it was created: microseconds since the Unix epoch, UTC.
    created_at_micros: i64,
    /// When its filter or checkpoint last changed.
    updated_at_micros: i64,
}

impl From<FeedFilter> for FilterView {
    fn from(filter: FeedFilter) -> Self {
        Self {
            reducer: filter.reducer,
            log_id: filter.log_id.map(|l| l.to_string()),
        }
    }
}

impl From<Subscription> for SubscriptionView {
    fn from(s: Subscription) -> Self {
        Self {
            name: s.name,
            filter: s.filter.into(),
            position: s.position,
            created_at_micros: s.created_at,
            updated_at_micros: s.updated_at,
        }
    }
}

/// The events after a subscription's checkpoint.
#[derive(Debug, Serialize, ToSchema)]
pub struct SubscriptionEvents {
    /// The subscription, with the checkpoint the events follow.
    subscription: SubscriptionView,
    /// Events passing its filter after its checkpoint, in position order.
    events: Vec<FeedRecord>,
    /// Every matching event up to this position is in `events`: once they
    /// are handled, checkpoint this position (it may be past the last
    /// event's when the filter skipped others).
    through: u64,
}

/// How many events to read.
#[derive(Debug, Deserialize, IntoParams)]
pub struct EventsQuery {
    /// Most events (default 100, at most the server's maximum).
    limit: Option<u32>,
}

/// Creates a subscription (201, checkpoint 0) or replaces its filter (200,
/// checkpoint kept).
#[utoipa::path(
    put, path = "/v1/subscriptions/{name}", tag = "subscriptions",
    params(("name" = String, Path, description = "1 to 128 characters of A-Z a-z 0-9 . _ -")),
    request_body = PutSubscription,
    responses(
        (status = 201, body = SubscriptionView, headers(("Location" = String, description = "the subscription"))),
        (status = 200, body = SubscriptionView),
        (status = 400, description = "bad name or filter"),
    )
)]
pub async fn put(
    State(state): State<AppState>,
    Path(name): Path<String>,
    Json(body): Json<PutSubscription>,
) -> Result<Response, Problem> {
    let filter = parse_filter(body.filter)?;
    let (subscription, created) = state.manager.put_subscription(&name, &filter).await?;
    let view = axum::Json(SubscriptionView::from(subscription));
    if !created {
        return Ok(view.into_response());
    }
    let location = HeaderValue::from_str(&format!("/v1/subscriptions/{name}"))
        .map_err(|e| Problem::internal(&e))?;
    Ok((StatusCode::CREATED, [(header::LOCATION, location)], view).into_response())
}

pub(super) fn parse_filter(filter: FilterView) -> Result<FeedFilter, Problem> {
    if let Some(reducer) = &filter.reducer
        && !is_valid_name(reducer)
    {
        return Err(Problem::bad_request(
            "invalid-reducer-name",
            format!("{reducer:?} is not a reducer name"),
        ));
    }
    Ok(FeedFilter {
        reducer: filter.reducer,
        log_id: filter.log_id.as_deref().map(log_id).transpose()?,
    })
}

/// Every subscription, by name.
#[utoipa::path(
    get, path = "/v1/subscriptions", tag = "subscriptions",
    responses((status = 200, body = Vec<SubscriptionView>))
)]
pub async fn list(State(state): State<AppState>) -> Result<Response, Problem> {
    let all = state.manager.subscriptions().await?;
    let views: Vec<SubscriptionView> = all.into_iter().map(Into::into).collect();
    Ok(axum::Json(views).into_response())
}

/// A subscription.
#[utoipa::path(
    get, path = "/v1/subscriptions/{name}", tag = "subscriptions",
    params(("name" = String, Path, description = "subscription name")),
    responses((status = 200, body = SubscriptionView), (status = 404, description = "no such subscription"))
)]
pub async fn describe(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<Response, Problem> {
    let subscription = state.manager.subscription(&name).await?;
    Ok(axum::Json(SubscriptionView::from(subscription)).into_response())
}

/// Deletes a subscription.
#[utoipa::path(
    delete, path = "/v1/subscriptions/{name}", tag = "subscriptions",
    params(("name" = String, Path, description = "subscription name")),
    responses((status = 204, description = "deleted"), (status = 404, description = "no such subscription"))
)]
pub async fn delete(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<Response, Problem> {
    state.manager.delete_subscription(&name).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// The events after the subscription's checkpoint. Reading moves nothing;
/// checkpoint `through` once they are handled.
#[utoipa::path(
    get, path = "/v1/subscriptions/{name}/events", tag = "subscriptions",
    params(("name" = String, Path, description = "subscription name"), EventsQuery),
    responses((status = 200, body = SubscriptionEvents), (status = 404, description = "no such subscription"))
)]
pub async fn events(
    State(state): State<AppState>,
    Path(name): Path<String>,
    Query(query): Query<EventsQuery>,
) -> Result<Response, Problem> {
    let limit = query.limit.unwrap_or(DEFAULT_PAGE);
    if limit == 0 || limit > state.page_limit_max {
        return Err(Problem::bad_request(
            "invalid-limit",
            format!("limit must be 1 to {}", state.page_limit_max),
        ));
    }
    let (subscription, page) = state.manager.subscription_events(&name, limit).await?;
    let events = page
        .events
        .into_iter()
        .map(FeedRecord::of)
        .collect::<Result<Vec<_>, Problem>>()?;
    Ok(axum::Json(SubscriptionEvents {
        subscription: subscription.into(),
        events,
        through: page.through,
    })
    .into_response())
}

/// Moves the subscription's checkpoint: delivery resumes after `position`.
#[utoipa::path(
    post, path = "/v1/subscriptions/{name}/checkpoint", tag = "subscriptions",
    params(("name" = String, Path, description = "subscription name")),
    request_body = Checkpoint,
    responses(
        (status = 200, body = SubscriptionView),
        (status = 404, description = "no such subscription"),
        (status = 422, description = "position past the feed's last"),
    )
)]
pub async fn checkpoint(
    State(state): State<AppState>,
    Path(name): Path<String>,
    Json(body): Json<Checkpoint>,
) -> Result<Response, Problem> {
    let subscription = state.manager.checkpoint(&name, body.position).await?;
    Ok(axum::Json(SubscriptionView::from(subscription)).into_response())
}
