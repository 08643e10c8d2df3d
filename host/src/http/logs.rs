//! `/v1/logs`: create a log, append events, read its metadata, a page of
//! its events, and its aggregate.

use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use utoipa::{IntoParams, ToSchema};

use super::AppState;
use super::error::Problem;
use super::extract::{Json, Query, expected_index, idempotency_key, log_id};
use super::json_array;
use crate::Version;
use crate::log_manager::{Append, LogError, Reduction};
use crate::payload::{Payload, PayloadError};
use crate::store::{Events, Written};

/// Default `limit` of an events page.
const DEFAULT_PAGE: u32 = 100;

/// A new log: the reducer it is bound to and its first event or events.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateLog {
    /// The reducer name (its aggregate type), e.g. `payment`.
    reducer: String,
    /// A log id of the caller's choosing (a UUID); by default a new UUIDv7.
    #[schema(format = Uuid)]
    log_id: Option<String>,
    /// The first events, in order. Give `events` or `event`.
    #[schema(value_type = Option<Vec<serde_json::Value>>)]
    events: Option<Vec<Box<RawValue>>>,
    /// The first event alone.
    #[schema(value_type = Option<serde_json::Value>)]
    event: Option<Box<RawValue>>,
}

/// Events to append atomically: `events` (a batch) or `event`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AppendEvents {
    /// Events, stored with contiguous indexes, all or none.
    #[schema(value_type = Option<Vec<serde_json::Value>>)]
    events: Option<Vec<Box<RawValue>>>,
    /// One event.
    #[schema(value_type = Option<serde_json::Value>)]
    event: Option<Box<RawValue>>,
}

/// What a create or append stored.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = Written)]
pub struct WrittenView {
    /// The log written to.
    log_id: String,
    /// Index of the first event stored.
    first_index: u64,
    /// Index of the last event stored; also the response's `ETag`.
    last_index: u64,
    /// Global position of the first event stored (the feed's order).
    first_position: u64,
    /// Global position of the last event stored.
    last_position: u64,
    /// True when this answers a retry with an `Idempotency-Key` already
    /// used for the same request: nothing new was stored.
    replayed: bool,
}

/// A log's metadata.
#[derive(Debug, Serialize, ToSchema)]
pub struct LogMetadata {
    /// The log id.
    log_id: String,
    /// The reducer the log is bound to.
    reducer: String,
    /// When the log was created, microseconds since the Unix epoch (UTC).
    created_at_micros: i64,
    /// Index of the last event.
    last_index: u64,
}

/// One stored event.
#[derive(Debug, Serialize, ToSchema)]
pub struct EventRecord {
    /// 0-based position in the log.
    index: u64,
    /// Position in the whole store: unique, gap-free, increasing in commit
    /// order.
    position: u64,
    /// When the store recorded it, microseconds since the Unix epoch (UTC).
    recorded_at_micros: i64,
    /// The event, byte for byte as sent.
    #[schema(value_type = serde_json::Value)]
    event: Box<RawValue>,
}

/// A page of events: from an index, at most `limit`.
#[derive(Debug, Deserialize, IntoParams)]
pub struct PageQuery {
    /// First index of the page (default 0).
    from: Option<u64>,
    /// Most events in the page (default 100, at most the server's maximum).
    limit: Option<u32>,
}

/// Which reducer version to reduce with.
#[derive(Debug, Deserialize, IntoParams)]
pub struct AggregateQuery {
    /// A stored version (sha256) to reduce with instead of the active one.
    version: Option<String>,
}

/// A log's aggregate.
#[derive(Debug, Serialize, ToSchema)]
pub struct Aggregate {
    /// The log.
    log_id: String,
    /// The reducer name.
    reducer: String,
    /// The reducer version that folded it.
    reducer_version: String,
    /// Index of the last event folded; also the `ETag`, usable as the next
    /// append's `If-Match`.
    through_index: u64,
    /// The aggregate, as the reducer serialised it.
    #[schema(value_type = serde_json::Value)]
    aggregate: Box<RawValue>,
    /// When it was reduced, microseconds since the Unix epoch (UTC).
    reduced_at_micros: i64,
    /// Whether folding resumed from a cached reduction.
    from_cache: bool,
    /// How many events this request folded.
    events_folded: u64,
}

/// Create a log with its first events.
#[utoipa::path(
    post, path = "/v1/logs", tag = "logs",
    request_body = CreateLog,
    params(("Idempotency-Key" = Option<String>, Header, description = "makes a retry return the original result")),
    responses(
        (status = 201, description = "created (or, marked `replayed`, a retry's original result)", body = WrittenView, headers(
            ("ETag" = String, description = "the last index, quoted: the next append's If-Match"),
            ("Location" = String, description = "the log, /v1/logs/{id}"),
            ("Idempotent-Replayed" = String, description = "`true`, present only on a replay"),
        )),
        (status = 400, description = "bad input, e.g. an event holding \\u0000"), (status = 404, description = "unknown reducer"),
        (status = 413, description = "an event longer than --max-event-bytes, or a body over the limit"),
        (status = 409, description = "log id taken"),
        (status = 422, description = "the reducer refused an event (`index` names it), or the key was reused with another body"),
    )
)]
pub async fn create(
    State(state): State<AppState>,
    headers: HeaderMap,
    Json(body): Json<CreateLog>,
) -> Result<Response, Problem> {
    let events = one_or_many(body.events, body.event, &state)?;
    let key = idempotency_key(&headers)?;
    let log_id = body.log_id.as_deref().map(log_id).transpose()?;
    let outcome = state
        .manager
        .create(log_id, &body.reducer, events.clone(), key.as_deref())
        .await;
    written(StatusCode::CREATED, outcome, events.len())
}

/// Append one or more events, atomically.
#[utoipa::path(
    post, path = "/v1/logs/{id}/events", tag = "logs",
    request_body = AppendEvents,
    params(
        ("id" = String, Path, description = "log id"),
        ("If-Match" = Option<String>, Header, description = "the index the log must end at, e.g. \"7\" (an aggregate's ETag)"),
        ("Idempotency-Key" = Option<String>, Header, description = "makes a retry return the original result"),
    ),
    responses(
        (status = 200, description = "appended (or, marked `replayed`, a retry's original result)", body = WrittenView, headers(
            ("ETag" = String, description = "the last index, quoted: the next append's If-Match"),
            ("Location" = String, description = "the log, /v1/logs/{id}"),
            ("Idempotent-Replayed" = String, description = "`true`, present only on a replay"),
        )),
        (status = 400, description = "bad input, e.g. an event holding \\u0000"),
        (status = 413, description = "an event longer than --max-event-bytes, or a body over the limit"),
        (status = 404, description = "unknown log"),
        (status = 412, description = "the log does not end at If-Match; `current_index` says where it ends"),
        (status = 422, description = "the reducer refused an event (`index` names it), or the key was reused with another body"),
    )
)]
pub async fn append(
    State(state): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
    Json(body): Json<AppendEvents>,
) -> Result<Response, Problem> {
    let log_id = log_id(&id)?;
    let events = one_or_many(body.events, body.event, &state)?;
    let key = idempotency_key(&headers)?;
    let outcome = state
        .manager
        .append(Append {
            log_id,
            events: events.clone(),
            expected_last_index: expected_index(&headers)?,
            idempotency_key: key.as_deref(),
        })
        .await;
    written(StatusCode::OK, outcome, events.len())
}

/// A log's metadata.
#[utoipa::path(
    get, path = "/v1/logs/{id}", tag = "logs",
    params(("id" = String, Path, description = "log id")),
    responses(
        (status = 200, body = LogMetadata, headers(("ETag" = String, description = "the last index, quoted"))),
        (status = 400, description = "not a log id"),
        (status = 404, description = "unknown log"),
    )
)]
pub async fn metadata(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Response, Problem> {
    let info = state.manager.info(log_id(&id)?).await?;
    let etag = etag(info.last_index);
    let body = LogMetadata {
        log_id: info.log_id.to_string(),
        reducer: info.reducer,
        created_at_micros: info.created_at,
        last_index: info.last_index,
    };
    Ok(([(header::ETAG, etag)], axum::Json(body)).into_response())
}

/// A page of a log's events, with `Link: rel="next"` when more exist.
#[utoipa::path(
    get, path = "/v1/logs/{id}/events", tag = "logs",
    params(("id" = String, Path, description = "log id"), PageQuery),
    responses(
        (status = 200, body = Vec<EventRecord>, headers(("Link" = String, description = "`<…>; rel=\"next\"`, present when more events follow"))),
        (status = 400, description = "bad from, limit or log id"),
        (status = 404, description = "unknown log"),
    )
)]
pub async fn events(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Query(page): Query<PageQuery>,
) -> Result<Response, Problem> {
    let log_id = log_id(&id)?;
    let from = page.from.unwrap_or(0);
    let limit = page.limit.unwrap_or(DEFAULT_PAGE);
    if limit == 0 || limit > state.page_limit_max {
        return Err(Problem::bad_request(
            "invalid-limit",
            format!("limit must be 1 to {}", state.page_limit_max),
        ));
    }
    if i64::try_from(from).is_err() {
        return Err(Problem::bad_request("invalid-from", "from is too large"));
    }
    // One more than asked tells whether a next page exists.
    let mut stored = state.manager.load(log_id, from, limit + 1).await?;
    // A page is also cut at the page byte budget: one that reached it may
    // have more after it.
    let bytes: usize = stored.iter().map(|e| e.payload.len()).sum();
    let more = stored.len() > limit as usize || bytes as u64 >= state.manager.page_bytes();
    stored.truncate(limit as usize);
    let next = stored.last().map(|e| e.index + 1);
    let records = stored
        .into_iter()
        .map(|e| {
            Ok(EventRecord {
                index: e.index,
                position: e.position,
                recorded_at_micros: e.recorded_at,
                event: RawValue::from_string(e.payload).map_err(|e| Problem::internal(&e))?,
            })
        })
        .collect::<Result<Vec<_>, Problem>>()?;
    let mut response = json_array::streamed(records);
    if let (true, Some(next)) = (more, next) {
        let link = format!("</v1/logs/{log_id}/events?from={next}&limit={limit}>; rel=\"next\"");
        response.headers_mut().insert(
            header::LINK,
            HeaderValue::from_str(&link).map_err(|e| Problem::internal(&e))?,
        );
    }
    Ok(response)
}

/// The log's aggregate, folded by its reducer's active version (or
/// `version`). The `ETag` is the through index.
#[utoipa::path(
    get, path = "/v1/logs/{id}/aggregate", tag = "logs",
    params(("id" = String, Path, description = "log id"), AggregateQuery),
    responses(
        (status = 200, body = Aggregate, headers(("ETag" = String, description = "the through index, quoted: usable as the next append's If-Match"))),
        (status = 400, description = "bad log id or version"),
        (status = 404, description = "unknown log, reducer or version"),
        (status = 422, description = "the reducer failed; `failure` names how"),
    )
)]
pub async fn aggregate(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Query(query): Query<AggregateQuery>,
) -> Result<Response, Problem> {
    let log_id = log_id(&id)?;
    let version = match query.version.as_deref() {
        None => None,
        Some(text) => Some(
            text.parse::<Version>()
                .map_err(|e| Problem::bad_request("invalid-version", e.to_string()))?,
        ),
    };
    let reduction = state.manager.reduce(log_id, version).await?;
    metrics::counter!("eventlogs_reductions_total").increment(1);
    metrics::counter!("eventlogs_folded_events_total").increment(reduction.events_folded);
    let etag = etag(reduction.through_index);
    let body = aggregate_body(reduction)?;
    Ok(([(header::ETAG, etag)], axum::Json(body)).into_response())
}

fn aggregate_body(reduction: Reduction) -> Result<Aggregate, Problem> {
    Ok(Aggregate {
        log_id: reduction.log_id.to_string(),
        reducer: reduction.reducer,
        reducer_version: reduction.reducer_version.to_string(),
        through_index: reduction.through_index,
        aggregate: RawValue::from_string(reduction.aggregate).map_err(|e| Problem::internal(&e))?,
        reduced_at_micros: reduction.reduced_at,
        from_cache: reduction.from_cache,
        events_folded: reduction.events_folded,
    })
}

/// `events` or `event`, exactly one of them, not empty, at most
/// `max_events_per_request`, each storable and at most `max_event_bytes`.
fn one_or_many(
    events: Option<Vec<Box<RawValue>>>,
    event: Option<Box<RawValue>>,
    state: &AppState,
) -> Result<Events, Problem> {
    let max = state.max_events_per_request;
    if let Some(events) = &events
        && events.len() > max as usize
    {
        return Err(Problem::bad_request(
            "too-many-events",
            format!("{} events in one request; at most {max}", events.len()),
        )
        .with("limit", max));
    }
    let raw = match (events, event) {
        (Some(events), None) if !events.is_empty() => events,
        (None, Some(event)) => vec![event],
        _ => {
            return Err(Problem::bad_request(
                "no-events",
                "give a non-empty `events` array or one `event`",
            ));
        }
    };
    if let Some((i, large)) = raw
        .iter()
        .enumerate()
        .find(|(_, raw)| raw.get().len() > state.max_event_bytes)
    {
        return Err(Problem::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "event-too-large",
            "Event too large",
            format!(
                "event {i} of the request has {} bytes; at most {}",
                large.get().len(),
                state.max_event_bytes
            ),
        )
        .with("event", i)
        .with("limit", state.max_event_bytes));
    }
    raw.into_iter()
        .enumerate()
        .map(|(i, raw)| {
            Payload::new(raw).map_err(|error| {
                let kind = match error {
                    PayloadError::Nul => "unstorable-event",
                    PayloadError::NotJson(_) => "malformed-json",
                };
                Problem::bad_request(kind, format!("event {i} of the request: {error}"))
                    .with("event", i)
            })
        })
        .collect()
}

/// The response to a create or append, including an idempotent replay.
fn written(
    status: StatusCode,
    outcome: Result<Written, LogError>,
    events: usize,
) -> Result<Response, Problem> {
    let written = outcome?;
    let appended = written.appended();
    let replayed = written.is_replay();
    if replayed {
        metrics::counter!("eventlogs_idempotent_replays_total").increment(1);
    } else {
        metrics::counter!("eventlogs_appended_events_total").increment(events as u64);
    }
    let body = WrittenView {
        log_id: appended.log_id.to_string(),
        first_index: appended.first_index,
        last_index: appended.last_index,
        first_position: appended.first_position,
        last_position: appended.last_position(),
        replayed,
    };
    let location = format!("/v1/logs/{}", appended.log_id);
    let mut response = (status, axum::Json(body)).into_response();
    let headers = response.headers_mut();
    headers.insert(header::ETAG, etag(appended.last_index));
    headers.insert(
        header::LOCATION,
        HeaderValue::from_str(&location).expect("a log id is a valid header"),
    );
    if replayed {
        headers.insert("idempotent-replayed", HeaderValue::from_static("true"));
    }
    Ok(response)
}

fn etag(index: u64) -> HeaderValue {
    HeaderValue::from_str(&format!("\"{index}\"")).expect("digits are a valid header")
}
