//! Pulling typed inputs out of a request: the API key, the path's subscriber
//! id, the idempotency key, `If-Match`, the query (`failIfExists`, the
//! presence feed's `after`/`limit`/`within`), the event stream's headers,
//! and the body under its size cap. Each failure is already an `ApiError`
//! in the SPEC's terms.

use bytes::Bytes;
use http_body_util::{BodyExt, Limited};
use hyper::StatusCode;
use hyper::body::Incoming;
use hyper::header::{ACCEPT, AUTHORIZATION, CONTENT_LENGTH, HeaderMap, IF_MATCH};
use percent_encoding::percent_decode_str;
use serde_json::{Map, Value};
use subscriber_store::{
    Backend, DEFAULT_PAGE, Field, IdempotencyKey, InputProblem, MAX_PAGE, MAX_WITHIN_SECONDS,
    OnlineQuery, Precondition, Tenant, Version, check_page_limit, check_subscriber_id,
    check_within_seconds,
};

use crate::error::{ApiError, bad_path_subscriber_id, field_error, from_store, rule_message};

/// The tenant of the request's `Authorization: ApiKey <key>`.
pub(crate) async fn tenant(headers: &HeaderMap, store: &dyn Backend) -> Result<Tenant, ApiError> {
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
    store
        .resolve_key(key)
        .await
        .map_err(|e| from_store(&e, None))
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

/// The query of `GET /v1/presence/events`: `after` (a seq) and `limit`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct EventsQuery {
    pub after: Option<u64>,
    pub limit: u32,
}

/// `after` (a decimal seq) and `limit` (1 to 1000, default 100) of the
/// event feed. A parameter that breaks its rule is a 422 naming it.
pub(crate) fn events_query(query: Option<&str>) -> Result<EventsQuery, ApiError> {
    let mut problems = Map::new();
    let [after, limit] = query_values(query, ["after", "limit"], &mut problems);
    let after = after.and_then(|raw| seq(&raw, "after", &mut problems));
    let limit = page_limit(limit, &mut problems);
    match (limit, problems.is_empty()) {
        (Some(limit), true) => Ok(EventsQuery { after, limit }),
        _ => Err(ApiError::validation(problems)),
    }
}

/// `after` (a subscriber id, checked by the store's id rule when it runs
/// the query), `limit` (1 to 1000, default 100) and `within` (seconds, 1 to
/// 2592000) of the online query. A parameter that breaks its rule is a 422
/// naming it.
pub(crate) fn online_query(query: Option<&str>) -> Result<OnlineQuery, ApiError> {
    let mut problems = Map::new();
    let [after, limit, within] = query_values(query, ["after", "limit", "within"], &mut problems);
    let limit = page_limit(limit, &mut problems);
    let within_seconds = within.and_then(|raw| {
        let checked = decimal(&raw).map(check_within_seconds);
        match checked {
            Some(Ok(within)) => Some(within),
            _ => {
                let problem = InputProblem::NotInRange {
                    min: 1,
                    max: u64::from(MAX_WITHIN_SECONDS),
                };
                broken(&mut problems, Field::Within, &problem, &raw);
                None
            }
        }
    });
    match (limit, problems.is_empty()) {
        (Some(limit), true) => Ok(OnlineQuery {
            after,
            limit,
            within_seconds,
        }),
        _ => Err(ApiError::validation(problems)),
    }
}

/// The values of the named parameters, percent-decoded with `+` as a space
/// (`application/x-www-form-urlencoded`, what `URLSearchParams` writes).
/// Names are case-sensitive; other parameters are ignored, as Novu's
/// Express stack ignores them. A name given twice, or a value that is not
/// UTF-8 once decoded, is a problem naming the parameter.
fn query_values<const N: usize>(
    query: Option<&str>,
    names: [&'static str; N],
    problems: &mut Map<String, Value>,
) -> [Option<String>; N] {
    let mut values: [Option<String>; N] = std::array::from_fn(|_| None);
    for pair in query
        .unwrap_or_default()
        .split('&')
        .filter(|p| !p.is_empty())
    {
        let (name, raw) = pair.split_once('=').unwrap_or((pair, ""));
        let Some(index) = names.iter().position(|n| *n == name) else {
            continue;
        };
        let spaced = raw.replace('+', " ");
        let value = match percent_decode_str(&spaced).decode_utf8() {
            Ok(value) => value.into_owned(),
            Err(_) => {
                let message = format!("{name} must be valid UTF-8 once percent-decoded");
                problems.insert(
                    name.into(),
                    field_error(&[&message], Some(&Value::String(raw.into()))),
                );
                continue;
            }
        };
        if values[index].is_some() {
            let message = format!("{name} must be given at most once");
            problems.insert(
                name.into(),
                field_error(&[&message], Some(&Value::String(value))),
            );
            continue;
        }
        values[index] = Some(value);
    }
    values
}

/// A whole number written in decimal digits only (no sign, no spaces, no
/// fraction); `None` for anything else, a number above `u64::MAX` included.
fn decimal(raw: &str) -> Option<u64> {
    if raw.is_empty() || !raw.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    raw.parse().ok()
}

/// A broken store rule in the 422 shape, with the value as sent.
fn broken(problems: &mut Map<String, Value>, field: Field, problem: &InputProblem, raw: &str) {
    let message = rule_message(&field, problem);
    problems.insert(
        crate::error::field_name(&field),
        field_error(&[&message], Some(&Value::String(raw.into()))),
    );
}

/// An event seq: 0 to `u64::MAX` in decimal. `name` is the parameter or
/// header it came in.
fn seq(raw: &str, name: &str, problems: &mut Map<String, Value>) -> Option<u64> {
    let parsed = decimal(raw);
    if parsed.is_none() {
        let message = format!("{name} must be an integer between 0 and {}", u64::MAX);
        problems.insert(
            name.into(),
            field_error(&[&message], Some(&Value::String(raw.into()))),
        );
    }
    parsed
}

/// `limit`: absent is the default page, else 1 to 1000.
fn page_limit(raw: Option<String>, problems: &mut Map<String, Value>) -> Option<u32> {
    let Some(raw) = raw else {
        return Some(DEFAULT_PAGE);
    };
    match decimal(&raw).map(check_page_limit) {
        Some(Ok(limit)) => Some(limit),
        _ => {
            let problem = InputProblem::NotInRange {
                min: 1,
                max: u64::from(MAX_PAGE),
            };
            broken(problems, Field::Limit, &problem, &raw);
            None
        }
    }
}

/// Whether the request asks for server-sent events: an `Accept` that names
/// `text/event-stream` (any case, parameters and other members aside).
pub(crate) fn wants_event_stream(headers: &HeaderMap) -> bool {
    headers
        .get_all(ACCEPT)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .any(|member| {
            let media = member.split(';').next().unwrap_or_default().trim();
            media.eq_ignore_ascii_case("text/event-stream")
        })
}

/// `Last-Event-ID` (what `EventSource` and our README's clients send on a
/// reconnect): absent or empty is `None` (a browser sends no header before
/// it has seen an id), else a seq; anything else is a 422 naming it.
pub(crate) fn last_event_id(headers: &HeaderMap) -> Result<Option<u64>, ApiError> {
    const NAME: &str = "Last-Event-ID";
    let mut values = headers.get_all("last-event-id").iter();
    let Some(value) = values.next() else {
        return Ok(None);
    };
    let mut problems = Map::new();
    let raw = String::from_utf8_lossy(value.as_bytes());
    if values.next().is_some() {
        let message = format!("{NAME} must be given at most once");
        problems.insert(
            NAME.into(),
            field_error(&[&message], Some(&Value::String(raw.into_owned()))),
        );
        return Err(ApiError::validation(problems));
    }
    let raw = raw.trim();
    if raw.is_empty() {
        return Ok(None);
    }
    match seq(raw, NAME, &mut problems) {
        Some(seq) => Ok(Some(seq)),
        None => Err(ApiError::validation(problems)),
    }
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

    /// The 422's `errors` of a rejected query.
    fn rejected(result: Result<impl std::fmt::Debug, ApiError>) -> Value {
        let error = result.expect_err("rejected");
        assert_eq!(error.status, StatusCode::UNPROCESSABLE_ENTITY);
        Value::Object(error.errors().expect("errors").clone())
    }

    #[test]
    fn events_query_reads_after_and_limit() {
        let parsed = |q| events_query(q).ok();
        let query = |after, limit| Some(EventsQuery { after, limit });
        assert_eq!(parsed(None), query(None, 100));
        assert_eq!(parsed(Some("")), query(None, 100));
        assert_eq!(parsed(Some("after=0&limit=1")), query(Some(0), 1));
        assert_eq!(
            parsed(Some(
                "limit=1000&after=18446744073709551615&x=y&within=oops"
            )),
            query(Some(u64::MAX), 1000)
        );
        assert_eq!(parsed(Some("after=007")), query(Some(7), 100));
        for bad in [
            "",
            "-1",
            "1.5",
            "x",
            "+1",
            " 1",
            "18446744073709551616",
            "1e3",
        ] {
            let errors = rejected(events_query(Some(&format!("after={bad}"))));
            assert_eq!(
                errors["after"]["messages"][0],
                "after must be an integer between 0 and 18446744073709551615"
            );
            assert_eq!(errors["after"]["value"], bad.replace('+', " "));
        }
        for bad in ["", "0", "1001", "-5", "ten", "99999999999999999999999"] {
            let errors = rejected(events_query(Some(&format!("limit={bad}"))));
            assert_eq!(
                errors["limit"]["messages"][0],
                "limit must be an integer between 1 and 1000"
            );
        }
        let errors = rejected(events_query(Some("limit=5&limit=6")));
        assert_eq!(
            errors["limit"]["messages"][0],
            "limit must be given at most once"
        );
        let errors = rejected(events_query(Some("after=%FF&limit=0")));
        assert!(errors.get("after").is_some() && errors.get("limit").is_some());
    }

    #[test]
    fn online_query_reads_after_limit_and_within() {
        let parsed = online_query(Some("after=a%20b+c&limit=2&within=60")).expect("ok");
        assert_eq!(
            parsed,
            OnlineQuery {
                after: Some("a b c".into()),
                limit: 2,
                within_seconds: Some(60),
            }
        );
        assert_eq!(online_query(None).ok(), Some(OnlineQuery::default()));
        // The id rule is the store's: an empty cursor goes through to it.
        assert_eq!(
            online_query(Some("after=")).ok().and_then(|q| q.after),
            Some(String::new())
        );
        for bad in ["", "0", "2592001", "-1", "1h"] {
            let errors = rejected(online_query(Some(&format!("within={bad}"))));
            assert_eq!(
                errors["within"]["messages"][0],
                "within must be an integer between 1 and 2592000"
            );
        }
    }

    #[test]
    fn event_stream_headers() {
        assert!(wants_event_stream(&headers("accept", "text/event-stream")));
        assert!(wants_event_stream(&headers(
            "accept",
            "application/json, Text/Event-Stream;q=0.9"
        )));
        assert!(!wants_event_stream(&headers("accept", "*/*")));
        assert!(!wants_event_stream(&HeaderMap::new()));
        assert_eq!(last_event_id(&HeaderMap::new()).ok(), Some(None));
        assert_eq!(
            last_event_id(&headers("last-event-id", "")).ok(),
            Some(None)
        );
        assert_eq!(
            last_event_id(&headers("last-event-id", "42")).ok(),
            Some(Some(42))
        );
        let errors = rejected(last_event_id(&headers("last-event-id", "abc")));
        assert!(errors.get("Last-Event-ID").is_some());
    }
}
