//! `/v1/projections`: a reducer run over the feed instead of one log,
//! folding every event that passes a filter into one aggregate.

use axum::extract::{Path, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use utoipa::ToSchema;

use super::AppState;
use super::error::Problem;
use super::extract::Json;
use super::subscriptions::{FilterView, parse_filter};
use crate::log_manager::ProjectionRead;
use crate::store::Projection;

/// A projection to create or redefine.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PutProjection {
    /// The deployed reducer whose active version folds it.
    reducer: String,
    /// Which events of the feed it folds (default: all).
    #[serde(default)]
    filter: FilterView,
}

/// A projection's definition.
#[derive(Debug, Serialize, ToSchema)]
pub struct ProjectionView {
    /// Its name.
    name: String,
    /// The reducer whose active version folds it.
    reducer: String,
    /// Which events it folds.
    filter: FilterView,
    /// When it was created: microseconds since the Unix epoch, UTC.
    created_at_micros: i64,
    /// When its definition last changed.
    updated_at_micros: i64,
}

impl From<Projection> for ProjectionView {
    fn from(p: Projection) -> Self {
        Self {
            name: p.name,
            reducer: p.reducer,
            filter: p.filter.into(),
            created_at_micros: p.created_at,
            updated_at_micros: p.updated_at,
        }
    }
}

/// How far a new version's build is.
#[derive(Debug, Serialize, ToSchema)]
pub struct Building {
    /// The active version being built.
    version: String,
    /// The feed position its build has reached.
    position: u64,
}

/// A projection's aggregate.
#[derive(Debug, Serialize, ToSchema)]
pub struct ProjectionResult {
    /// The projection's definition.
    projection: ProjectionView,
    /// The reducer version that folded `aggregate`.
    version: String,
    /// Every matching event up to this feed position is folded in.
    position: u64,
    /// How many events are folded in.
    events_folded: u64,
    /// Whether this version's state has reached the end of the feed (false
    /// only while no version has: then `aggregate` is partial).
    caught_up: bool,
    /// When this state was saved: microseconds since the Unix epoch, UTC.
    updated_at_micros: i64,
    /// The active version of the reducer.
    active_version: String,
    /// Present while the active version is built in the background and an
    /// older version's result is served.
    #[serde(skip_serializing_if = "Option::is_none")]
    building: Option<Building>,
    /// The aggregate.
    #[schema(value_type = serde_json::Value)]
    aggregate: Box<RawValue>,
}

impl TryFrom<ProjectionRead> for ProjectionResult {
    type Error = Problem;

    fn try_from(read: ProjectionRead) -> Result<Self, Problem> {
        let active_version = read.active_version.to_string();
        Ok(Self {
            projection: read.projection.into(),
            version: read.state.version.to_string(),
            position: read.state.position,
            events_folded: read.state.events,
            caught_up: read.state.caught_up,
            updated_at_micros: read.state.updated_at,
            building: read.building.map(|position| Building {
                version: active_version.clone(),
                position,
            }),
            active_version,
            aggregate: RawValue::from_string(read.state.aggregate)
                .map_err(|e| Problem::internal(&e))?,
        })
    }
}

/// Creates a projection (201) or redefines it (200; its state is rebuilt
/// if the reducer or filter changed).
#[utoipa::path(
    put, path = "/v1/projections/{name}", tag = "projections",
    params(("name" = String, Path, description = "1 to 128 characters of A-Z a-z 0-9 . _ -")),
    request_body = PutProjection,
    responses(
        (status = 201, body = ProjectionView, headers(("Location" = String, description = "the projection"))),
        (status = 200, body = ProjectionView),
        (status = 400, description = "bad name or filter"),
        (status = 404, description = "the reducer is not deployed"),
    )
)]
pub async fn put(
    State(state): State<AppState>,
    Path(name): Path<String>,
    Json(body): Json<PutProjection>,
) -> Result<Response, Problem> {
    let filter = parse_filter(body.filter)?;
    let (projection, created) = state
        .manager
        .put_projection(&name, &body.reducer, &filter)
        .await?;
    let view = axum::Json(ProjectionView::from(projection));
    if !created {
        return Ok(view.into_response());
    }
    let location = HeaderValue::from_str(&format!("/v1/projections/{name}"))
        .map_err(|e| Problem::internal(&e))?;
    Ok((StatusCode::CREATED, [(header::LOCATION, location)], view).into_response())
}

/// Every projection's definition, by name.
#[utoipa::path(
    get, path = "/v1/projections", tag = "projections",
    responses((status = 200, body = Vec<ProjectionView>))
)]
pub async fn list(State(state): State<AppState>) -> Result<Response, Problem> {
    let all = state.manager.projections().await?;
    let views: Vec<ProjectionView> = all.into_iter().map(Into::into).collect();
    Ok(axum::Json(views).into_response())
}

/// The projection's aggregate and the feed position it is current through,
/// folded on by this read for at most the projection budget. While a new
/// reducer version's state is built, the last version's result is served.
#[utoipa::path(
    get, path = "/v1/projections/{name}", tag = "projections",
    params(("name" = String, Path, description = "projection name")),
    responses(
        (status = 200, body = ProjectionResult),
        (status = 404, description = "no such projection, or its reducer is gone"),
        (status = 422, description = "the reducer failed on an event; `failure` names how"),
    )
)]
pub async fn read(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<Response, Problem> {
    let read = state.manager.projection(&name).await?;
    Ok(axum::Json(ProjectionResult::try_from(read)?).into_response())
}

/// Deletes a projection and its states.
#[utoipa::path(
    delete, path = "/v1/projections/{name}", tag = "projections",
    params(("name" = String, Path, description = "projection name")),
    responses((status = 204, description = "deleted"), (status = 404, description = "no such projection"))
)]
pub async fn delete(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<Response, Problem> {
    state.manager.delete_projection(&name).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}
