//! `/v1/reducers`: deploy a version, list and inspect, activate (rollback).

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use utoipa::IntoParams;
use utoipa::ToSchema;

use super::AppState;
use super::error::Problem;
use super::extract::{Json, Query};
use crate::Version;
use crate::log_manager::DeployOptions;
use crate::registry::ReducerInfo;
use crate::store::catalog::{Activation, StoredVersion};

/// The media type of a deploy's body.
const WASM: &str = "application/wasm";

/// One stored version.
#[derive(Debug, Serialize, ToSchema)]
pub struct VersionView {
    /// The sha256 of the component's bytes.
    version: String,
    /// Its size in bytes.
    size: u64,
    /// When it was first stored, microseconds since the Unix epoch (UTC).
    created_at_micros: i64,
}

/// A reducer name's active version and stored versions.
#[derive(Debug, Serialize, ToSchema)]
pub struct ReducerView {
    /// The name.
    name: String,
    /// The active version.
    active_version: String,
    /// When it was activated, microseconds since the Unix epoch (UTC).
    activated_at_micros: i64,
    /// Every stored version, oldest first.
    versions: Vec<VersionView>,
}

/// The outcome of a deploy, or of a dry run.
#[derive(Debug, Serialize, ToSchema)]
pub struct DeployedView {
    /// The name.
    name: String,
    /// The version now active (the sha256 of the bytes); after a dry run,
    /// the version the deploy would activate.
    version: String,
    /// Its size in bytes.
    size: u64,
    /// False when these bytes had been deployed before (nothing new was
    /// stored; the version was activated again), and after a dry run.
    created: bool,
    /// True when this was a dry run (`?dry_run=true`): nothing was stored
    /// or activated.
    dry_run: bool,
    /// How many existing logs bound to the name the new version replayed
    /// before it was activated.
    replayed_logs: usize,
    /// Logs it failed on, when the deploy was forced.
    failed_logs: Vec<String>,
}

/// How a deploy is checked.
#[derive(Debug, Deserialize, IntoParams)]
pub struct DeployQuery {
    /// Activate even if the new version fails on existing logs.
    force: Option<bool>,
    /// Validate the component and replay the name's logs with it as a
    /// deploy would, answering as the deploy would (200 instead of 201),
    /// but store and activate nothing.
    dry_run: Option<bool>,
}

/// Which version to activate.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ActivateRequest {
    /// A stored version's sha256.
    version: String,
}

/// The active version after an activation.
#[derive(Debug, Serialize, ToSchema)]
pub struct ActivationView {
    /// The name.
    name: String,
    /// The active version.
    active_version: String,
    /// When it was activated, microseconds since the Unix epoch (UTC).
    activated_at_micros: i64,
}

/// Deploy a reducer version (the body is the component) and activate it.
#[utoipa::path(
    put, path = "/v1/reducers/{name}", tag = "reducers",
    request_body(content = Vec<u8>, content_type = "application/wasm"),
    params(("name" = String, Path, description = "reducer name: a-z, 0-9, '-', '_'"), DeployQuery),
    responses(
        (status = 201, description = "stored and activated", body = DeployedView),
        (status = 200, description = "these bytes were already stored; activated. Or, with `dry_run=true`, the deploy would succeed: nothing was stored or activated", body = DeployedView),
        (status = 413, description = "larger than the component limit"),
        (status = 415, description = "not application/wasm"),
        (status = 422, description = "not a valid reducer, or (`deploy-breaks-logs`) it fails on existing logs, listed in `failing_logs`; the active version keeps serving"),
    )
)]
pub async fn deploy(
    State(state): State<AppState>,
    Path(name): Path<String>,
    Query(query): Query<DeployQuery>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, Problem> {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    if content_type != WASM {
        return Err(Problem::for_status(StatusCode::UNSUPPORTED_MEDIA_TYPE).with("expected", WASM));
    }
    let options = DeployOptions {
        force: query.force.unwrap_or(false),
    };
    if query.dry_run.unwrap_or(false) {
        let trial = state.manager.try_deploy(&name, &body, options).await?;
        let body = DeployedView {
            name,
            version: trial.version.to_string(),
            size: trial.size,
            created: false,
            dry_run: true,
            replayed_logs: trial.replayed_logs,
            failed_logs: trial.failed_logs.iter().map(ToString::to_string).collect(),
        };
        return Ok((StatusCode::OK, axum::Json(body)).into_response());
    }
    let outcome = state.manager.deploy(&name, body.to_vec(), options).await;
    let outcome_label = if outcome.is_ok() { "ok" } else { "rejected" };
    metrics::counter!("eventlogs_deploys_total", "outcome" => outcome_label).increment(1);
    let deployment = outcome?;
    let deployed = deployment.deployed;
    let status = if !deployed.created {
        StatusCode::OK
    } else {
        StatusCode::CREATED
    };
    let body = DeployedView {
        name,
        version: deployed.version.version.to_string(),
        size: deployed.version.size,
        created: deployed.created,
        dry_run: false,
        replayed_logs: deployment.replayed_logs,
        failed_logs: deployment
            .failed_logs
            .iter()
            .map(ToString::to_string)
            .collect(),
    };
    Ok((status, axum::Json(body)).into_response())
}

/// Every reducer name, its versions and the active one.
#[utoipa::path(
    get, path = "/v1/reducers", tag = "reducers",
    responses((status = 200, body = Vec<ReducerView>))
)]
pub async fn list(State(state): State<AppState>) -> Result<axum::Json<Vec<ReducerView>>, Problem> {
    let infos = state.manager.reducers().await?;
    Ok(axum::Json(infos.into_iter().map(view).collect()))
}

/// One reducer name's versions and active version.
#[utoipa::path(
    get, path = "/v1/reducers/{name}", tag = "reducers",
    params(("name" = String, Path, description = "reducer name")),
    responses((status = 200, body = ReducerView), (status = 404, description = "no such reducer"))
)]
pub async fn describe(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<axum::Json<ReducerView>, Problem> {
    Ok(axum::Json(view(state.manager.reducer(&name).await?)))
}

/// Activate a stored version (a rollback, or a roll forward again).
#[utoipa::path(
    post, path = "/v1/reducers/{name}/activate", tag = "reducers",
    request_body = ActivateRequest,
    params(("name" = String, Path, description = "reducer name")),
    responses((status = 200, body = ActivationView), (status = 404, description = "no such version"))
)]
pub async fn activate(
    State(state): State<AppState>,
    Path(name): Path<String>,
    Json(request): Json<ActivateRequest>,
) -> Result<axum::Json<ActivationView>, Problem> {
    let version: Version = request
        .version
        .parse()
        .map_err(|e: crate::ParseVersionError| {
            Problem::bad_request("invalid-version", e.to_string())
        })?;
    let activation = state.manager.activate(&name, version).await?;
    Ok(axum::Json(activation_view(activation)))
}

fn view(info: ReducerInfo) -> ReducerView {
    ReducerView {
        name: info.name,
        active_version: info.active.version.to_string(),
        activated_at_micros: info.active.activated_at,
        versions: info.versions.into_iter().map(version_view).collect(),
    }
}

fn version_view(version: StoredVersion) -> VersionView {
    VersionView {
        version: version.version.to_string(),
        size: version.size,
        created_at_micros: version.created_at,
    }
}

fn activation_view(activation: Activation) -> ActivationView {
    ActivationView {
        name: activation.name,
        active_version: activation.version.to_string(),
        activated_at_micros: activation.activated_at,
    }
}
