//! The Inbox's wire shapes (SPEC 13): the session request, read field by
//! field into the 422 shape as the create body is, its answer, and the
//! environment of `GET /v1/environments/me`. Which identifier is known and
//! whether a hash is right are not decided here.

use serde::Serialize;
use serde_json::Value;
use serde_json::value::RawValue;
use subscriber_store::{Environment, SubscriberInput};

use super::{Problems, subscriber_fields, subscriber_id};
use crate::error::ApiError;

/// `POST /v1/inbox/session`, its types checked.
#[derive(Debug)]
pub(crate) struct SessionRequest {
    /// Any string: an unknown one is a 400 once looked up.
    pub application_identifier: String,
    /// The subscriber to create when missing.
    pub subscriber: SubscriberInput,
    /// As sent (its form is the HMAC check's to judge).
    pub subscriber_hash: Option<String>,
}

/// Reads a session body: `applicationIdentifier` (a string), the
/// subscriber as `subscriber: {subscriberId, firstName, ...}` or, from
/// older clients, a top-level `subscriberId`, and `subscriberHash` (a
/// string, or absent). Other members (`context`, `contextHash`,
/// `defaultSchedule`, a subscriber's `channels`) are ignored.
pub(crate) fn session_body(body: &Value, raw: &[u8]) -> Result<SessionRequest, ApiError> {
    let mut top = Problems::new("");
    let Some(obj) = body.as_object() else {
        required(&mut top, "applicationIdentifier", None);
        return Err(ApiError::validation(top.0));
    };
    let application_identifier = match obj.get("applicationIdentifier") {
        Some(Value::String(identifier)) => identifier.clone(),
        value => {
            required(&mut top, "applicationIdentifier", value);
            String::new()
        }
    };
    let subscriber_hash = match obj.get("subscriberHash") {
        None | Some(Value::Null) => None,
        Some(Value::String(hash)) => Some(hash.clone()),
        Some(other) => {
            top.add(
                "subscriberHash",
                "subscriberHash must be a string",
                Some(other),
            );
            None
        }
    };
    let mut errors = top.0;
    let subscriber = match obj.get("subscriber") {
        // The id inside the subscriber wins; the top-level one is older
        // clients' (and what the SDK's empty subscriber leaves).
        Some(Value::Object(fields)) if !is_absent(fields.get("subscriberId")) => {
            let mut p = Problems::new("subscriber.");
            let mut input = SubscriberInput::new(subscriber_id(&mut p, fields.get("subscriberId")));
            subscriber_fields(&mut p, fields, &mut input, raw_subscriber_data(raw));
            errors.extend(p.0);
            input
        }
        Some(Value::Object(fields)) => {
            let mut p = Problems::new("");
            let mut input = SubscriberInput::new(subscriber_id(&mut p, obj.get("subscriberId")));
            let mut nested = Problems::new("subscriber.");
            subscriber_fields(&mut nested, fields, &mut input, raw_subscriber_data(raw));
            errors.extend(p.0);
            errors.extend(nested.0);
            input
        }
        None | Some(Value::Null) => {
            let mut p = Problems::new("");
            let input = SubscriberInput::new(subscriber_id(&mut p, obj.get("subscriberId")));
            errors.extend(p.0);
            input
        }
        Some(other) => {
            let mut p = Problems::new("");
            p.add("subscriber", "subscriber must be an object", Some(other));
            errors.extend(p.0);
            SubscriberInput::new("")
        }
    };
    if errors.is_empty() {
        Ok(SessionRequest {
            application_identifier,
            subscriber,
            subscriber_hash,
        })
    } else {
        Err(ApiError::validation(errors))
    }
}

/// A required string member that is missing, null or not a string.
fn required(p: &mut Problems, field: &str, value: Option<&Value>) {
    if matches!(value, None | Some(Value::Null)) {
        p.add(
            field,
            &format!("{field} should not be null or undefined"),
            value,
        );
    }
    p.add(field, &format!("{field} must be a string"), value);
}

/// Missing, null, or the empty string the SDK sends when it was given no
/// subscriber object.
fn is_absent(value: Option<&Value>) -> bool {
    match value {
        None | Some(Value::Null) => true,
        Some(Value::String(id)) => id.is_empty(),
        Some(_) => false,
    }
}

/// The text of the body's `subscriber.data`, as sent.
fn raw_subscriber_data(body: &[u8]) -> Option<&str> {
    #[derive(serde::Deserialize)]
    struct Body<'a> {
        #[serde(borrow)]
        subscriber: Option<Subscriber<'a>>,
    }
    #[derive(serde::Deserialize)]
    struct Subscriber<'a> {
        #[serde(borrow)]
        data: Option<&'a RawValue>,
    }
    serde_json::from_slice::<Body<'_>>(body)
        .ok()?
        .subscriber?
        .data
        .map(RawValue::get)
}

/// The session's answer, Novu's fields.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct SessionDto<'a> {
    pub token: &'a str,
    pub total_unread_count: u32,
    pub remove_novu_branding: bool,
    pub is_development_mode: bool,
    pub application_identifier: &'a str,
}

/// `GET /v1/environments/me`.
#[derive(Serialize)]
pub(crate) struct EnvironmentDto<'a> {
    #[serde(rename = "_id")]
    id: String,
    name: &'a str,
    identifier: &'a str,
    #[serde(rename = "_organizationId")]
    organization_id: String,
}

impl<'a> EnvironmentDto<'a> {
    pub fn new(env: &'a Environment) -> Self {
        EnvironmentDto {
            id: env.id.to_string(),
            name: &env.name,
            identifier: &env.identifier,
            organization_id: env.organization_id.to_string(),
        }
    }
}

/// The 422's `errors` of a refused body (empty if it was read).
#[cfg(test)]
fn errors_of(result: Result<SessionRequest, ApiError>) -> serde_json::Map<String, Value> {
    result
        .err()
        .and_then(|e| e.errors().cloned())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn read(body: Value) -> Result<SessionRequest, ApiError> {
        session_body(&body, body.to_string().as_bytes())
    }

    #[test]
    fn the_sdk_body_and_the_older_top_level_id_are_read() {
        let sdk = read(json!({
            "applicationIdentifier": "app",
            "subscriber": {"subscriberId": "u1", "firstName": "Ada", "timezone": "Europe/Paris", "data": {"n": 12345678901234567890123u128}},
            "subscriberHash": "ab"
        }))
        .expect("reads");
        assert_eq!(sdk.application_identifier, "app");
        assert_eq!(sdk.subscriber.subscriber_id, "u1");
        assert_eq!(sdk.subscriber.first_name, Some(Some("Ada".into())));
        assert_eq!(sdk.subscriber.timezone, Some(Some("Europe/Paris".into())));
        assert_eq!(sdk.subscriber_hash.as_deref(), Some("ab"));
        let older =
            read(json!({"applicationIdentifier": "", "subscriberId": "u2"})).expect("reads");
        assert_eq!(older.subscriber.subscriber_id, "u2");
        assert_eq!(older.subscriber_hash, None);
        // The SDK given only a top-level id sends an empty subscriber id.
        let both = read(json!({"applicationIdentifier": "a", "subscriberId": "u3", "subscriber": {"subscriberId": ""}}))
            .expect("reads");
        assert_eq!(both.subscriber.subscriber_id, "u3");
    }

    #[test]
    fn every_bad_member_is_named() {
        let errors = errors_of(read(json!({
            "applicationIdentifier": 7,
            "subscriberHash": false,
            "subscriber": {"subscriberId": " ", "firstName": 1, "email": [], "data": "x"}
        })));
        let names: Vec<&str> = errors.keys().map(String::as_str).collect();
        assert_eq!(
            names,
            [
                "applicationIdentifier",
                "subscriberHash",
                "subscriber.subscriberId",
                "subscriber.firstName",
                "subscriber.email",
                "subscriber.data"
            ]
        );
        assert_eq!(
            errors["subscriber.subscriberId"]["messages"][0],
            "subscriberId should not be empty"
        );
        let missing = errors_of(read(json!({})));
        assert_eq!(
            Value::Object(missing),
            json!({
                "applicationIdentifier": {"messages": ["applicationIdentifier should not be null or undefined", "applicationIdentifier must be a string"]},
                "subscriberId": {"messages": ["subscriberId should not be null or undefined", "subscriberId must be a string"]}
            })
        );
        for body in [json!([]), json!("x"), json!(1), json!(null)] {
            assert!(
                errors_of(read(body.clone())).contains_key("applicationIdentifier"),
                "{body}"
            );
        }
        let long = "x".repeat(256);
        let errors = errors_of(read(
            json!({"applicationIdentifier": "a", "subscriber": {"subscriberId": long}}),
        ));
        assert_eq!(
            errors["subscriber.subscriberId"]["messages"][0],
            "subscriberId must be shorter than or equal to 255 bytes"
        );
        let errors = errors_of(read(
            json!({"applicationIdentifier": "a", "subscriber": "u1"}),
        ));
        assert_eq!(
            errors["subscriber"]["messages"][0],
            "subscriber must be an object"
        );
    }
}
