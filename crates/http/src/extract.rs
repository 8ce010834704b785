//! Pulling typed inputs out of a request: the API key, the path's subscriber
//! id, the idempotency key, `If-Match`, the query, and the body under its
//! size cap. Each failure is already an `ApiError` in the SPEC's terms.

use bytes::Bytes;
use http_body_util::{BodyExt, Limited};
use hyper::StatusCode;
use hyper::body::Incoming;
use hyper::header::{AUTHORIZATION, CONTENT_LENGTH, HeaderMap, IF_MATCH};
use percent_encoding::percent_decode_str;
use subscriber_store::{IdempotencyKey, Precondition, Store, Tenant, Version, check_subscriber_id};

use crate::error::{ApiError, bad_path_subscriber_id, from_store};

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

/// The percent-decoded `{subscriberId}`, checked by the store's id rule.
pub(crate) fn subscriber_id(raw: &str) -> Result<String, ApiError> {
    let id = percent_decode_str(raw)
        .decode_utf8()
        .map_err(|_| ApiError::bad_request("subscriberId must be valid UTF-8"))?;
    check_subscriber_id(&id).map_err(|problem| bad_path_subscriber_id(&problem))?;
    Ok(id.into_owned())
}

/// The `idempotency-key` header: absent, or a valid key. A structured-field
/// quoted string (`"abc"`) is unquoted. Returns the key as sent (for echoing)
/// and the checked key.
pub(crate) fn idempotency_header(
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

/// `If-Match` as RFC 9110 (section 13.1.1) reads it: `*` (the document
/// exists), or a list of entity tags (all header lines together) that
/// matches if any strong member is the document's `"<__v>"`; a weak tag
/// (`W/"3"`) never matches. A bare number (`If-Match: 3`) counts as `"3"`.
/// Absent is `None`; only a header that is not such a list is a 400.
pub(crate) fn if_match(headers: &HeaderMap) -> Result<Option<Precondition>, ApiError> {
    let bad = || {
        ApiError::bad_request(
            "If-Match must be * or a list of entity tags, as in If-Match: \"3\" or If-Match: \"3\", \"4\"",
        )
    };
    let mut values = headers.get_all(IF_MATCH).iter().peekable();
    if values.peek().is_none() {
        return Ok(None);
    }
    let mut text = String::new();
    for value in values {
        text.push_str(value.to_str().map_err(|_| bad())?);
        text.push(',');
    }
    if text.trim_matches(|c| c == ',' || c == ' ' || c == '\t') == "*" {
        return Ok(Some(Precondition::Exists));
    }
    let tags = entity_tags(&text).ok_or_else(bad)?;
    if tags.is_empty() {
        return Err(bad());
    }
    // A weak tag, or a strong one that is not a version, matches nothing.
    let versions: Vec<Version> = tags
        .iter()
        .filter(|tag| !tag.weak)
        .filter_map(|tag| tag.opaque.parse().ok().map(Version))
        .collect();
    Ok(Some(match (tags.len(), versions.as_slice()) {
        (1, [only]) => Precondition::Version(*only),
        _ => Precondition::AnyOf(versions),
    }))
}

/// One member of an `If-Match` list.
#[derive(Debug, PartialEq, Eq)]
struct EntityTag<'a> {
    weak: bool,
    opaque: &'a str,
}

/// Splits `#entity-tag` (empty members allowed, as RFC 9110's list rule
/// says); `None` if anything in it is not an entity tag. Besides the RFC's
/// quoted tags, a bare run of digits is taken as the strong tag it names.
fn entity_tags(text: &str) -> Option<Vec<EntityTag<'_>>> {
    let mut tags = Vec::new();
    let mut rest = text;
    loop {
        rest = rest.trim_start_matches([' ', '\t', ',']);
        if rest.is_empty() {
            return Some(tags);
        }
        let (weak, after) = match rest.strip_prefix("W/") {
            Some(after) => (true, after),
            None => (false, rest),
        };
        let (opaque, after) = if let Some(quoted) = after.strip_prefix('"') {
            let end = quoted.find('"')?;
            let opaque = &quoted[..end];
            // etagc: %x21 / %x23-7E / obs-text
            if !opaque
                .bytes()
                .all(|b| b == 0x21 || (0x23..=0x7e).contains(&b) || b >= 0x80)
            {
                return None;
            }
            (opaque, &quoted[end + 1..])
        } else if !weak {
            let end = after
                .find(|c: char| !c.is_ascii_digit())
                .unwrap_or(after.len());
            if end == 0 {
                return None;
            }
            (&after[..end], &after[end..])
        } else {
            return None;
        };
        // The next member starts after a comma.
        let after = after.trim_start_matches([' ', '\t']);
        if !(after.is_empty() || after.starts_with(',')) {
            return None;
        }
        tags.push(EntityTag { weak, opaque });
        rest = after;
    }
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
/// when `Content-Length` says so, else as soon as the stream does; and with
/// 408 (closing the connection) when it has not all arrived within `timeout`.
pub(crate) async fn body(
    headers: &HeaderMap,
    body: Incoming,
    limit: usize,
    timeout: std::time::Duration,
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
    let collected = tokio::time::timeout(timeout, Limited::new(body, limit).collect())
        .await
        .map_err(|_| {
            ApiError::new(
                StatusCode::REQUEST_TIMEOUT,
                format!(
                    "The request body did not arrive within {} s",
                    timeout.as_secs_f64()
                ),
            )
        })?;
    match collected {
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
        let parsed = |v: &str| if_match(&headers("if-match", v)).ok().flatten();
        let version = |n| Some(Precondition::Version(Version(n)));
        let any_of = |list: &[u64]| {
            Some(Precondition::AnyOf(
                list.iter().copied().map(Version).collect(),
            ))
        };
        assert_eq!(parsed("\"3\""), version(3));
        assert_eq!(parsed("7"), version(7));
        assert_eq!(parsed(" \"7\" "), version(7));
        assert_eq!(if_match(&HeaderMap::new()).ok(), Some(None));
        assert_eq!(parsed("*"), Some(Precondition::Exists));
        assert_eq!(parsed("\"3\", \"4\""), any_of(&[3, 4]));
        assert_eq!(parsed("\"3\",,W/\"4\""), any_of(&[3]));
        // Weak tags and tags that are not versions match nothing.
        assert_eq!(parsed("W/\"3\""), any_of(&[]));
        assert_eq!(parsed("\"\""), any_of(&[]));
        assert_eq!(parsed("\"abc\""), any_of(&[]));
        assert_eq!(parsed("\"99999999999999999999999\""), any_of(&[]));
        assert_eq!(parsed("\"a,b\", \"5\""), any_of(&[5]));
        for bad in [
            "abc",
            "-1",
            "\"3",
            "\"3\" \"4\"",
            "W/3",
            "*, \"3\"",
            "",
            " , ",
            "\"a b\"",
        ] {
            assert!(if_match(&headers("if-match", bad)).is_err(), "{bad}");
        }
        // Several header lines form one list.
        let mut two = headers("if-match", "\"1\"");
        two.append("if-match", HeaderValue::from_static("\"2\""));
        assert_eq!(if_match(&two).ok().flatten(), any_of(&[1, 2]));
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
