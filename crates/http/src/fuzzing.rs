//! An entry point for fuzzers (`fuzz/`, and a proptest in the default run):
//! every request-decoding function fed from one byte string. Not API.

use hyper::Method;
use hyper::header::{HeaderMap, HeaderName, HeaderValue};

/// Decodes `input` as every part of a request would be decoded. Must never
/// panic, whatever the bytes.
pub fn decode_request(input: &[u8]) {
    // The first bytes pick a method and split the rest into path and body.
    let (&selector, rest) = match input.split_first() {
        Some(split) => split,
        None => return,
    };
    let cut = rest.iter().position(|b| *b == 0).unwrap_or(rest.len());
    let (head, body) = rest.split_at(cut);
    let method = [
        Method::GET,
        Method::POST,
        Method::PATCH,
        Method::DELETE,
        Method::PUT,
    ][usize::from(selector) % 5]
        .clone();
    let path = String::from_utf8_lossy(head);
    let (path, query) = path.split_once('?').unwrap_or((&path, ""));
    if let Ok(matched) = crate::router::route(&method, path) {
        if let Some(raw) = matched.raw_subscriber_id {
            let _ = crate::extract::subscriber_id(raw);
        }
    }
    let _ = crate::extract::fail_if_exists(Some(query));
    let _ = crate::extract::events_query(Some(query));
    let _ = crate::extract::online_query(Some(query));

    let mut headers = HeaderMap::new();
    for name in [
        "authorization",
        "idempotency-key",
        "if-match",
        "content-length",
        "accept",
        "last-event-id",
    ] {
        if let Ok(value) = HeaderValue::from_bytes(head) {
            headers.append(HeaderName::from_static(name), value);
        }
    }
    let _ = crate::extract::idempotency_header(&headers);
    let _ = crate::extract::if_match(&headers);
    let _ = crate::extract::wants_event_stream(&headers);
    let _ = crate::extract::last_event_id(&headers);

    if let Ok(json) = crate::wire::parse_json(body) {
        let _ = crate::wire::presence(&json);
        let _ = crate::wire::create_body(&json, body);
        let _ = crate::wire::session_body(&json, body);
        if let Ok(key) = subscriber_store::IdempotencyKey::new("fuzz") {
            let _ = subscriber_store::Idempotency::for_request(key, &[query], &json);
        }
    }
}
