//! The store's one error type. Each variant is something a caller can act on;
//! sled's own error type never crosses this boundary.

use crate::precondition::{Precondition, Version};

/// What a store operation can fail with.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The named thing does not exist (or was deleted).
    #[error("{0} not found")]
    NotFound(Entity),

    /// The write's precondition does not hold: the document is at another
    /// version (or absent: `current` is `None`). Nothing was changed.
    #[error("version conflict: expected {expected}, current {current:?}")]
    VersionConflict {
        /// What the caller expected.
        expected: Precondition,
        /// The version the document is at, if it exists.
        current: Option<Version>,
    },

    /// A create that must not overwrite found the subscriber present.
    #[error("subscriber already exists at version {current}")]
    AlreadyExists {
        /// The version of the existing document.
        current: Version,
    },

    /// An argument breaks one of the store's rules. Nothing was changed.
    #[error("invalid {field}: {problem}")]
    InvalidInput {
        /// The argument that breaks it.
        field: Field,
        /// The rule it breaks.
        problem: InputProblem,
    },

    /// The document a write would store takes more than the store keeps in
    /// one record ([`MAX_RECORD_BYTES`](crate::MAX_RECORD_BYTES)). Nothing was changed.
    #[error("the document would take {bytes} bytes; a record holds at most {limit}")]
    TooLarge {
        /// The encoded size of the document.
        bytes: usize,
        /// The largest record the store keeps.
        limit: usize,
    },

    /// An idempotency key is malformed. Nothing was recorded or changed.
    #[error("invalid idempotency key: {0}")]
    InvalidIdempotencyKey(KeyProblem),

    /// The idempotency key was already used for another request (other
    /// subscriber, body or operation). Nothing was changed.
    #[error("idempotency key reused for a different request")]
    IdempotencyKeyReused,

    /// A cursor into the presence event feed points before events that
    /// retention has purged (SPEC section 11): resuming from it would skip
    /// them. The reader resynchronises from the online query.
    #[error(
        "the events after {after} are no longer kept; the oldest kept event follows {purged_through}"
    )]
    CursorExpired {
        /// The cursor given.
        after: u64,
        /// Every event up to this seq has been purged.
        purged_through: u64,
    },

    /// The store was opened with the presence feed off
    /// ([`Config::presence_feed`](crate::Config::presence_feed)): no event
    /// feed, online index or counts are kept.
    #[error("the presence feed is off in this store")]
    FeedOff,

    /// The backend does not offer this call (the PostgreSQL backend and
    /// connection presence, [`Backend::connect`](crate::Backend::connect)).
    #[error("{0} is not supported on this backend")]
    Unsupported(&'static str),

    /// A stored record could not be decoded: corrupt bytes or a record
    /// written by an unknown format version.
    #[error("corrupt record: {0}")]
    Corrupt(String),

    /// The storage engine or the file system failed.
    #[error("storage failure: {0}")]
    Storage(String),
}

/// The kinds of thing that can be missing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Entity {
    /// A subscriber document.
    Subscriber,
    /// An organization.
    Organization,
    /// An environment.
    Environment,
    /// An API key.
    ApiKey,
}

impl std::fmt::Display for Entity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Entity::Subscriber => "subscriber",
            Entity::Organization => "organization",
            Entity::Environment => "environment",
            Entity::ApiKey => "API key",
        })
    }
}

/// The store's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl From<sled::Error> for Error {
    fn from(e: sled::Error) -> Self {
        match e {
            sled::Error::Corruption { .. } => Error::Corrupt(e.to_string()),
            other => Error::Storage(other.to_string()),
        }
    }
}

impl From<std::io::Error> for Error {
    fn from(e: std::io::Error) -> Self {
        Error::Storage(e.to_string())
    }
}

impl Error {
    pub(crate) fn invalid(field: Field, problem: InputProblem) -> Self {
        Error::InvalidInput { field, problem }
    }
}

/// The arguments the store checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Field {
    /// A subscriber's id.
    SubscriberId,
    /// A subscriber's free-form `data`.
    Data,
    /// The provider id of the channel at this index of a create's channels.
    ProviderId {
        /// The channel's index in the list.
        channel: usize,
    },
    /// The name of an organization or an environment.
    Name,
    /// An [`ObjectId`](crate::ObjectId) given as text.
    Id,
    /// An API key's secret.
    ApiKey,
    /// A presence lease's length, in seconds.
    TtlSeconds,
    /// The size of a page of events or subscribers.
    Limit,
    /// The cursor of a page of online subscribers (a subscriber id).
    After,
    /// The window of the online query, in seconds.
    Within,
    /// The server key, as text.
    ServerKey,
}

impl std::fmt::Display for Field {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Field::SubscriberId => f.write_str("subscriber id"),
            Field::Data => f.write_str("data"),
            Field::ProviderId { channel } => write!(f, "provider id of channel {channel}"),
            Field::Name => f.write_str("name"),
            Field::Id => f.write_str("id"),
            Field::ApiKey => f.write_str("API key"),
            Field::TtlSeconds => f.write_str("lease TTL in seconds"),
            Field::Limit => f.write_str("page size"),
            Field::After => f.write_str("cursor"),
            Field::Within => f.write_str("window in seconds"),
            Field::ServerKey => f.write_str("server key"),
        }
    }
}

/// Which rule an argument breaks. The store owns each rule; a facade
/// words the problem in its own language.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum InputProblem {
    /// Empty, or nothing but whitespace.
    Blank,
    /// Longer than `max_bytes` bytes of UTF-8.
    TooLong {
        /// The most it may take.
        max_bytes: usize,
    },
    /// Holds a control character.
    ControlCharacter,
    /// Not one of [`PROVIDER_IDS`](crate::PROVIDER_IDS).
    UnknownProvider,
    /// JSON, but neither an object nor null.
    NotObjectOrNull,
    /// Not JSON at all; what the parser said.
    NotJson(String),
    /// Not 24 hexadecimal characters.
    NotObjectId,
    /// Not 16 to 255 visible ASCII characters.
    BadSecret,
    /// Already the key of another environment.
    KeyOfAnotherEnvironment,
    /// Not 64 hexadecimal characters (a server key's text).
    NotServerKey,
    /// Not a whole number from `min` to `max`.
    NotInRange {
        /// The least it may be.
        min: u64,
        /// The most it may be.
        max: u64,
    },
}

impl InputProblem {
    /// The rule that subscriber ids and tenancy names share: not blank, at
    /// most `max_bytes` bytes of UTF-8, no control characters.
    pub(crate) fn of_identifier(text: &str, max_bytes: usize) -> Option<InputProblem> {
        if text.trim().is_empty() {
            Some(InputProblem::Blank)
        } else if text.len() > max_bytes {
            Some(InputProblem::TooLong { max_bytes })
        } else if text.chars().any(char::is_control) {
            Some(InputProblem::ControlCharacter)
        } else {
            None
        }
    }
}

impl std::fmt::Display for InputProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            InputProblem::Blank => f.write_str("it is blank"),
            InputProblem::TooLong { max_bytes } => write!(f, "it is longer than {max_bytes} bytes"),
            InputProblem::ControlCharacter => f.write_str("it holds a control character"),
            InputProblem::UnknownProvider => f.write_str("it is not a known provider id"),
            InputProblem::NotObjectOrNull => f.write_str("it is neither a JSON object nor null"),
            InputProblem::NotJson(why) => write!(f, "it is not JSON ({why})"),
            InputProblem::NotObjectId => f.write_str("it is not 24 hexadecimal characters"),
            InputProblem::BadSecret => f.write_str("it is not 16 to 255 visible ASCII characters"),
            InputProblem::KeyOfAnotherEnvironment => {
                f.write_str("it already belongs to another environment")
            }
            InputProblem::NotServerKey => f.write_str("it is not 64 hexadecimal characters"),
            InputProblem::NotInRange { min, max } => {
                write!(f, "it is not a whole number from {min} to {max}")
            }
        }
    }
}

/// Why a string is not an idempotency key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum KeyProblem {
    /// It is empty.
    Empty,
    /// It is longer than [`MAX_IDEMPOTENCY_KEY_LEN`](crate::MAX_IDEMPOTENCY_KEY_LEN).
    TooLong,
    /// It holds a character outside visible ASCII (space and controls included).
    NotVisibleAscii,
}

impl std::fmt::Display for KeyProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            KeyProblem::Empty => "it is empty",
            KeyProblem::TooLong => "it is longer than 255 characters",
            KeyProblem::NotVisibleAscii => "it holds characters other than visible ASCII",
        })
    }
}
