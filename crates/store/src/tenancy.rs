//! Organizations, environments and API keys. A key is stored only as the
//! SHA-256 digest of its secret; resolving one yields the [`Tenant`] that
//! scopes every subscriber operation.

use crate::clock::Timestamp;
use crate::error::{Error, Field, InputProblem, Result};
use crate::id::ObjectId;

/// The scope of subscriber operations: one environment of one organization.
///
/// Obtained only from the store ([`Store::tenant`], [`Store::resolve_key`]),
/// so holding one means the environment exists.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Tenant {
    pub(crate) organization: ObjectId,
    pub(crate) environment: ObjectId,
}

impl Tenant {
    /// The organization's id (`_organizationId`).
    pub fn organization_id(&self) -> ObjectId {
        self.organization
    }

    /// The environment's id (`_environmentId`).
    pub fn environment_id(&self) -> ObjectId {
        self.environment
    }
}

/// An organization.
#[derive(Debug, Clone, PartialEq, Eq, bincode::Encode, bincode::Decode)]
pub struct Organization {
    /// Its id.
    pub id: ObjectId,
    /// Its name.
    pub name: String,
    /// When it was created.
    pub created_at: Timestamp,
}

/// An environment of an organization (Novu's Development, Production...).
#[derive(Debug, Clone, PartialEq, Eq, bincode::Encode, bincode::Decode)]
pub struct Environment {
    /// Its id.
    pub id: ObjectId,
    /// The organization it belongs to.
    pub organization_id: ObjectId,
    /// Its name.
    pub name: String,
    /// When it was created.
    pub created_at: Timestamp,
}

impl Environment {
    /// The tenant this environment scopes.
    pub fn tenant(&self) -> Tenant {
        Tenant {
            organization: self.organization_id,
            environment: self.id,
        }
    }
}

/// What is kept of an API key: never its secret.
#[derive(Debug, Clone, PartialEq, Eq, bincode::Encode, bincode::Decode)]
pub struct ApiKeyInfo {
    /// The key's id, used to revoke it.
    pub id: ObjectId,
    /// The organization of its environment.
    pub organization_id: ObjectId,
    /// The environment it grants access to.
    pub environment_id: ObjectId,
    /// The last four characters of the secret, to tell keys apart.
    pub hint: String,
    /// When it was issued.
    pub created_at: Timestamp,
}

/// A freshly issued key: the only time its secret is available.
#[derive(Clone, PartialEq, Eq)]
pub struct IssuedKey {
    /// The secret to send as `Authorization: ApiKey <secret>`.
    pub secret: String,
    /// What the store keeps of it.
    pub info: ApiKeyInfo,
}

impl std::fmt::Debug for IssuedKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IssuedKey")
            .field("secret", &"<redacted>")
            .field("info", &self.info)
            .finish()
    }
}

/// The name rule of organizations and environments: 1 to 255 bytes, not
/// blank, no control characters.
pub(crate) fn validate_name(name: &str) -> Result<()> {
    match InputProblem::of_identifier(name, MAX_NAME_BYTES) {
        Some(problem) => Err(Error::invalid(Field::Name, problem)),
        None => Ok(()),
    }
}

/// The longest organization or environment name, in bytes of UTF-8.
const MAX_NAME_BYTES: usize = 255;
