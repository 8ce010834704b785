//! The route table: every (method, path pattern) the server answers, and the
//! matching of a request path to it (404 for unknown paths, 405 with `Allow`
//! for a known path with another method).

use hyper::{Method, StatusCode};

use crate::error::ApiError;

/// What a request asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Endpoint {
    UpdateOnlineStatus,
    CreateV1,
    CreateV2,
    Retrieve,
    Delete,
    PresenceEvents,
    PresenceOnline,
    PresenceStats,
    EnvironmentMe,
    InboxSession,
    HealthCheck,
    Ready,
    Metrics,
    OpenApi,
}

/// Every route, as the OpenAPI document names it.
pub const ROUTES: &[(Method, &str, Endpoint)] = &[
    (
        Method::PATCH,
        "/v1/subscribers/{subscriberId}/online-status",
        Endpoint::UpdateOnlineStatus,
    ),
    (Method::POST, "/v1/subscribers", Endpoint::CreateV1),
    (Method::POST, "/v2/subscribers", Endpoint::CreateV2),
    (
        Method::GET,
        "/v1/subscribers/{subscriberId}",
        Endpoint::Retrieve,
    ),
    (
        Method::GET,
        "/v2/subscribers/{subscriberId}",
        Endpoint::Retrieve,
    ),
    (
        Method::DELETE,
        "/v1/subscribers/{subscriberId}",
        Endpoint::Delete,
    ),
    (
        Method::DELETE,
        "/v2/subscribers/{subscriberId}",
        Endpoint::Delete,
    ),
    (Method::GET, "/v1/presence/events", Endpoint::PresenceEvents),
    (Method::GET, "/v1/presence/online", Endpoint::PresenceOnline),
    (Method::GET, "/v1/presence/stats", Endpoint::PresenceStats),
    (Method::GET, "/v1/environments/me", Endpoint::EnvironmentMe),
    (Method::POST, "/v1/inbox/session", Endpoint::InboxSession),
    (Method::GET, "/v1/health-check", Endpoint::HealthCheck),
    (Method::GET, "/ready", Endpoint::Ready),
    (Method::GET, "/metrics", Endpoint::Metrics),
    (Method::GET, "/openapi.json", Endpoint::OpenApi),
];

/// A matched route and its raw (still percent-encoded) path parameter.
#[derive(Debug)]
pub(crate) struct Matched<'a> {
    pub endpoint: Endpoint,
    /// The route pattern, for fingerprints and logs.
    pub pattern: &'static str,
    pub raw_subscriber_id: Option<&'a str>,
}

/// Matches `path` against one pattern; returns the `{subscriberId}` segment.
fn matches<'a>(pattern: &str, path: &'a str) -> Option<Option<&'a str>> {
    let mut captured = None;
    let mut want = pattern.split('/');
    let mut have = path.split('/');
    loop {
        match (want.next(), have.next()) {
            (None, None) => return Some(captured),
            (Some("{subscriberId}"), Some(segment)) => captured = Some(segment),
            (Some(w), Some(h)) if w == h => {}
            _ => return None,
        }
    }
}

pub(crate) fn route<'a>(method: &Method, path: &'a str) -> Result<Matched<'a>, ApiError> {
    let mut allowed: Vec<&str> = Vec::new();
    for (m, pattern, endpoint) in ROUTES {
        if let Some(raw_subscriber_id) = matches(pattern, path) {
            if m == method {
                return Ok(Matched {
                    endpoint: *endpoint,
                    pattern,
                    raw_subscriber_id,
                });
            }
            allowed.push(m.as_str());
        }
    }
    if allowed.is_empty() {
        Err(ApiError::new(
            StatusCode::NOT_FOUND,
            format!("Cannot {method} {path}"),
        ))
    } else {
        Err(ApiError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            format!("Method {method} is not allowed on {path}"),
        )
        .with_allow(allowed.join(", ")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_match_and_capture_the_id() {
        let m = route(&Method::PATCH, "/v1/subscribers/a%20b/online-status").expect("match");
        assert_eq!(m.endpoint, Endpoint::UpdateOnlineStatus);
        assert_eq!(m.raw_subscriber_id, Some("a%20b"));
        let m = route(&Method::GET, "/v2/subscribers/x").expect("match");
        assert_eq!(m.endpoint, Endpoint::Retrieve);
        let m = route(&Method::GET, "/v1/presence/events").expect("match");
        assert_eq!(m.endpoint, Endpoint::PresenceEvents);
        assert_eq!(m.raw_subscriber_id, None);
        assert_eq!(
            route(&Method::POST, "/v1/presence/online")
                .expect_err("405")
                .allow(),
            Some("GET")
        );
        assert_eq!(
            route(&Method::GET, "/v1/subscribers/")
                .expect("empty id")
                .raw_subscriber_id,
            Some("")
        );
    }

    #[test]
    fn unknown_paths_are_404_and_wrong_methods_405() {
        assert_eq!(
            route(&Method::GET, "/nope").expect_err("404").status,
            StatusCode::NOT_FOUND
        );
        assert_eq!(
            route(&Method::GET, "/v1/subscribers/x/online-status/extra")
                .expect_err("404")
                .status,
            StatusCode::NOT_FOUND
        );
        let e = route(&Method::PUT, "/v1/subscribers/x").expect_err("405");
        assert_eq!(e.status, StatusCode::METHOD_NOT_ALLOWED);
        assert_eq!(e.allow(), Some("GET, DELETE"));
    }
}
