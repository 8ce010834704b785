//! The subscriber document (SPEC section 3), what a create/upsert may set, and
//! the rules that validate and merge it. Storage layout and locking live elsewhere.

use std::fmt;

use sha2::{Digest, Sha256};

use crate::clock::Timestamp;
use crate::error::{Error, Field, InputProblem, Result};
use crate::id::ObjectId;
use crate::layout;
pub use crate::precondition::Version;
use crate::tenancy::Tenant;

impl Subscriber {
    /// The time a write at `now` gives this document: never earlier than
    /// a time it already holds, so its times never go backwards.
    pub(crate) fn write_time(&self, now: Timestamp) -> Timestamp {
        let latest = self
            .updated_at
            .max(self.created_at)
            .max(self.last_online_at.unwrap_or(self.updated_at));
        now.max(latest)
    }
}

/// The longest subscriber id, in bytes of UTF-8.
pub const MAX_SUBSCRIBER_ID_BYTES: usize = 255;

/// The provider ids a channel may name (from Novu's API).
pub const PROVIDER_IDS: &[&str] = &[
    "slack",
    "discord",
    "msteams",
    "mattermost",
    "ryver",
    "zulip",
    "grafana-on-call",
    "getstream",
    "rocket-chat",
    "whatsapp-business",
    "fcm",
    "apns",
    "expo",
    "one-signal",
    "pushpad",
    "push-webhook",
    "pusher-beams",
];

/// The subscriber id rule: 1 to 255 bytes, not blank, no control characters.
///
/// # Errors
/// The [`InputProblem`] the id has; the store reports it as
/// [`Error::InvalidInput`] naming [`Field::SubscriberId`].
pub fn check_subscriber_id(id: &str) -> std::result::Result<(), InputProblem> {
    match InputProblem::of_identifier(id, MAX_SUBSCRIBER_ID_BYTES) {
        Some(problem) => Err(problem),
        None => Ok(()),
    }
}

/// The channel rule: a provider id is one of [`PROVIDER_IDS`].
///
/// # Errors
/// [`InputProblem::UnknownProvider`].
pub fn check_provider_id(id: &str) -> std::result::Result<(), InputProblem> {
    if PROVIDER_IDS.contains(&id) {
        Ok(())
    } else {
        Err(InputProblem::UnknownProvider)
    }
}

/// [`check_subscriber_id`] as a store error.
pub(crate) fn validate_subscriber_id(id: &str) -> Result<()> {
    check_subscriber_id(id).map_err(|p| Error::invalid(Field::SubscriberId, p))
}

/// Free-form JSON kept with a subscriber: an object or `null`.
///
/// Held as compact JSON text; [`Data::to_value`] gives back a value equal to
/// the one stored.
#[derive(Clone, PartialEq, Eq, bincode::Encode, bincode::Decode)]
pub struct Data(String);

impl Data {
    /// Wraps a JSON value.
    ///
    /// # Errors
    /// [`Error::InvalidInput`] naming [`Field::Data`] when the value is
    /// neither an object nor null.
    pub fn from_value(value: &serde_json::Value) -> Result<Data> {
        if !(value.is_object() || value.is_null()) {
            return Err(Error::invalid(Field::Data, InputProblem::NotObjectOrNull));
        }
        serde_json::to_string(value)
            .map(Data)
            .map_err(|e| Error::invalid(Field::Data, InputProblem::NotJson(e.to_string())))
    }

    /// Parses JSON text and keeps it exactly as written, less the
    /// whitespace between tokens: numbers keep every digit and their form
    /// (`12345678901234567890123`, `1e2`), strings their escapes, objects
    /// their key order.
    ///
    /// ```
    /// use subscriber_store::Data;
    /// let data = Data::parse("{ \"n\": 1e2, \"big\": 12345678901234567890123 }")?;
    /// assert_eq!(data.as_json(), r#"{"n":1e2,"big":12345678901234567890123}"#);
    /// # Ok::<(), subscriber_store::Error>(())
    /// ```
    ///
    /// # Errors
    /// [`Error::InvalidInput`] naming [`Field::Data`] when the text is not
    /// JSON, or is JSON other than an object or null.
    pub fn parse(text: &str) -> Result<Data> {
        let value: serde_json::Value = serde_json::from_str(text)
            .map_err(|e| Error::invalid(Field::Data, InputProblem::NotJson(e.to_string())))?;
        if !(value.is_object() || value.is_null()) {
            return Err(Error::invalid(Field::Data, InputProblem::NotObjectOrNull));
        }
        Ok(Data(without_whitespace(text)))
    }

    /// The JSON text (compact).
    pub fn as_json(&self) -> &str {
        &self.0
    }

    /// The JSON value.
    ///
    /// # Errors
    /// [`Error::Corrupt`] if the stored text is no longer valid JSON.
    pub fn to_value(&self) -> Result<serde_json::Value> {
        serde_json::from_str(&self.0).map_err(|e| Error::Corrupt(format!("data is not JSON: {e}")))
    }
}

/// Valid JSON text with the whitespace outside strings removed.
fn without_whitespace(json: &str) -> String {
    let mut out = String::with_capacity(json.len());
    let (mut in_string, mut escaped) = (false, false);
    for c in json.chars() {
        if in_string {
            out.push(c);
            match (escaped, c) {
                (true, _) => escaped = false,
                (false, '\\') => escaped = true,
                (false, '"') => in_string = false,
                _ => {}
            }
        } else if !matches!(c, ' ' | '\t' | '\n' | '\r') {
            in_string = c == '"';
            out.push(c);
        }
    }
    out
}

impl fmt::Debug for Data {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Data({})", self.0)
    }
}

/// Credentials of a channel (Novu's `ChannelCredentials`); every field optional.
#[derive(Debug, Clone, Default, PartialEq, Eq, bincode::Encode, bincode::Decode)]
#[allow(missing_docs)] // each field is the Novu field of the same name
pub struct Credentials {
    pub webhook_url: Option<String>,
    pub channel: Option<String>,
    pub device_tokens: Option<Vec<String>>,
    pub alert_uid: Option<String>,
    pub title: Option<String>,
    pub image_url: Option<String>,
    pub state: Option<String>,
    pub external_url: Option<String>,
}

/// A channel as a create/upsert gives it.
#[derive(Debug, Clone, PartialEq, Eq, bincode::Encode)]
pub struct ChannelSettings {
    /// One of [`PROVIDER_IDS`].
    pub provider_id: String,
    /// Which integration of that provider, when there are several.
    pub integration_identifier: Option<String>,
    /// Provider credentials.
    pub credentials: Credentials,
}

/// A channel as stored: its settings plus the integration it resolves to.
#[derive(Debug, Clone, PartialEq, Eq, bincode::Encode, bincode::Decode)]
pub struct Channel {
    /// One of [`PROVIDER_IDS`].
    pub provider_id: String,
    /// Which integration of that provider, when there are several.
    pub integration_identifier: Option<String>,
    /// Provider credentials.
    pub credentials: Credentials,
    /// Novu's `_integrationId`: derived from the environment, provider and
    /// integration identifier, so it is stable across upserts.
    pub integration_id: ObjectId,
}

/// The subscriber document. Field names are Novu's in snake case.
#[derive(Debug, Clone, PartialEq, Eq, bincode::Encode, bincode::Decode)]
#[allow(missing_docs)] // each field is the Novu field of the same name (SPEC section 3)
pub struct Subscriber {
    /// Novu's `_id`.
    pub id: ObjectId,
    pub subscriber_id: String,
    pub first_name: Option<String>,
    pub last_name: Option<String>,
    /// `None`: never set; `Some(None)`: set to null.
    pub email: Option<Option<String>>,
    pub phone: Option<String>,
    pub avatar: Option<String>,
    pub locale: Option<String>,
    pub channels: Vec<Channel>,
    /// `None` until the first presence write.
    pub is_online: Option<bool>,
    pub last_online_at: Option<Timestamp>,
    /// The presence lease while one runs (SPEC section 10): only while
    /// online. Shown on the wire as `onlineExpiresAt`.
    pub lease: Option<Lease>,
    pub organization_id: ObjectId,
    pub environment_id: ObjectId,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
    /// Novu's `__v`.
    pub version: Version,
    pub data: Option<Data>,
    pub timezone: Option<String>,
}

/// A running presence lease: the subscriber is online until `expires_at`
/// unless another online write (a heartbeat, or its connections' renewal)
/// moves it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, bincode::Encode, bincode::Decode)]
pub struct Lease {
    /// The last online write: the last moment the subscriber was known online.
    pub heard_at: Timestamp,
    /// When the subscriber goes offline without another heartbeat.
    pub expires_at: Timestamp,
    /// `Some(run)`: a connection lease (SPEC 13), held by the open
    /// connections of the store run `run` (each [`Store`](crate::Store)
    /// draws its own at open) and renewed by it; a store that opens finds
    /// the leases of earlier runs dead and ends them at once. `None`: the
    /// lease of a heartbeat (`ttlSeconds`, SPEC 10).
    pub holder: Option<u64>,
}

/// The format version of subscriber documents written by this build
/// (format 1 had no lease; format 2's lease had no holder).
pub(crate) const DOCUMENT_FORMAT: u8 = 3;

impl Subscriber {
    pub(crate) fn encode(&self) -> Result<Vec<u8>> {
        layout::encode_as(DOCUMENT_FORMAT, self)
    }

    pub(crate) fn decode(bytes: &[u8]) -> Result<Subscriber> {
        match layout::split_format(bytes)? {
            (DOCUMENT_FORMAT, body) => layout::decode_body(body),
            (2, body) => layout::decode_body::<v2::Subscriber>(body).map(Subscriber::from),
            (1, body) => layout::decode_body::<v1::Subscriber>(body).map(Subscriber::from),
            (version, _) => Err(layout::unsupported(version)),
        }
    }
}

/// Documents as format 1 wrote them (before leases); idempotency records
/// of formats 1 and 2 hold them too.
pub(crate) mod v1 {
    use super::{Channel, Data, ObjectId, Timestamp, Version};

    #[derive(Debug, Clone, PartialEq, Eq, bincode::Decode)]
    pub(crate) struct Subscriber {
        id: ObjectId,
        subscriber_id: String,
        first_name: Option<String>,
        last_name: Option<String>,
        email: Option<Option<String>>,
        phone: Option<String>,
        avatar: Option<String>,
        locale: Option<String>,
        channels: Vec<Channel>,
        is_online: Option<bool>,
        last_online_at: Option<Timestamp>,
        organization_id: ObjectId,
        environment_id: ObjectId,
        created_at: Timestamp,
        updated_at: Timestamp,
        version: Version,
        data: Option<Data>,
        timezone: Option<String>,
    }

    impl From<Subscriber> for super::Subscriber {
        fn from(old: Subscriber) -> Self {
            super::Subscriber {
                id: old.id,
                subscriber_id: old.subscriber_id,
                first_name: old.first_name,
                last_name: old.last_name,
                email: old.email,
                phone: old.phone,
                avatar: old.avatar,
                locale: old.locale,
                channels: old.channels,
                is_online: old.is_online,
                last_online_at: old.last_online_at,
                lease: None,
                organization_id: old.organization_id,
                environment_id: old.environment_id,
                created_at: old.created_at,
                updated_at: old.updated_at,
                version: old.version,
                data: old.data,
                timezone: old.timezone,
            }
        }
    }
}

/// Documents as format 2 wrote them (a lease without its holder: every
/// lease was a heartbeat's); idempotency records of format 3 hold them too.
pub(crate) mod v2 {
    use super::{Channel, Data, ObjectId, Timestamp, Version};

    #[derive(Debug, Clone, Copy, PartialEq, Eq, bincode::Decode)]
    pub(crate) struct Lease {
        heard_at: Timestamp,
        expires_at: Timestamp,
    }

    #[derive(Debug, Clone, PartialEq, Eq, bincode::Decode)]
    pub(crate) struct Subscriber {
        id: ObjectId,
        subscriber_id: String,
        first_name: Option<String>,
        last_name: Option<String>,
        email: Option<Option<String>>,
        phone: Option<String>,
        avatar: Option<String>,
        locale: Option<String>,
        channels: Vec<Channel>,
        is_online: Option<bool>,
        last_online_at: Option<Timestamp>,
        lease: Option<Lease>,
        organization_id: ObjectId,
        environment_id: ObjectId,
        created_at: Timestamp,
        updated_at: Timestamp,
        version: Version,
        data: Option<Data>,
        timezone: Option<String>,
    }

    impl From<Subscriber> for super::Subscriber {
        fn from(old: Subscriber) -> Self {
            super::Subscriber {
                id: old.id,
                subscriber_id: old.subscriber_id,
                first_name: old.first_name,
                last_name: old.last_name,
                email: old.email,
                phone: old.phone,
                avatar: old.avatar,
                locale: old.locale,
                channels: old.channels,
                is_online: old.is_online,
                last_online_at: old.last_online_at,
                lease: old.lease.map(|lease| super::Lease {
                    heard_at: lease.heard_at,
                    expires_at: lease.expires_at,
                    holder: None,
                }),
                organization_id: old.organization_id,
                environment_id: old.environment_id,
                created_at: old.created_at,
                updated_at: old.updated_at,
                version: old.version,
                data: old.data,
                timezone: old.timezone,
            }
        }
    }
}

/// What a create/upsert sets: the id, and each other field as given.
///
/// Every optional field is three-way (as Novu's API is, where a client may
/// send `null`): `None` leaves the field as it is; `Some(None)` clears it (on
/// a create: leaves it unset); `Some(Some(value))` sets it. `channels` is
/// two-way: `None` leaves the channels, `Some(list)` replaces them.
///
/// ```
/// use subscriber_store::{Config, Store, SubscriberInput};
///
/// let store = Store::open(Config::temporary())?;
/// let org = store.create_organization("Acme")?;
/// let tenant = store.create_environment(org.id, "Development")?.tenant();
/// let mut input = SubscriberInput::new("u1");
/// input.first_name = Some(Some("Ada".into()));
/// input.last_name = Some(None); // nothing to clear on a create
/// let doc = store.upsert(&tenant, input, None)?;
/// assert_eq!((doc.first_name.as_deref(), doc.last_name), (Some("Ada"), None));
///
/// let mut clear = SubscriberInput::new("u1");
/// clear.first_name = Some(None);
/// assert_eq!(store.upsert(&tenant, clear, None)?.first_name, None);
/// # Ok::<(), subscriber_store::Error>(())
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq, bincode::Encode)]
#[allow(missing_docs)] // each field is the Novu field of the same name
pub struct SubscriberInput {
    pub subscriber_id: String,
    pub first_name: Option<Option<String>>,
    pub last_name: Option<Option<String>>,
    pub email: Option<Option<String>>,
    pub phone: Option<Option<String>>,
    pub avatar: Option<Option<String>>,
    pub locale: Option<Option<String>>,
    pub channels: Option<Vec<ChannelSettings>>,
    pub data: Option<Option<Data>>,
    pub timezone: Option<Option<String>>,
}

impl SubscriberInput {
    /// An input that names only the subscriber.
    pub fn new(subscriber_id: impl Into<String>) -> Self {
        SubscriberInput {
            subscriber_id: subscriber_id.into(),
            ..Default::default()
        }
    }

    /// Checks what the store can check: the id and channel provider ids.
    pub(crate) fn validate(&self) -> Result<()> {
        validate_subscriber_id(&self.subscriber_id)?;
        for (i, channel) in self.channels.iter().flatten().enumerate() {
            check_provider_id(&channel.provider_id)
                .map_err(|p| Error::invalid(Field::ProviderId { channel: i }, p))?;
        }
        Ok(())
    }

    /// The document after this upsert: a new one at version 0 if `current` is
    /// `None`, else `current` with the given fields replaced and version + 1.
    pub(crate) fn apply(
        self,
        current: Option<Subscriber>,
        tenant: &Tenant,
        now: Timestamp,
        fresh_id: ObjectId,
    ) -> Subscriber {
        let mut doc = match current {
            Some(mut doc) => {
                doc.version = doc.version.next();
                doc.updated_at = now;
                doc
            }
            None => Subscriber {
                id: fresh_id,
                subscriber_id: self.subscriber_id.clone(),
                first_name: None,
                last_name: None,
                email: None,
                phone: None,
                avatar: None,
                locale: None,
                channels: Vec::new(),
                is_online: None,
                last_online_at: None,
                lease: None,
                organization_id: tenant.organization_id(),
                environment_id: tenant.environment_id(),
                created_at: now,
                updated_at: now,
                version: Version(0),
                data: None,
                timezone: None,
            },
        };
        let env = tenant.environment_id();
        set(&mut doc.first_name, self.first_name);
        set(&mut doc.last_name, self.last_name);
        // The stored email keeps its own null (`Some(None)`) for documents
        // written before null meant "clear"; a clear now removes the field.
        set(&mut doc.email, self.email.map(|e| e.map(Some)));
        set(&mut doc.phone, self.phone);
        set(&mut doc.avatar, self.avatar);
        set(&mut doc.locale, self.locale);
        set(&mut doc.data, self.data);
        set(&mut doc.timezone, self.timezone);
        if let Some(channels) = self.channels {
            doc.channels = channels
                .into_iter()
                .map(|c| Channel {
                    integration_id: integration_id(env, &c),
                    provider_id: c.provider_id,
                    integration_identifier: c.integration_identifier,
                    credentials: c.credentials,
                })
                .collect();
        }
        doc
    }
}

/// Applies a three-way input field: absent keeps, `Some(None)` clears,
/// `Some(Some(v))` sets.
fn set<T>(field: &mut Option<T>, given: Option<Option<T>>) {
    if let Some(given) = given {
        *field = given;
    }
}

fn integration_id(env: ObjectId, channel: &ChannelSettings) -> ObjectId {
    let mut h = Sha256::new();
    h.update(env.as_bytes());
    h.update(channel.provider_id.as_bytes());
    h.update([0]);
    if let Some(ident) = &channel.integration_identifier {
        h.update(ident.as_bytes());
    }
    let digest = h.finalize();
    let mut bytes = [0u8; 12];
    bytes.copy_from_slice(&digest[..12]);
    ObjectId::from_bytes(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subscriber_id_limits() {
        assert!(validate_subscriber_id("a").is_ok());
        assert!(validate_subscriber_id(&"é".repeat(127)).is_ok()); // 254 bytes
        assert!(validate_subscriber_id(&"x".repeat(255)).is_ok());
        for bad in ["", "   ", "a\u{0}b", "tab\there", "nl\n"] {
            assert!(validate_subscriber_id(bad).is_err(), "{bad:?}");
        }
        assert!(validate_subscriber_id(&"x".repeat(256)).is_err());
        assert!(validate_subscriber_id(&"é".repeat(128)).is_err()); // 256 bytes
    }

    #[test]
    fn data_must_be_object_or_null() {
        assert!(Data::parse("{\"a\":[1,2.5,\"x\"]}").is_ok());
        assert!(Data::parse("null").is_ok());
        for bad in ["[]", "1", "\"s\"", "true", "{", ""] {
            assert!(Data::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn parsed_data_keeps_its_text() {
        let text = "{ \"a b\" : [1e2, 1.50, -0.0],\n \"s\": \"x \\\" y\\\\\", \"z\":{}}";
        assert_eq!(
            Data::parse(text).expect("json").as_json(),
            r#"{"a b":[1e2,1.50,-0.0],"s":"x \" y\\","z":{}}"#
        );
    }

    #[test]
    fn data_round_trips_as_equal_value() {
        let value = serde_json::json!({"z": 1, "a": {"nested": [1.5, null, "ü"]}, "big": 12345678901234u64});
        let data = Data::from_value(&value).expect("object");
        assert_eq!(data.to_value().expect("json"), value);
        // key order is kept
        assert!(data.as_json().starts_with("{\"z\":1"));
    }
}
