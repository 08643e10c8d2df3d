//! What the OpenAPI document states for every operation at once, so that
//! standard generators (openapi-python-client, openapi-typescript) produce
//! working clients without hand edits: unique operation ids, the bearer
//! security scheme on every `/v1` route and `/metrics`, the responses any
//! protected route can give (401, 403, 503 with `Retry-After`), and the
//! problem document (`application/problem+json`) as the body of every
//! error response. Per-route bodies, parameters and headers stay on the
//! handlers' annotations.

use utoipa::openapi::path::Operation;
use utoipa::openapi::response::{Response, ResponseBuilder};
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityRequirement, SecurityScheme};
use utoipa::openapi::{ContentBuilder, HeaderBuilder, OpenApi, Ref, RefOr};
use utoipa::{PartialSchema, ToSchema};

use super::error::PROBLEM_JSON;

/// The security scheme's name in the document.
const BEARER: &str = "bearer";

/// An RFC 9457 problem document, as every error response carries it.
///
/// `type` is `urn:eventlogs:problem:KIND`, stable per kind of error (the
/// README lists them); the other members beyond the standard four are
/// extensions present with the kinds that need them.
#[derive(ToSchema)]
#[schema(as = Problem)]
#[expect(dead_code, reason = "describes the document `error::Problem` renders")]
struct ProblemDocument {
    /// `urn:eventlogs:problem:KIND`. The kinds, by status: 400
    /// `malformed-json`, `no-events`, `unstorable-event`, `invalid-log-id`,
    /// `invalid-limit`, `invalid-from`, `invalid-after`,
    /// `invalid-last-event-id`, `invalid-query`, `invalid-if-match`,
    /// `invalid-idempotency-key`, `invalid-version`, `invalid-reducer-name`,
    /// `invalid-subscription-name`, `invalid-projection-name`; 401
    /// `unauthorized`; 403 `forbidden`; 404 `log-not-found`,
    /// `reducer-not-found`, `reducer-version-not-found`,
    /// `subscription-not-found`, `projection-not-found`, `not-found`; 409
    /// `log-exists`; 412 `concurrent-append`; 413 `payload-too-large`,
    /// `event-too-large`; 415 `unsupported-media-type`; 421
    /// `host-not-allowed`; 422 `invalid-body`, `idempotency-key-reused`,
    /// `checkpoint-beyond-feed`, `invalid-reducer`, `deploy-breaks-logs`,
    /// and `reducer-FAILURE` where FAILURE is `rejected-event`,
    /// `undecodable-event`, `undecodable-state`, `unserializable-state`,
    /// `invalid-batch`, `timeout`, `out-of-memory`, `stack-overflow`,
    /// `panic`, `output-too-large`, `invalid-output` or `trap`; 500
    /// `internal`; 503 `unavailable`, `overloaded`, `reducer-busy`.
    /// Extensions named below come with the kinds that need them, and
    /// `limit` (the bound exceeded), `reducer` (`reducer-busy`), `log_id`
    /// and `host`.
    r#type: String,
    /// A short summary of the kind.
    title: String,
    /// The HTTP status.
    status: u16,
    /// What happened in this request.
    detail: String,
    /// `concurrent-append`: the index the log ends at.
    current_index: Option<u64>,
    /// A reducer failure on an event: that event's index.
    index: Option<u64>,
    /// A reducer failure: how it failed (`rejected-event`, `timeout`, …).
    failure: Option<String>,
    /// A reducer failure: the version that failed.
    reducer_version: Option<String>,
    /// `forbidden`: the scope the request needs.
    required_scope: Option<String>,
    /// `unstorable-event`, `event-too-large`: the event's position in the
    /// request.
    event: Option<u64>,
    /// `deploy-breaks-logs`: the logs the new version fails on.
    failing_logs: Option<Vec<String>>,
    /// `deploy-breaks-logs`: how many logs the new version replayed.
    replayed_logs: Option<u64>,
}

/// Adds what every operation shares to `api` (see the module comment).
pub(super) fn complete(api: &mut OpenApi) {
    let components = api.components.get_or_insert_with(Default::default);
    components
        .schemas
        .insert("Problem".into(), ProblemDocument::schema());
    components.add_security_scheme(
        BEARER,
        SecurityScheme::Http(Http::new(HttpAuthScheme::Bearer)),
    );
    for (path, item) in api.paths.paths.iter_mut() {
        let protected = path.starts_with("/v1/") || path == "/metrics";
        let operations = [
            &mut item.get,
            &mut item.put,
            &mut item.post,
            &mut item.delete,
        ];
        for operation in operations.into_iter().flatten() {
            name_uniquely(operation);
            if protected {
                operation.security =
                    Some(vec![SecurityRequirement::new(BEARER, Vec::<String>::new())]);
                add_response(
                    operation,
                    401,
                    "no or unknown bearer token (`unauthorized`)",
                );
                add_response(operation, 403, "the token lacks a scope (`forbidden`)");
                add_response(
                    operation,
                    503,
                    "retry after `Retry-After` seconds: the store is unreachable \
                     (`unavailable`), the daemon is at capacity (`overloaded`) or the \
                     reducer is busy (`reducer-busy`)",
                );
            }
            if operation.request_body.is_some() {
                add_response(
                    operation,
                    400,
                    "malformed body (`malformed-json`) or bad input",
                );
                add_response(
                    operation,
                    413,
                    "the body is over the limit (`payload-too-large`)",
                );
                add_response(
                    operation,
                    415,
                    "wrong Content-Type (`unsupported-media-type`)",
                );
                add_response(
                    operation,
                    422,
                    "valid JSON of the wrong shape (`invalid-body`)",
                );
            }
            for (status, response) in operation.responses.responses.iter_mut() {
                if let RefOr::T(response) = response
                    && is_error(status)
                {
                    describe_problem(status, response);
                }
            }
        }
    }
}

/// Makes `operation`'s id unique in the document: the handler's name under
/// its tag, e.g. `logs_append`, `reducers_list`.
fn name_uniquely(operation: &mut Operation) {
    let tag = operation
        .tags
        .as_ref()
        .and_then(|tags| tags.first())
        .cloned();
    if let (Some(tag), Some(id)) = (tag, operation.operation_id.as_mut())
        && !id.starts_with(&format!("{tag}_"))
    {
        *id = format!("{tag}_{id}");
    }
}

/// Adds a response for `status`, unless the annotation states one.
fn add_response(operation: &mut Operation, status: u16, description: &str) {
    operation
        .responses
        .responses
        .entry(status.to_string())
        .or_insert_with(|| RefOr::T(ResponseBuilder::new().description(description).build()));
}

fn is_error(status: &str) -> bool {
    status.parse::<u16>().is_ok_and(|status| status >= 400)
}

/// Gives an error response the problem document as its body, and a 503
/// its `Retry-After` header.
fn describe_problem(status: &str, response: &mut Response) {
    if response.content.is_empty() {
        response.content.insert(
            PROBLEM_JSON.into(),
            ContentBuilder::new()
                .schema(Some(RefOr::Ref(Ref::from_schema_name("Problem"))))
                .build(),
        );
    }
    if status == "503" {
        response
            .headers
            .entry("Retry-After".into())
            .or_insert_with(|| {
                HeaderBuilder::new()
                    .schema(u32::schema())
                    .description(Some("seconds to wait before retrying"))
                    .build()
            });
    }
}
