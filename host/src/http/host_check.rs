//! DNS-rebinding protection for a daemon without tokens: a web page can make
//! a browser send requests to a loopback daemon under a name the attacker
//! controls, so without tokens only loopback `Host` values are served.

use axum::extract::Request;
use axum::http::header;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::error::Problem;

/// The layer's check: 421 for a request whose host is not a loopback name
/// or address.
pub(crate) async fn loopback_hosts_only(request: Request, next: Next) -> Response {
    let host = request
        .uri()
        .authority()
        .map(|a| a.host().to_owned())
        .or_else(|| {
            request
                .headers()
                .get(header::HOST)
                .and_then(|v| v.to_str().ok())
                .map(|v| host_of(v).to_owned())
        });
    match host {
        Some(host) if !is_loopback(&host) => Problem::misdirected(&host).into_response(),
        _ => next.run(request).await,
    }
}

/// The host part of a `Host` value (without the port).
fn host_of(value: &str) -> &str {
    if let Some(rest) = value.strip_prefix('[') {
        return rest.split(']').next().unwrap_or_default();
    }
    value.rsplit_once(':').map_or(value, |(host, _)| host)
}

/// `localhost`, a name under `.localhost`, or a loopback address.
fn is_loopback(host: &str) -> bool {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let host = host.strip_suffix('.').unwrap_or(host).to_ascii_lowercase();
    host == "localhost"
        || host.ends_with(".localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_loopback_hosts_pass() {
        for value in [
            "localhost",
            "LOCALHOST:8080",
            "app.localhost",
            "127.0.0.1:80",
            "127.1.2.3",
            "[::1]:8080",
            "localhost.",
        ] {
            assert!(is_loopback(host_of(value)), "{value}");
        }
        for value in [
            "evil.example",
            "evil.example:8080",
            "localhost.evil.example",
            "10.0.0.1",
            "[::2]:80",
            "127.0.0.1.nip.io",
        ] {
            assert!(!is_loopback(host_of(value)), "{value}");
        }
    }
}
