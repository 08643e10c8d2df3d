//! `/v1/feed`: every stored event in position order, as pages and as a
//! live Server-Sent Events stream.

use std::convert::Infallible;

use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use utoipa::{IntoParams, ToSchema};

use super::AppState;
use super::error::Problem;
use super::extract::{Query, log_id};
use super::json_array;
use crate::feed::{Follow, Followed};
use crate::registry::is_valid_name;
use crate::store::{FeedEvent, FeedFilter};

/// Default `limit` of a feed page.
const DEFAULT_PAGE: u32 = 100;

/// Which events of the feed, from where.
#[derive(Debug, Deserialize, IntoParams)]
pub struct FeedQuery {
    /// Events after this position (default 0: from the first). On the
    /// stream, a `Last-Event-ID` header takes precedence.
    after: Option<u64>,
    /// Most events in the page (default 100, at most the server's maximum);
    /// not used by the stream.
    limit: Option<u32>,
    /// Only events of logs bound to this reducer name.
    reducer: Option<String>,
    /// Only events of this log.
    log_id: Option<String>,
}

impl FeedQuery {
    fn filter(&self) -> Result<FeedFilter, Problem> {
        if let Some(reducer) = &self.reducer
            && !is_valid_name(reducer)
        {
            return Err(Problem::bad_request(
                "invalid-reducer-name",
                format!("{reducer:?} is not a reducer name"),
            ));
        }
        Ok(FeedFilter {
            reducer: self.reducer.clone(),
            log_id: self.log_id.as_deref().map(log_id).transpose()?,
        })
    }

    fn after(&self) -> Result<u64, Problem> {
        checked_position(self.after.unwrap_or(0), "invalid-after")
    }

    /// The query string of the same filter, for links.
    fn filter_query(&self) -> String {
        let mut query = String::new();
        if let Some(reducer) = &self.reducer {
            query.push_str(&format!("&reducer={reducer}"));
        }
        if let Some(log_id) = &self.log_id {
            query.push_str(&format!("&log_id={log_id}"));
        }
        query
    }
}

/// A position a client sent: at most 2^63 - 1, as the stores keep them.
fn checked_position(position: u64, kind: &str) -> Result<u64, Problem> {
    if i64::try_from(position).is_err() {
        return Err(Problem::bad_request(kind, "a position is at most 2^63 - 1"));
    }
    Ok(position)
}

/// An event of the feed.
#[derive(Debug, Serialize, ToSchema)]
pub struct FeedRecord {
    /// The log the event belongs to.
    log_id: String,
    /// Its index in the log.
    index: u64,
    /// Its position in the feed (unique, gap-free, in commit order); the
    /// stream's event id.
    position: u64,
    /// When it was recorded: microseconds since the Unix epoch, UTC.
    recorded_at_micros: i64,
    /// The reducer name its log is bound to.
    reducer: String,
    /// The event, exactly as stored.
    #[schema(value_type = serde_json::Value)]
    event: Box<RawValue>,
}

impl FeedRecord {
    pub(super) fn of(event: FeedEvent) -> Result<Self, Problem> {
        Ok(Self {
            log_id: event.event.log_id.to_string(),
            index: event.event.index,
            position: event.event.position,
            recorded_at_micros: event.event.recorded_at,
            reducer: event.reducer,
            // Stored payloads are JSON; a row that is not is a corrupt store.
            event: RawValue::from_string(event.event.payload).map_err(|e| Problem::internal(&e))?,
        })
    }
}

/// A page of the feed: events of every log (or those passing the filter)
/// after a position, in position order, with `Link: rel="next"` while
/// more are stored.
#[utoipa::path(
    get, path = "/v1/feed", tag = "feed",
    params(FeedQuery),
    responses(
        (status = 200, body = Vec<FeedRecord>, headers(("Link" = String, description = "rel=\"next\": the next page, while more events are stored"))),
        (status = 400, description = "bad after, limit, reducer or log_id"),
    )
)]
pub async fn page(
    State(state): State<AppState>,
    Query(query): Query<FeedQuery>,
) -> Result<Response, Problem> {
    let filter = query.filter()?;
    let after = query.after()?;
    let limit = query.limit.unwrap_or(DEFAULT_PAGE);
    if limit == 0 || limit > state.page_limit_max {
        return Err(Problem::bad_request(
            "invalid-limit",
            format!("limit must be 1 to {}", state.page_limit_max),
        ));
    }
    let page = state.manager.feed_page(after, &filter, limit).await?;
    let (through, head) = (page.through, page.head);
    let records = page
        .events
        .into_iter()
        .map(FeedRecord::of)
        .collect::<Result<Vec<_>, Problem>>()?;
    let mut response = json_array::streamed(records);
    if through < head {
        let link = format!(
            "</v1/feed?after={through}&limit={limit}{}>; rel=\"next\"",
            query.filter_query()
        );
        response.headers_mut().insert(
            header::LINK,
            HeaderValue::from_str(&link).map_err(|e| Problem::internal(&e))?,
        );
    }
    Ok(response)
}

/// The feed live, as Server-Sent Events: each event's `id` is its position
/// and its `data` the record a feed page holds. It starts after `after`
/// (or after the `Last-Event-ID` a reconnecting client sends), catches up
/// from the store and then follows new events as they are committed, with
/// a comment line as heartbeat while idle. A client that reads too slowly
/// to stay within the server's buffer gets a `lagged` comment and the end
/// of the stream, and resumes with `Last-Event-ID`.
#[utoipa::path(
    get, path = "/v1/feed/stream", tag = "feed",
    params(
        FeedQuery,
        ("Last-Event-ID" = Option<String>, Header, description = "resume after this position (an event's id)"),
    ),
    responses(
        (status = 200, content_type = "text/event-stream", description = "`id: POSITION` and `data: RECORD` per event; comments as heartbeats"),
        (status = 400, description = "bad after, Last-Event-ID, reducer or log_id"),
    )
)]
pub async fn stream(
    State(state): State<AppState>,
    headers: HeaderMap,
    Query(query): Query<FeedQuery>,
) -> Result<Response, Problem> {
    let filter = query.filter()?;
    let after = match last_event_id(&headers)? {
        Some(after) => after,
        None => query.after()?,
    };
    let follow = state.manager.follow(after, filter);
    let events =
        futures_util::stream::unfold(follow, next_events).flat_map(futures_util::stream::iter);
    Ok(Sse::new(events)
        .keep_alive(KeepAlive::new().interval(state.feed_heartbeat))
        .into_response())
}

/// The `Last-Event-ID` header as a position, if sent and not empty.
fn last_event_id(headers: &HeaderMap) -> Result<Option<u64>, Problem> {
    let Some(value) = headers.get("last-event-id") else {
        return Ok(None);
    };
    let text = value.to_str().unwrap_or("").trim();
    if text.is_empty() {
        return Ok(None);
    }
    let position = text.parse().map_err(|_| {
        Problem::bad_request(
            "invalid-last-event-id",
            format!("Last-Event-ID {text:?} is not a position this server sent"),
        )
    })?;
    checked_position(position, "invalid-last-event-id").map(Some)
}

/// The next SSE events of a follower.
async fn next_events(mut follow: Follow) -> Option<(Vec<Result<Event, Infallible>>, Follow)> {
    let events = match follow.next().await? {
        Followed::Events(events) => events.iter().map(|event| Ok(sse_event(event))).collect(),
        Followed::Lagged => vec![Ok(Event::default().comment(
            "lagged: this client fell behind the server's buffer; reconnect with Last-Event-ID",
        ))],
        Followed::Failed(error) => {
            tracing::warn!(%error, "feed stream ended: store unavailable");
            vec![Ok(Event::default().comment(
                "unavailable: the event store failed; reconnect with Last-Event-ID",
            ))]
        }
    };
    Some((events, follow))
}

fn sse_event(event: &FeedEvent) -> Event {
    // From the moment the event was recorded (before its commit) to now.
    let age_micros = crate::clock::now_micros().saturating_sub(event.event.recorded_at);
    metrics::histogram!("eventlogs_feed_delivery_seconds").record(age_micros.max(0) as f64 / 1e6);
    let id = event.event.position.to_string();
    let data = FeedRecord::of(event.clone())
        .and_then(|record| serde_json::to_string(&record).map_err(|e| Problem::internal(&e)));
    match data {
        Ok(data) => Event::default().id(id).data(data),
        // Never for a store's own rows; the id still lets the client go on.
        Err(_) => Event::default().id(id).comment("unreadable event"),
    }
}
