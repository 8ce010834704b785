//! Wire shapes: the subscriber document as JSON (SPEC section 3, field order
//! included) and the request bodies, read field by field into the 422
//! validation shape. This file checks JSON types only (a string, an object);
//! the rules on values (id length, provider ids, `data`) are the store's,
//! worded by `error.rs`. The presence feed's event, page and count shapes
//! (SPEC section 11); the Inbox's (SPEC 13) in `wire/session.rs`. The only
//! serde of HTTP shapes in the crate.

use serde::Serialize;
use serde_json::value::RawValue;
use serde_json::{Map, Value};
use subscriber_store::{
    Channel, ChannelSettings, Credentials, Data, Error, EventPage, Field, InputProblem,
    MAX_TTL_SECONDS, OnlinePage, PresenceEvent, PresenceStats, Subscriber, SubscriberInput,
    check_provider_id, check_subscriber_id, check_ttl_seconds,
};

use crate::error::{ApiError, field_error, rule_message};

mod session;
pub(crate) use session::{EnvironmentDto, SessionDto, session_body};

/// Novu's success envelope: `{"data": ...}` and nothing else.
#[derive(Serialize)]
pub(crate) struct Envelope<T> {
    pub data: T,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct SubscriberDto<'a> {
    #[serde(rename = "_id")]
    id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    first_name: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    last_name: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    email: Option<Option<&'a str>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    phone: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    avatar: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    locale: Option<&'a str>,
    subscriber_id: &'a str,
    channels: Vec<ChannelDto<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    is_online: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    last_online_at: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    online_expires_at: Option<String>,
    #[serde(rename = "_organizationId")]
    organization_id: String,
    #[serde(rename = "_environmentId")]
    environment_id: String,
    deleted: bool,
    created_at: String,
    updated_at: String,
    #[serde(rename = "__v")]
    version: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    data: Option<&'a RawValue>,
    #[serde(skip_serializing_if = "Option::is_none")]
    timezone: Option<&'a str>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ChannelDto<'a> {
    provider_id: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    integration_identifier: Option<&'a str>,
    credentials: CredentialsDto<'a>,
    #[serde(rename = "_integrationId")]
    integration_id: String,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct CredentialsDto<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    webhook_url: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    channel: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    device_tokens: Option<&'a [String]>,
    #[serde(skip_serializing_if = "Option::is_none")]
    alert_uid: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    title: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    image_url: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    state: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    external_url: Option<&'a str>,
}

impl<'a> SubscriberDto<'a> {
    /// The wire form of a document; `data` must already be parsed as raw JSON.
    pub fn new(doc: &'a Subscriber, data: Option<&'a RawValue>) -> Self {
        SubscriberDto {
            id: doc.id.to_string(),
            first_name: doc.first_name.as_deref(),
            last_name: doc.last_name.as_deref(),
            email: doc.email.as_ref().map(|e| e.as_deref()),
            phone: doc.phone.as_deref(),
            avatar: doc.avatar.as_deref(),
            locale: doc.locale.as_deref(),
            subscriber_id: &doc.subscriber_id,
            channels: doc.channels.iter().map(ChannelDto::new).collect(),
            is_online: doc.is_online,
            last_online_at: doc.last_online_at.map(|t| t.to_string()),
            online_expires_at: doc.online_expires_at().map(|t| t.to_string()),
            organization_id: doc.organization_id.to_string(),
            environment_id: doc.environment_id.to_string(),
            deleted: false,
            created_at: doc.created_at.to_string(),
            updated_at: doc.updated_at.to_string(),
            version: doc.version.0,
            data,
            timezone: doc.timezone.as_deref(),
        }
    }
}

impl<'a> ChannelDto<'a> {
    fn new(c: &'a Channel) -> Self {
        let k = &c.credentials;
        ChannelDto {
            provider_id: &c.provider_id,
            integration_identifier: c.integration_identifier.as_deref(),
            credentials: CredentialsDto {
                webhook_url: k.webhook_url.as_deref(),
                channel: k.channel.as_deref(),
                device_tokens: k.device_tokens.as_deref(),
                alert_uid: k.alert_uid.as_deref(),
                title: k.title.as_deref(),
                image_url: k.image_url.as_deref(),
                state: k.state.as_deref(),
                external_url: k.external_url.as_deref(),
            },
            integration_id: c.integration_id.to_string(),
        }
    }
}

/// A presence event (SPEC section 11): `seq` as a decimal string (a u64
/// does not fit a JavaScript number), `lastOnlineAt` null while unset,
/// times as the document's.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct EventDto<'a> {
    seq: String,
    subscriber_id: &'a str,
    is_online: bool,
    last_online_at: Option<String>,
    #[serde(rename = "__v")]
    version: u64,
    at: String,
    cause: &'static str,
}

impl<'a> EventDto<'a> {
    pub fn new(event: &'a PresenceEvent) -> Self {
        EventDto {
            seq: event.seq.to_string(),
            subscriber_id: &event.subscriber_id,
            is_online: event.is_online,
            last_online_at: event.last_online_at.map(|t| t.to_string()),
            version: event.version.0,
            at: event.at.to_string(),
            cause: event.cause.as_str(),
        }
    }
}

/// `{"events": [...], "next": "<seq>"}`.
#[derive(Serialize)]
pub(crate) struct EventPageDto<'a> {
    events: Vec<EventDto<'a>>,
    next: String,
}

impl<'a> EventPageDto<'a> {
    pub fn new(page: &'a EventPage) -> Self {
        EventPageDto {
            events: page.events.iter().map(EventDto::new).collect(),
            next: page.next.to_string(),
        }
    }
}

/// `{"subscribers": [document...], "next": "<subscriberId>" | null}`; the
/// documents' `data` must already be parsed as raw JSON, one per document.
#[derive(Serialize)]
pub(crate) struct OnlinePageDto<'a> {
    subscribers: Vec<SubscriberDto<'a>>,
    next: Option<&'a str>,
}

impl<'a> OnlinePageDto<'a> {
    pub fn new(page: &'a OnlinePage, data: &'a [Option<Box<RawValue>>]) -> Self {
        OnlinePageDto {
            subscribers: page
                .subscribers
                .iter()
                .zip(data)
                .map(|(doc, data)| SubscriberDto::new(doc, data.as_deref()))
                .collect(),
            next: page.next.as_deref(),
        }
    }
}

/// `{"online": n, "subscribers": m}`.
#[derive(Serialize)]
pub(crate) struct StatsDto {
    online: u64,
    subscribers: u64,
}

impl StatsDto {
    pub fn new(stats: PresenceStats) -> Self {
        StatsDto {
            online: stats.online,
            subscribers: stats.subscribers,
        }
    }
}

/// Parses a request body as JSON: 400 for an empty body or anything not JSON.
pub(crate) fn parse_json(body: &[u8]) -> Result<Value, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(ApiError::bad_request(
            "Request body is empty; expected JSON",
        ));
    }
    serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("Request body is not valid JSON: {e}")))
}

/// The presence body: `{"isOnline": bool}`, or the legacy `{"online": bool}`
/// when `isOnline` is absent, and the optional `ttlSeconds` (SPEC section
/// 10). Extra fields are ignored.
#[derive(Debug)]
pub(crate) struct Presence {
    pub online: bool,
    /// The lease asked for; `None`: the server default.
    pub ttl_seconds: Option<u32>,
}

pub(crate) fn presence(body: &Value) -> Result<Presence, ApiError> {
    let mut p = Problems::new("");
    let (field, value) = match body.get("isOnline") {
        Some(v) => ("isOnline", Some(v)),
        None => match body.get("online") {
            Some(v) => ("online", Some(v)),
            None => ("isOnline", None),
        },
    };
    let online = match value {
        Some(Value::Bool(online)) => Some(*online),
        None | Some(Value::Null) => {
            p.add(
                field,
                &format!("{field} should not be null or undefined"),
                value,
            );
            p.add(field, &format!("{field} must be a boolean value"), value);
            None
        }
        Some(_) => {
            p.add(field, &format!("{field} must be a boolean value"), value);
            None
        }
    };
    let ttl = body.get("ttlSeconds");
    let ttl_seconds = match ttl {
        None | Some(Value::Null) => None,
        Some(value) => match whole_number(value).map(check_ttl_seconds) {
            Some(Ok(ttl)) => Some(ttl),
            Some(Err(problem)) => {
                p.broken(Field::TtlSeconds, &problem, Some(value));
                None
            }
            // Not a whole number at all: outside the rule's range too.
            None => {
                let problem = InputProblem::NotInRange {
                    min: 0,
                    max: u64::from(MAX_TTL_SECONDS),
                };
                p.broken(Field::TtlSeconds, &problem, Some(value));
                None
            }
        },
    };
    match online {
        Some(online) if p.0.is_empty() => Ok(Presence {
            online,
            ttl_seconds,
        }),
        _ => Err(ApiError::validation(p.0)),
    }
}

/// A JSON number that is a whole number at least 0 (`5.0` is 5); `None`
/// for anything else.
fn whole_number(value: &Value) -> Option<u64> {
    let Value::Number(n) = value else {
        return None;
    };
    if let Some(whole) = n.as_u64() {
        return Some(whole);
    }
    let float = n.as_f64()?;
    // Above u64's range saturates, and then fails the range check.
    (float.fract() == 0.0 && float >= 0.0).then_some(float as u64)
}

/// Collects per-field problems of a body; each field named after
/// `prefix` (`subscriber.` for the fields of an Inbox session's subscriber).
pub(crate) struct Problems(pub Map<String, Value>, pub &'static str);

impl Problems {
    pub(crate) fn new(prefix: &'static str) -> Problems {
        Problems(Map::new(), prefix)
    }

    pub(crate) fn add(&mut self, field: &str, message: &str, value: Option<&Value>) {
        let field = format!("{}{field}", self.1);
        match self.0.get_mut(&field).and_then(|e| e.get_mut("messages")) {
            Some(Value::Array(messages)) => messages.push(Value::String(message.into())),
            _ => {
                self.0.insert(field, field_error(&[message], value));
            }
        }
    }

    /// A value that breaks a store rule, in Novu's words.
    pub(crate) fn broken(&mut self, field: Field, problem: &InputProblem, value: Option<&Value>) {
        let name = crate::error::field_name(&field);
        self.add(&name, &rule_message(&field, problem), value);
    }

    /// An optional string field: absent (`None`, keep), null (`Some(None)`,
    /// clear) or a string; anything else is a problem.
    pub(crate) fn string(
        &mut self,
        body: &Map<String, Value>,
        field: &str,
    ) -> Option<Option<String>> {
        match body.get(field) {
            None => None,
            Some(Value::Null) => Some(None),
            Some(Value::String(s)) => Some(Some(s.clone())),
            Some(other) => {
                self.add(field, &format!("{field} must be a string"), Some(other));
                None
            }
        }
    }
}

/// The create/upsert body, checked into a store input (422 naming each bad
/// field). `null` on an optional field clears it (on a create: leaves it
/// unset), as Novu's `@IsOptional()` validation lets it through; `channels:
/// null` means "not given".
pub(crate) fn create_body(body: &Value, raw: &[u8]) -> Result<SubscriberInput, ApiError> {
    let mut p = Problems::new("");
    let Some(obj) = body.as_object() else {
        p.add(
            "subscriberId",
            "subscriberId should not be null or undefined",
            None,
        );
        p.add("subscriberId", "subscriberId must be a string", None);
        return Err(ApiError::validation(p.0));
    };
    let mut input = SubscriberInput::new(subscriber_id(&mut p, obj.get("subscriberId")));
    subscriber_fields(&mut p, obj, &mut input, raw_data(raw));
    input.channels = match obj.get("channels") {
        // Novu's Python SDKs send null for every field left unset.
        None | Some(Value::Null) => None,
        Some(Value::Array(items)) => Some(
            items
                .iter()
                .enumerate()
                .filter_map(|(i, item)| channel(&mut p, i, item))
                .collect(),
        ),
        Some(other) => {
            p.add("channels", "channels must be an array", Some(other));
            None
        }
    };
    if p.0.is_empty() {
        Ok(input)
    } else {
        Err(ApiError::validation(p.0))
    }
}

/// A body's `subscriberId`: a string that keeps the store's id rule (the
/// empty string stands in for one with a problem noted).
pub(crate) fn subscriber_id(p: &mut Problems, value: Option<&Value>) -> String {
    match value {
        None | Some(Value::Null) => {
            p.add(
                "subscriberId",
                "subscriberId should not be null or undefined",
                value,
            );
            p.add("subscriberId", "subscriberId must be a string", value);
            String::new()
        }
        Some(value @ Value::String(id)) => {
            if let Err(problem) = check_subscriber_id(id) {
                p.broken(Field::SubscriberId, &problem, Some(value));
            }
            id.clone()
        }
        Some(other) => {
            p.add("subscriberId", "subscriberId must be a string", Some(other));
            String::new()
        }
    }
}

/// The optional fields of a subscriber (`null` clears, on a create leaves
/// unset), the channels aside; `raw_data` is the text `data` was sent as.
pub(crate) fn subscriber_fields(
    p: &mut Problems,
    obj: &Map<String, Value>,
    input: &mut SubscriberInput,
    raw_data: Option<&str>,
) {
    input.first_name = p.string(obj, "firstName");
    input.last_name = p.string(obj, "lastName");
    input.phone = p.string(obj, "phone");
    input.avatar = p.string(obj, "avatar");
    input.locale = p.string(obj, "locale");
    input.timezone = p.string(obj, "timezone");
    input.email = match obj.get("email") {
        None => None,
        Some(Value::Null) => Some(None),
        Some(Value::String(s)) => Some(Some(s.clone())),
        Some(other) => {
            p.add("email", "email must be a string or null", Some(other));
            None
        }
    };
    input.data = match obj.get("data") {
        None => None,
        Some(Value::Null) => Some(None),
        // Kept as sent (numbers with every digit), from the raw body.
        Some(value) => match raw_data.map_or_else(|| Data::from_value(value), Data::parse) {
            Ok(data) => Some(Some(data)),
            Err(Error::InvalidInput { field, problem }) => {
                p.broken(field, &problem, Some(value));
                None
            }
            Err(other) => {
                p.add("data", &other.to_string(), Some(value));
                None
            }
        },
    };
}

/// The text of the body's `data` member, as sent.
fn raw_data(body: &[u8]) -> Option<&str> {
    #[derive(serde::Deserialize)]
    struct DataMember<'a> {
        #[serde(borrow)]
        data: Option<&'a RawValue>,
    }
    serde_json::from_slice::<DataMember<'_>>(body)
        .ok()?
        .data
        .map(RawValue::get)
}

fn channel(p: &mut Problems, i: usize, item: &Value) -> Option<ChannelSettings> {
    let field = |name: &str| format!("channels.{i}.{name}");
    let Some(obj) = item.as_object() else {
        p.add(
            &format!("channels.{i}"),
            "each value in channels must be an object",
            Some(item),
        );
        return None;
    };
    let provider = obj.get("providerId");
    let checked = match provider {
        Some(Value::String(id)) => check_provider_id(id).map(|()| id.clone()),
        // Not a string: not one of the names either, as Novu words it.
        _ => Err(InputProblem::UnknownProvider),
    };
    let provider_id = match checked {
        Ok(id) => id,
        Err(problem) => {
            p.broken(Field::ProviderId { channel: i }, &problem, provider);
            return None;
        }
    };
    let integration_identifier = match obj.get("integrationIdentifier") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s.clone()),
        Some(other) => {
            p.add(
                &field("integrationIdentifier"),
                "integrationIdentifier must be a string",
                Some(other),
            );
            return None;
        }
    };
    let credentials = match obj.get("credentials") {
        None | Some(Value::Null) => Credentials::default(),
        Some(Value::Object(c)) => credentials(p, &field("credentials"), c)?,
        Some(other) => {
            p.add(
                &field("credentials"),
                "credentials must be an object",
                Some(other),
            );
            return None;
        }
    };
    Some(ChannelSettings {
        provider_id,
        integration_identifier,
        credentials,
    })
}

fn credentials(p: &mut Problems, prefix: &str, c: &Map<String, Value>) -> Option<Credentials> {
    let before = p.0.len();
    let mut text = |name: &str| -> Option<String> {
        match c.get(name) {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) => Some(s.clone()),
            Some(other) => {
                p.add(
                    &format!("{prefix}.{name}"),
                    &format!("{name} must be a string"),
                    Some(other),
                );
                None
            }
        }
    };
    let webhook_url = text("webhookUrl");
    let channel = text("channel");
    let alert_uid = text("alertUid");
    let title = text("title");
    let image_url = text("imageUrl");
    let state = text("state");
    let external_url = text("externalUrl");
    let device_tokens = match c.get("deviceTokens") {
        None | Some(Value::Null) => None,
        Some(Value::Array(items)) if items.iter().all(Value::is_string) => Some(
            items
                .iter()
                .filter_map(|v| v.as_str().map(str::to_owned))
                .collect(),
        ),
        Some(other) => {
            p.add(
                &format!("{prefix}.deviceTokens"),
                "deviceTokens must be an array of strings",
                Some(other),
            );
            None
        }
    };
    (p.0.len() == before).then_some(Credentials {
        webhook_url,
        channel,
        device_tokens,
        alert_uid,
        title,
        image_url,
        state,
        external_url,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn create_body_of(body: &Value) -> Result<SubscriberInput, ApiError> {
        create_body(body, body.to_string().as_bytes())
    }

    #[test]
    fn presence_accepts_booleans_and_the_online_alias() {
        let online = |body: Value| presence(&body).ok().map(|p| p.online);
        assert_eq!(online(json!({"isOnline": true})), Some(true));
        assert_eq!(online(json!({"online": false})), Some(false));
        assert_eq!(
            online(json!({"isOnline": false, "online": true, "x": 1})),
            Some(false)
        );
    }

    #[test]
    fn presence_rejections_name_the_field() {
        let missing = presence(&json!({})).expect_err("missing");
        let errors = Value::Object(missing.errors().expect("errors").clone());
        assert_eq!(
            errors,
            json!({"isOnline": {"messages": ["isOnline should not be null or undefined", "isOnline must be a boolean value"]}})
        );
        let string = presence(&json!({"isOnline": "true"})).expect_err("string");
        assert_eq!(
            Value::Object(string.errors().expect("errors").clone()),
            json!({"isOnline": {"messages": ["isOnline must be a boolean value"], "value": "true"}})
        );
        for body in [json!([]), json!(1), json!("x"), json!(null)] {
            assert!(presence(&body).is_err(), "{body}");
        }
    }

    #[test]
    fn ttl_seconds_is_a_whole_number_from_0_to_86400() {
        let ttl = |body: Value| presence(&body).map(|p| p.ttl_seconds);
        assert_eq!(ttl(json!({"isOnline": true})).ok(), Some(None));
        assert_eq!(
            ttl(json!({"isOnline": true, "ttlSeconds": null})).ok(),
            Some(None)
        );
        assert_eq!(
            ttl(json!({"isOnline": true, "ttlSeconds": 0})).ok(),
            Some(Some(0))
        );
        assert_eq!(
            ttl(json!({"isOnline": true, "ttlSeconds": 5.0})).ok(),
            Some(Some(5))
        );
        assert_eq!(
            ttl(json!({"isOnline": false, "ttlSeconds": 86400})).ok(),
            Some(Some(86_400))
        );
        for bad in [
            json!(-1),
            json!(1.5),
            json!("30"),
            json!(true),
            json!(86_401),
            json!([30]),
            json!(1e30),
        ] {
            let error =
                ttl(json!({"isOnline": true, "ttlSeconds": bad.clone()})).expect_err("rejected");
            let errors = Value::Object(error.errors().expect("errors").clone());
            assert_eq!(
                errors,
                json!({"ttlSeconds": {"messages": ["ttlSeconds must be an integer between 0 and 86400"], "value": bad}})
            );
        }
        // Both fields' problems together.
        let error = presence(&json!({"isOnline": "yes", "ttlSeconds": -3})).expect_err("bad");
        let errors = error.errors().expect("errors");
        assert!(errors.contains_key("isOnline") && errors.contains_key("ttlSeconds"));
    }

    #[test]
    fn create_body_reports_every_bad_field() {
        let err =
            create_body_of(&json!({"subscriberId": 5, "email": 3, "data": [1], "channels": {}}))
                .expect_err("bad");
        let errors = err.errors().expect("errors");
        for field in ["subscriberId", "email", "data", "channels"] {
            assert!(errors.contains_key(field), "{field}");
        }
        let ok = create_body_of(&json!({"subscriberId": "u", "email": null, "data": {"a": 1}}))
            .expect("ok");
        assert_eq!(ok.email, Some(None));
    }

    #[test]
    fn null_on_optional_fields_means_clear_and_channels_null_means_absent() {
        // What Novu's legacy Python SDK sends for a create.
        let input = create_body_of(&json!({"subscriberId":"u","email":"a@b.c","firstName":"Ada","lastName":null,"phone":null,"avatar":null,"locale":null,"channels":null,"data":{}}))
            .expect("accepted");
        assert_eq!(input.first_name, Some(Some("Ada".into())));
        for field in [&input.last_name, &input.phone, &input.avatar, &input.locale] {
            assert_eq!(*field, Some(None));
        }
        assert_eq!(input.channels, None);
        let input =
            create_body_of(&json!({"subscriberId":"u","timezone":null,"data":null,"email":null}))
                .expect("accepted");
        assert_eq!(
            (input.timezone, input.data, input.email),
            (Some(None), Some(None), Some(None))
        );
        // null on the required id is still a 422.
        assert!(create_body_of(&json!({"subscriberId": null})).is_err());
    }
}
