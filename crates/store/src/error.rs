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

    /// An argument is malformed; `field` names it. Nothing was changed.
    #[error("invalid {field}: {message}")]
    InvalidInput {
        /// The offending field, as named on the wire (`subscriberId`, `data`, ...).
        field: String,
        /// What is wrong with it.
        message: String,
    },

    /// An idempotency key is malformed. Nothing was recorded or changed.
    #[error("invalid idempotency key: {0}")]
    InvalidIdempotencyKey(KeyProblem),

    /// The idempotency key was already used for another request (other
    /// subscriber, body or operation). Nothing was changed.
    #[error("idempotency key reused for a different request")]
    IdempotencyKeyReused,

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
    pub(crate) fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        Error::InvalidInput {
            field: field.into(),
            message: message.into(),
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
