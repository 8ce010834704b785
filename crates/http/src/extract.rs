//! Pulling typed inputs out of a request: the API key, the path's subscriber
//! id, the idempotency key, `If-Match`, the query, and the body under its
//! size cap. Each failure is already an `ApiError` in the SPEC's terms.

use bytes::Bytes;
use http_body_util::{BodyExt, Limited};
use hyper::StatusCode;
use hyper::body::Incoming;
use hyper::header::{AUTHORIZATION, CONTENT_LENGTH, HeaderMap, IF_MATCH};
use percent_encoding::percent_decode_str;
use subscriber_store::{Error, IdempotencyKey, Store, Tenant, Version, validate_subscriber_id};

use crate::error::{ApiError, from_store};

/// The tenant of the request's `Authorization: ApiKey <key>`.
pub(crate) fn tenant(headers: &HeaderMap, store: &Store) -> Result<Tenant, ApiError> {
    let value = headers
        .get(AUTHORIZATION)
        .ok_or_else(|| ApiError::unauthorized("Missing authorization header"))?;
    let text = String::from_utf8_lossy(value.as_bytes());
    let (scheme, key) = text.split_once(' ').unwrap_or((&text, ""));
    if scheme != "ApiKey" {
        // A long "scheme" is likely a bare key: echo only its start.
        let printable: Vec<char> = scheme.chars().filter(|c| !c.is_control()).collect();
        let shown: String = if printable.len() > 20 {
            printable[..16].iter().collect::<String>() + "..."
        } else {
            printable.into_iter().collect()
        };
        return Err(ApiError::unauthorized(format!(
            "Invalid authentication scheme: \"{shown}\""
        )));
    }
    store.resolve_key(key).map_err(|e| from_store(&e, None))
}

/// The percent-decoded `{subscriberId}`: 400 unless 1 to 255 bytes of UTF-8
/// without control characters.
pub(crate) fn subscriber_id(raw: &str) -> Result<String, ApiError> {
    let id = percent_decode_str(raw)
        .decode_utf8()
        .map_err(|_| ApiError::bad_request("subscriberId must be valid UTF-8"))?;
    validate_subscriber_id(&id).map_err(|e| match e {
        Error::InvalidInput { message, .. } => ApiError::bad_request(message),
        other => from_store(&other, None),
    })?;
    Ok(id.into_owned())
}

/// The `idempotency-key` header: absent, or a valid key. A structured-field
/// quoted string (`"abc"`) is unquoted. Returns the key as sent (for echoing)
/// and the checked key.
pub(crate) fn idempotency_key(
    headers: &HeaderMap,
) -> Result<Option<(String, IdempotencyKey)>, ApiError> {
    let mut values = headers.get_all("idempotency-key").iter();
    let Some(value) = values.next() else {
        return Ok(None);
    };
    let shown = String::from_utf8_lossy(value.as_bytes()).into_owned();
    if values.next().is_some() {
        return Err(ApiError::bad_request(
            "Send one idempotency-key header, not several",
        ));
    }
    let key = unquote(&shown);
    match IdempotencyKey::new(key.clone()) {
        Ok(checked) => Ok(Some((shown, checked))),
        Err(e) => {
            let printable: String = key.chars().filter(|c| !c.is_control()).collect();
            Err(from_store(&e, Some(&printable)))
        }
    }
}

/// `"abc"` -> `abc` (with `\"` and `\\` escapes); anything else unchanged.
fn unquote(value: &str) -> String {
    let Some(inner) = value
        .strip_prefix('"')
        .and_then(|v| v.strip_suffix('"'))
        .filter(|_| value.len() >= 2)
    else {
        return value.to_owned();
    };
    let mut out = String::with_capacity(inner.len());
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        match (c, chars.clone().next()) {
            ('\\', Some(next @ ('"' | '\\'))) => {
                out.push(next);
                chars.next();
            }
            _ => out.push(c),
        }
    }
    out
}

/// `If-Match: "<n>"` or `If-Match: <n>`; absent is `None`; anything else 400.
pub(crate) fn if_match(headers: &HeaderMap) -> Result<Option<Version>, ApiError> {
    let mut values = headers.get_all(IF_MATCH).iter();
    let Some(value) = values.next() else {
        return Ok(None);
    };
    let bad = || {
        ApiError::bad_request("If-Match must be one version of the document, as in If-Match: \"3\"")
    };
    if values.next().is_some() {
        return Err(bad());
    }
    let text = value.to_str().map_err(|_| bad())?.trim();
    let digits = text
        .strip_prefix('"')
        .and_then(|t| t.strip_suffix('"'))
        .unwrap_or(text);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    digits.parse().map(|n| Some(Version(n))).map_err(|_| bad())
}

/// `failIfExists` from the query string (`true`/`false`); 422 otherwise.
pub(crate) fn fail_if_exists(query: Option<&str>) -> Result<bool, ApiError> {
    let mut result = false;
    for pair in query
        .unwrap_or_default()
        .split('&')
        .filter(|p| !p.is_empty())
    {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        if name == "failIfExists" {
            let value = percent_decode_str(value).decode_utf8_lossy();
            result = match value.as_ref() {
                "true" => true,
                "false" => false,
                other => {
                    let mut errors = serde_json::Map::new();
                    errors.insert(
                        "failIfExists".into(),
                        crate::error::field_error(
                            &["failIfExists must be a boolean value"],
                            Some(&serde_json::Value::String(other.into())),
                        ),
                    );
                    return Err(ApiError::validation(errors));
                }
            };
        }
    }
    Ok(result)
}

/// The whole body, refused with 413 once it passes `limit` bytes: at once
/// when `Content-Length` says so, else as soon as the stream does.
pub(crate) async fn body(
    headers: &HeaderMap,
    body: Incoming,
    limit: usize,
) -> Result<Bytes, ApiError> {
    let too_large = || {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("Request body is larger than {limit} bytes"),
        )
    };
    let declared = headers
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(too_large());
    }
    match Limited::new(body, limit).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => Err(too_large()),
        Err(e) => Err(ApiError::bad_request(format!(
            "Could not read the request body: {e}"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hyper::header::HeaderValue;

    fn headers(name: &'static str, value: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(name, HeaderValue::from_str(value).expect("header"));
        h
    }

    #[test]
    fn quoted_keys_are_unquoted() {
        assert_eq!(unquote("\"abc\""), "abc");
        assert_eq!(unquote("\"a\\\"b\\\\c\""), "a\"b\\c");
        assert_eq!(unquote("plain"), "plain");
        assert_eq!(unquote("\""), "\"");
    }

    #[test]
    fn if_match_forms() {
        assert_eq!(
            if_match(&headers("if-match", "\"3\"")).ok(),
            Some(Some(Version(3)))
        );
        assert_eq!(
            if_match(&headers("if-match", "7")).ok(),
            Some(Some(Version(7)))
        );
        assert_eq!(if_match(&HeaderMap::new()).ok(), Some(None));
        for bad in [
            "W/\"3\"",
            "*",
            "\"\"",
            "abc",
            "-1",
            "99999999999999999999999",
        ] {
            assert!(if_match(&headers("if-match", bad)).is_err(), "{bad}");
        }
    }

    #[test]
    fn fail_if_exists_query() {
        assert_eq!(fail_if_exists(None).ok(), Some(false));
        assert_eq!(fail_if_exists(Some("failIfExists=true")).ok(), Some(true));
        assert_eq!(
            fail_if_exists(Some("a=1&failIfExists=false")).ok(),
            Some(false)
        );
        assert!(fail_if_exists(Some("failIfExists=yes")).is_err());
    }
}
