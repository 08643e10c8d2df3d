//! Request extractors whose rejections are problem documents, so malformed
//! JSON, a wrong content type, an oversized body or a bad query string is a
//! 4xx in the same format as every other error.

use axum::extract::FromRequest;
use axum::extract::FromRequestParts;
use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::http::HeaderMap;
use axum::http::StatusCode;

use super::error::Problem;
use crate::LogId;

/// A JSON body (`Content-Type: application/json`).
#[derive(Debug, FromRequest)]
#[from_request(via(axum::Json), rejection(Problem))]
pub struct Json<T>(pub T);

/// A query string.
#[derive(Debug, FromRequestParts)]
#[from_request(via(axum::extract::Query), rejection(Problem))]
pub struct Query<T>(pub T);

impl From<JsonRejection> for Problem {
    fn from(rejection: JsonRejection) -> Self {
        let status = rejection.status();
        let kind = match status {
            StatusCode::PAYLOAD_TOO_LARGE => return Problem::for_status(status),
            StatusCode::UNSUPPORTED_MEDIA_TYPE => {
                return Problem::for_status(status).with("expected", "application/json");
            }
            StatusCode::UNPROCESSABLE_ENTITY => "invalid-body",
            _ => "malformed-json",
        };
        Problem::new(status, kind, "Invalid request body", rejection.body_text())
    }
}

impl From<QueryRejection> for Problem {
    fn from(rejection: QueryRejection) -> Self {
        Problem::bad_request("invalid-query", rejection.body_text())
    }
}

/// Parses a log id from a path segment: 400 if it is not a UUID.
pub fn log_id(text: &str) -> Result<LogId, Problem> {
    text.parse().map_err(|_| {
        Problem::bad_request(
            "invalid-log-id",
            format!("{text:?} is not a log id (a hyphenated UUID)"),
        )
    })
}

/// The `Idempotency-Key` header: 1 to 255 visible ASCII characters.
pub fn idempotency_key(headers: &HeaderMap) -> Result<Option<String>, Problem> {
    let Some(value) = headers.get("idempotency-key") else {
        return Ok(None);
    };
    match value.to_str() {
        Ok(key) if (1..=255).contains(&key.len()) && key.bytes().all(|b| b.is_ascii_graphic()) => {
            Ok(Some(key.to_owned()))
        }
        _ => Err(Problem::bad_request(
            "invalid-idempotency-key",
            "Idempotency-Key must be 1 to 255 visible ASCII characters",
        )),
    }
}

/// The `If-Match` header as an expected last index: `"7"` (an ETag from a
/// previous response) or `7`; `*` or no header means no expectation.
pub fn expected_index(headers: &HeaderMap) -> Result<Option<u64>, Problem> {
    let Some(value) = headers.get("if-match") else {
        return Ok(None);
    };
    let text = value.to_str().unwrap_or_default().trim();
    if text == "*" {
        return Ok(None);
    }
    let unquoted = text.trim_start_matches("W/").trim_matches('"');
    unquoted.parse().map(Some).map_err(|_| {
        Problem::bad_request(
            "invalid-if-match",
            "If-Match must be the log's expected last index, e.g. \"7\"",
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn headers(name: &'static str, value: &'static str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(name, HeaderValue::from_static(value));
        headers
    }

    #[test]
    fn if_match_takes_etags_and_numbers() {
        assert_eq!(
            expected_index(&headers("if-match", "\"7\"")).unwrap(),
            Some(7)
        );
        assert_eq!(expected_index(&headers("if-match", "7")).unwrap(), Some(7));
        assert_eq!(expected_index(&headers("if-match", "*")).unwrap(), None);
        assert_eq!(expected_index(&HeaderMap::new()).unwrap(), None);
        assert!(expected_index(&headers("if-match", "\"-1\"")).is_err());
        assert!(expected_index(&headers("if-match", "seven")).is_err());
    }

    #[test]
    fn idempotency_keys_are_bounded_ascii() {
        assert_eq!(
            idempotency_key(&headers("idempotency-key", "abc-1")).unwrap(),
            Some("abc-1".into())
        );
        assert!(idempotency_key(&headers("idempotency-key", "a b")).is_err());
    }
}
