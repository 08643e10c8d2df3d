//! Bearer tokens and scopes.
//!
//! Which scope a request needs is decided in one place, [`required_scope`],
//! from the method and the route, and the check runs as a layer over every
//! API route; probes are merged outside it. Secrets are kept only as sha256
//! digests and looked up by digest, so comparing them leaks nothing about a
//! secret's text.

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::{MatchedPath, Request, State};
use axum::http::{Method, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};

use super::error::Problem;

/// What a token may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Scope {
    /// Read logs, events, aggregates, reducers and metrics.
    Read,
    /// Create logs and append events.
    Write,
    /// Deploy and activate reducers.
    Admin,
}

impl Scope {
    /// The scope's name in configuration and errors.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Read => "read",
            Self::Write => "write",
            Self::Admin => "admin",
        }
    }
}

/// A configured bearer token: the digest of its secret and its scopes.
#[derive(Clone, PartialEq, Eq)]
pub struct Token {
    digest: [u8; 32],
    scopes: Vec<Scope>,
}

impl Token {
    /// A token with this secret and these scopes.
    pub fn new(secret: &str, scopes: &[Scope]) -> Self {
        Self {
            digest: Sha256::digest(secret.as_bytes()).into(),
            scopes: scopes.to_vec(),
        }
    }

    /// Whether the token grants `scope`.
    pub fn allows(&self, scope: Scope) -> bool {
        self.scopes.contains(&scope)
    }
}

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Token")
            .field("scopes", &self.scopes)
            .finish_non_exhaustive()
    }
}

/// The configured tokens. With none, access is open (the daemon then
/// refuses non-loopback addresses unless told otherwise).
#[derive(Debug, Clone, Default)]
pub struct Tokens {
    by_digest: Arc<HashMap<[u8; 32], Token>>,
}

impl Tokens {
    /// These tokens.
    pub fn new(tokens: &[Token]) -> Self {
        Self {
            by_digest: Arc::new(tokens.iter().map(|t| (t.digest, t.clone())).collect()),
        }
    }

    /// Whether any token is configured.
    pub fn is_open(&self) -> bool {
        self.by_digest.is_empty()
    }

    fn find(&self, secret: &str) -> Option<&Token> {
        let digest: [u8; 32] = Sha256::digest(secret.as_bytes()).into();
        self.by_digest.get(&digest)
    }
}

/// The scope a request needs: reading needs `read`; changing reducers needs
/// `admin`; any other change needs `write`. Deny by default: a method this
/// table does not know needs `admin`.
pub fn required_scope(method: &Method, route: &str) -> Scope {
    let reducers = route.starts_with("/v1/reducers");
    match *method {
        Method::GET | Method::HEAD => Scope::Read,
        Method::POST | Method::PUT | Method::PATCH | Method::DELETE if !reducers => Scope::Write,
        _ => Scope::Admin,
    }
}

/// The layer's check: 401 without a known token, 403 without the scope.
pub async fn authorize(State(tokens): State<Tokens>, request: Request, next: Next) -> Response {
    if tokens.is_open() {
        return next.run(request).await;
    }
    let route = request.extensions().get::<MatchedPath>().map_or_else(
        || request.uri().path().to_owned(),
        |p| p.as_str().to_owned(),
    );
    let needed = required_scope(request.method(), &route);
    let presented = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(bearer_secret);
    match presented.and_then(|secret| tokens.find(secret.trim())) {
        None => Problem::unauthorized().into_response(),
        Some(token) if !token.allows(needed) => Problem::forbidden(needed).into_response(),
        Some(_) => next.run(request).await,
    }
}

/// The secret of an `Authorization: Bearer SECRET` value. The scheme name
/// is case-insensitive (RFC 9110 §11.1), and any run of spaces may follow it.
fn bearer_secret(value: &str) -> Option<&str> {
    let (scheme, secret) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| secret.trim_start_matches(' '))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bearer_scheme_is_case_insensitive() {
        for value in ["Bearer s3cret", "bearer s3cret", "BEARER  s3cret"] {
            assert_eq!(bearer_secret(value), Some("s3cret"), "{value}");
        }
        assert_eq!(bearer_secret("Basic s3cret"), None);
        assert_eq!(bearer_secret("Bearers3cret"), None);
    }

    #[test]
    fn scopes_follow_method_and_route() {
        assert_eq!(required_scope(&Method::GET, "/v1/reducers"), Scope::Read);
        assert_eq!(required_scope(&Method::POST, "/v1/logs"), Scope::Write);
        assert_eq!(
            required_scope(&Method::PUT, "/v1/reducers/{name}"),
            Scope::Admin
        );
        assert_eq!(
            required_scope(&Method::POST, "/v1/reducers/{name}/activate"),
            Scope::Admin
        );
        assert_eq!(required_scope(&Method::OPTIONS, "/v1/logs"), Scope::Admin);
    }

    #[test]
    fn tokens_are_found_by_secret_only() {
        let tokens = Tokens::new(&[Token::new("0123456789abcdef", &[Scope::Read])]);
        assert!(tokens.find("0123456789abcdef").is_some());
        assert!(tokens.find("0123456789abcdeF").is_none());
        assert!(!format!("{:?}", tokens).contains("0123"));
    }
}
