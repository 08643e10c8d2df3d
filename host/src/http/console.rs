//! The operator console at `/console`: a page, a script and a style sheet
//! embedded in the binary (`console/`), served as they are. The page calls
//! the API with the token the operator enters, so it needs no access of
//! its own; it is not part of the OpenAPI document.
//!
//! The assets are served with a content security policy that allows only
//! this daemon's own scripts, styles and API (no inline code, no other
//! origin, no framing), so an event payload shown on the page can never
//! run as code there.

use axum::Router;
use axum::http::{HeaderName, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use super::AppState;

const PAGE: &str = include_str!("console/index.html");
const SCRIPT: &str = include_str!("console/console.js");
const STYLE: &str = include_str!("console/console.css");

/// What the console's assets may load and do.
const POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
     connect-src 'self'; img-src 'self'; form-action 'none'; frame-ancestors 'none'; \
     base-uri 'none'";

/// Each asset: its paths, body and media type.
const ASSETS: [(&[&str], &str, &str); 3] = [
    (&["/console", "/console/"], PAGE, "text/html; charset=utf-8"),
    (
        &["/console/console.js"],
        SCRIPT,
        "text/javascript; charset=utf-8",
    ),
    (&["/console/console.css"], STYLE, "text/css; charset=utf-8"),
];

/// The console's routes.
pub(super) fn routes() -> Router<AppState> {
    let mut router = Router::new();
    for (paths, body, content_type) in ASSETS {
        for path in paths {
            router = router.route(path, get(move || async move { asset(body, content_type) }));
        }
    }
    router
}

fn asset(body: &'static str, content_type: &'static str) -> Response {
    let headers = [
        (header::CONTENT_TYPE, HeaderValue::from_static(content_type)),
        (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
        (
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(POLICY),
        ),
        (
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        ),
        (
            header::REFERRER_POLICY,
            HeaderValue::from_static("no-referrer"),
        ),
        (
            HeaderName::from_static("x-frame-options"),
            HeaderValue::from_static("DENY"),
        ),
    ];
    (headers, body).into_response()
}
