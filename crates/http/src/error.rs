//! The Novu error shape (SPEC section 5) and the one mapping from a store
//! error to an HTTP status. Nothing else in the crate picks error statuses
//! for store outcomes.

use hyper::StatusCode;
use serde_json::{Map, Value, json};
use subscriber_store::{
    Entity, Error, Field, InputProblem, KeyProblem, PROVIDER_IDS, Precondition, Timestamp,
};

/// An answer in the error shape, before it is rendered.
#[derive(Debug, Clone)]
pub(crate) struct ApiError {
    pub status: StatusCode,
    pub message: String,
    /// The rarely set parts, boxed to keep `Result<_, ApiError>` small.
    detail: Option<Box<Detail>>,
}

#[derive(Debug, Clone, Default)]
struct Detail {
    /// Per-field validation errors (422 only).
    errors: Option<Map<String, Value>>,
    /// Set for 500s: also logged with the internal cause.
    error_id: Option<String>,
    /// `Allow` header value for 405.
    allow: Option<String>,
}

impl ApiError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        ApiError {
            status,
            message: message.into(),
            detail: None,
        }
    }

    fn with(mut self, set: impl FnOnce(&mut Detail)) -> Self {
        set(self.detail.get_or_insert_with(Box::default));
        self
    }

    /// A 405 naming the methods the path allows.
    pub fn with_allow(self, allow: String) -> Self {
        self.with(|d| d.allow = Some(allow))
    }

    pub fn allow(&self) -> Option<&str> {
        self.detail.as_ref()?.allow.as_deref()
    }

    pub fn errors(&self) -> Option<&Map<String, Value>> {
        self.detail.as_ref()?.errors.as_ref()
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::BAD_REQUEST, message)
    }

    pub fn unauthorized(message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::UNAUTHORIZED, message)
    }

    /// A 422 in the validation shape.
    pub fn validation(errors: Map<String, Value>) -> Self {
        ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "Validation Error")
            .with(|d| d.errors = Some(errors))
    }

    /// A 500 whose cause is logged under a fresh error id, never sent.
    pub fn internal(cause: &dyn std::fmt::Display) -> Self {
        let error_id = uuid::Uuid::new_v4().to_string();
        tracing::error!(error_id = %error_id, cause = %cause, "internal error");
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "Internal server error, contact support and quote the errorId",
        )
        .with(|d| d.error_id = Some(error_id))
    }

    /// The body: `statusCode, timestamp, path, message, error[, errors][, errorId]`.
    pub fn body(&self, path: &str, at: Timestamp) -> Value {
        let mut body = Map::new();
        body.insert("statusCode".into(), json!(self.status.as_u16()));
        body.insert("timestamp".into(), json!(at.to_string()));
        body.insert("path".into(), json!(path));
        body.insert("message".into(), json!(self.message));
        body.insert(
            "error".into(),
            json!(self.status.canonical_reason().unwrap_or("Error")),
        );
        if let Some(errors) = self.errors() {
            body.insert("errors".into(), Value::Object(errors.clone()));
        }
        if let Some(id) = self.detail.as_ref().and_then(|d| d.error_id.as_ref()) {
            body.insert("errorId".into(), json!(id));
        }
        Value::Object(body)
    }
}

/// One field's entry in a 422 `errors` object; `value` is omitted when the
/// field was missing.
pub(crate) fn field_error(messages: &[&str], value: Option<&Value>) -> Value {
    let mut entry = Map::new();
    entry.insert("messages".into(), json!(messages));
    if let Some(value) = value {
        entry.insert("value".into(), value.clone());
    }
    Value::Object(entry)
}

/// Novu's name for an argument the store checks, as a 422's `errors` key.
pub(crate) fn field_name(field: &Field) -> String {
    match field {
        Field::SubscriberId => "subscriberId".into(),
        Field::Data => "data".into(),
        Field::ProviderId { channel } => format!("channels.{channel}.providerId"),
        Field::Name => "name".into(),
        Field::Id => "id".into(),
        Field::ApiKey => "apiKey".into(),
        Field::TtlSeconds => "ttlSeconds".into(),
        Field::Limit => "limit".into(),
        Field::After => "after".into(),
        Field::Within => "within".into(),
        other => other.to_string(),
    }
}

/// A store rule an argument breaks, in Novu's words (class-validator's
/// phrasing: "subscriberId should not be empty").
pub(crate) fn rule_message(field: &Field, problem: &InputProblem) -> String {
    let name = match field {
        Field::ProviderId { .. } => "providerId".to_owned(),
        other => field_name(other),
    };
    match problem {
        InputProblem::Blank => format!("{name} should not be empty"),
        InputProblem::TooLong { max_bytes } => {
            format!("{name} must be shorter than or equal to {max_bytes} bytes")
        }
        InputProblem::ControlCharacter => format!("{name} must not contain control characters"),
        InputProblem::UnknownProvider => format!(
            "{name} must be one of the following values: {}",
            PROVIDER_IDS.join(", ")
        ),
        InputProblem::NotObjectOrNull => format!("{name} must be an object or null"),
        InputProblem::NotJson(why) => format!("{name} must be valid JSON: {why}"),
        InputProblem::NotInRange { min, max } => {
            format!("{name} must be an integer between {min} and {max}")
        }
        other => format!("{name} is invalid: {other}"),
    }
}

/// Why an Inbox session is refused before anything is written (SPEC 13):
/// Novu's 400s, and 404 where this server has no server key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SessionRefusal {
    /// No environment has the `applicationIdentifier`.
    UnknownApplication,
    /// `subscriberHash` missing, malformed or not made with one of the
    /// environment's keys.
    BadHash,
    /// The server was started without a server key: no tokens.
    NoServerKey,
}

pub(crate) fn session_refused(refusal: SessionRefusal) -> ApiError {
    match refusal {
        SessionRefusal::UnknownApplication => {
            ApiError::bad_request("Please provide a valid app identifier")
        }
        SessionRefusal::BadHash => ApiError::bad_request("Please provide a valid HMAC hash"),
        SessionRefusal::NoServerKey => ApiError::new(
            StatusCode::NOT_FOUND,
            "Inbox sessions are off: this server was started without a server key",
        ),
    }
}

/// The 400 for a path's `{subscriberId}` that breaks the store's id rule
/// (SPEC section 1: a bad path id is a 400, not a 422).
pub(crate) fn bad_path_subscriber_id(problem: &InputProblem) -> ApiError {
    ApiError::bad_request(rule_message(&Field::SubscriberId, problem))
}

/// The status and message a store error is answered with. `shown_key` is
/// the request's idempotency key as sent, for the messages that quote it.
pub(crate) fn from_store(error: &Error, shown_key: Option<&str>) -> ApiError {
    match error {
        Error::NotFound(Entity::Subscriber) => {
            ApiError::new(StatusCode::NOT_FOUND, "Subscriber not found")
        }
        Error::NotFound(Entity::ApiKey) => ApiError::unauthorized("API Key not found"),
        Error::NotFound(entity) => {
            ApiError::new(StatusCode::NOT_FOUND, format!("{entity} not found"))
        }
        Error::VersionConflict { expected, current } => {
            let wanted = match expected {
                Precondition::AnyOf(list) if list.is_empty() => {
                    "If-Match names no version (a weak entity tag never matches)".to_owned()
                }
                Precondition::Exists => "If-Match: * expected an existing subscriber".to_owned(),
                other => format!("If-Match expected {other}"),
            };
            let found = match current {
                Some(current) => format!("the subscriber is at version {current}"),
                None => "the subscriber does not exist".to_owned(),
            };
            ApiError::new(
                StatusCode::PRECONDITION_FAILED,
                format!("{wanted} but {found}"),
            )
        }
        Error::AlreadyExists { .. } => {
            ApiError::new(StatusCode::CONFLICT, "Subscriber already exists")
        }
        Error::InvalidInput { field, problem } => {
            let mut errors = Map::new();
            let message = rule_message(field, problem);
            errors.insert(field_name(field), field_error(&[&message], None));
            ApiError::validation(errors)
        }
        Error::TooLarge { bytes, limit } => {
            let mut errors = Map::new();
            let message = format!(
                "the subscriber document would take {bytes} bytes once encoded; at most {limit} are kept"
            );
            errors.insert("body".into(), field_error(&[&message], None));
            ApiError::validation(errors)
        }
        Error::InvalidIdempotencyKey(problem) => {
            let key = shown_key.unwrap_or_default();
            match problem {
                KeyProblem::TooLong => ApiError::bad_request(format!(
                    "idempotencyKey \"{key}\" has exceeded the maximum allowed length of 255 characters"
                )),
                other => {
                    ApiError::bad_request(format!("idempotencyKey \"{key}\" is invalid: {other}"))
                }
            }
        }
        Error::IdempotencyKeyReused => ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            format!(
                "Request with key \"{}\" is being reused for a different body",
                shown_key.unwrap_or_default()
            ),
        ),
        Error::CursorExpired {
            after,
            purged_through,
        } => ApiError::new(
            StatusCode::GONE,
            format!(
                "The cursor {after} is older than the event retention: events through {purged_through} were purged. Resynchronise from /v1/presence/online, then read /v1/presence/events again"
            ),
        ),
        Error::FeedOff => ApiError::new(
            StatusCode::NOT_FOUND,
            "The presence feed is off on this server (subscriberd serve --presence-feed on keeps it)",
        ),
        other => ApiError::internal(other),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn broken_rules_are_worded_as_novu_words_them() {
        let cases = [
            (
                Field::SubscriberId,
                InputProblem::Blank,
                "subscriberId should not be empty",
            ),
            (
                Field::SubscriberId,
                InputProblem::TooLong { max_bytes: 255 },
                "subscriberId must be shorter than or equal to 255 bytes",
            ),
            (
                Field::SubscriberId,
                InputProblem::ControlCharacter,
                "subscriberId must not contain control characters",
            ),
            (
                Field::Data,
                InputProblem::NotObjectOrNull,
                "data must be an object or null",
            ),
        ];
        for (field, problem, message) in cases {
            assert_eq!(rule_message(&field, &problem), message);
        }
        let range = |min, max| InputProblem::NotInRange { min, max };
        for (field, problem, message) in [
            (
                Field::Limit,
                range(1, 1000),
                "limit must be an integer between 1 and 1000",
            ),
            (
                Field::Within,
                range(1, 2_592_000),
                "within must be an integer between 1 and 2592000",
            ),
            (
                Field::After,
                InputProblem::Blank,
                "after should not be empty",
            ),
        ] {
            assert_eq!(rule_message(&field, &problem), message);
            let error = from_store(&Error::InvalidInput { field, problem }, None);
            assert_eq!(error.status, StatusCode::UNPROCESSABLE_ENTITY);
            let errors = error.errors().expect("a 422 names the parameter");
            assert_eq!(
                errors[&field_name(&field)]["messages"][0].as_str(),
                Some(message)
            );
        }
        let provider = rule_message(
            &Field::ProviderId { channel: 2 },
            &InputProblem::UnknownProvider,
        );
        assert!(provider.starts_with("providerId must be one of the following values: slack, "));
        let error = from_store(
            &Error::InvalidInput {
                field: Field::ProviderId { channel: 2 },
                problem: InputProblem::UnknownProvider,
            },
            None,
        );
        let errors = error.errors().expect("a 422 names the field");
        assert_eq!(
            errors["channels.2.providerId"]["messages"][0].as_str(),
            Some(provider.as_str())
        );
        assert_eq!(
            bad_path_subscriber_id(&InputProblem::Blank).status,
            StatusCode::BAD_REQUEST
        );
    }

    #[test]
    fn internal_errors_carry_an_error_id_and_no_internals() {
        let error = from_store(&Error::Storage("disk on fire at /var/x".into()), None);
        assert_eq!(error.status, StatusCode::INTERNAL_SERVER_ERROR);
        let body = error.body("/v1/x", Timestamp::from_millis(0));
        let id = body["errorId"].as_str().expect("errorId");
        assert!(uuid::Uuid::parse_str(id).is_ok(), "{id}");
        assert!(!body.to_string().contains("disk on fire"));
        assert_eq!(body["error"], "Internal Server Error");
        assert_eq!(body["statusCode"], 500);
    }

    #[test]
    fn every_store_error_maps_to_the_spec_status() {
        let cases = [
            (
                Error::NotFound(Entity::Subscriber),
                404,
                "Subscriber not found",
            ),
            (Error::NotFound(Entity::ApiKey), 401, "API Key not found"),
            (
                Error::VersionConflict {
                    expected: subscriber_store::Version(1).into(),
                    current: Some(subscriber_store::Version(2)),
                },
                412,
                "If-Match expected version 1 but the subscriber is at version 2",
            ),
            (
                Error::VersionConflict {
                    expected: Precondition::AnyOf(vec![
                        subscriber_store::Version(1),
                        subscriber_store::Version(3),
                    ]),
                    current: Some(subscriber_store::Version(2)),
                },
                412,
                "If-Match expected one of versions 1, 3 but the subscriber is at version 2",
            ),
            (
                Error::VersionConflict {
                    expected: Precondition::AnyOf(vec![]),
                    current: Some(subscriber_store::Version(2)),
                },
                412,
                "If-Match names no version (a weak entity tag never matches) but the subscriber is at version 2",
            ),
            (
                Error::VersionConflict {
                    expected: Precondition::Exists,
                    current: None,
                },
                412,
                "If-Match: * expected an existing subscriber but the subscriber does not exist",
            ),
            (
                Error::AlreadyExists {
                    current: subscriber_store::Version(0),
                },
                409,
                "Subscriber already exists",
            ),
            (
                Error::InvalidInput {
                    field: Field::SubscriberId,
                    problem: InputProblem::Blank,
                },
                422,
                "Validation Error",
            ),
            (
                Error::TooLarge {
                    bytes: 600_000,
                    limit: 524_288,
                },
                422,
                "Validation Error",
            ),
            (
                Error::IdempotencyKeyReused,
                422,
                "Request with key \"k\" is being reused for a different body",
            ),
            (
                Error::InvalidIdempotencyKey(KeyProblem::TooLong),
                400,
                "idempotencyKey \"k\" has exceeded the maximum allowed length of 255 characters",
            ),
            (
                Error::CursorExpired {
                    after: 3,
                    purged_through: 9,
                },
                410,
                "The cursor 3 is older than the event retention: events through 9 were purged. Resynchronise from /v1/presence/online, then read /v1/presence/events again",
            ),
            (
                Error::FeedOff,
                404,
                "The presence feed is off on this server (subscriberd serve --presence-feed on keeps it)",
            ),
        ];
        for (error, status, message) in cases {
            let mapped = from_store(&error, Some("k"));
            assert_eq!(mapped.status.as_u16(), status, "{error:?}");
            assert_eq!(mapped.message, message);
        }
    }
}
