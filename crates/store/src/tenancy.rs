//! Organizations, environments (each with its public application
//! identifier) and API keys. A key is stored as the SHA-256 digest of its
//! secret, and, when the store has a server key, sealed under it for HMAC
//! verification (never in the clear); resolving one yields the [`Tenant`]
//! that scopes every subscriber operation.

use sha2::{Digest, Sha256};

use crate::clock::Timestamp;
use crate::error::{Error, Field, InputProblem, Result};
use crate::id::{ObjectId, fill_random};
use crate::layout::{self, Trees};

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
    /// Its public, stable application identifier (Novu's
    /// `applicationIdentifier`, what the Inbox is given): no secret, and
    /// it grants nothing alone.
    pub identifier: String,
}

/// An environment as format 1 stored it (before identifiers).
#[derive(bincode::Decode)]
struct EnvironmentV1 {
    id: ObjectId,
    organization_id: ObjectId,
    name: String,
    created_at: Timestamp,
}

/// The record format of environments that carry their identifier.
const ENVIRONMENT_FORMAT: u8 = 2;

impl Environment {
    pub(crate) fn encode(&self) -> Result<Vec<u8>> {
        layout::encode_as(ENVIRONMENT_FORMAT, self)
    }

    /// Decodes format 2, and format 1 with the identifier
    /// [`legacy_identifier`] gives it (the one open writes for it).
    pub(crate) fn decode(bytes: &[u8]) -> Result<Environment> {
        match layout::split_format(bytes)? {
            (ENVIRONMENT_FORMAT, body) => layout::decode_body(body),
            (layout::FORMAT_VERSION, body) => {
                let v1: EnvironmentV1 = layout::decode_body(body)?;
                Ok(Environment {
                    identifier: legacy_identifier(v1.id),
                    id: v1.id,
                    organization_id: v1.organization_id,
                    name: v1.name,
                    created_at: v1.created_at,
                })
            }
            (version, _) => Err(layout::unsupported(version)),
        }
    }

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

/// An API key as the store keeps it: its public facts and, once the store
/// had a server key and the secret, the secret sealed under that key.
#[derive(Debug, Clone, PartialEq, Eq, bincode::Encode, bincode::Decode)]
pub(crate) struct StoredKey {
    pub info: ApiKeyInfo,
    /// `ServerKey::seal` of the secret; `None` for keys made without a
    /// server key (sealed when they next authenticate).
    pub sealed: Option<Vec<u8>>,
}

/// The record format of keys that may carry a sealed secret.
const KEY_FORMAT: u8 = 2;

impl StoredKey {
    pub(crate) fn encode(&self) -> Result<Vec<u8>> {
        layout::encode_as(KEY_FORMAT, self)
    }

    /// Decodes format 2, and format 1 (a bare `ApiKeyInfo`, nothing sealed).
    pub(crate) fn decode(bytes: &[u8]) -> Result<StoredKey> {
        match layout::split_format(bytes)? {
            (KEY_FORMAT, body) => layout::decode_body(body),
            (layout::FORMAT_VERSION, body) => Ok(StoredKey {
                info: layout::decode_body(body)?,
                sealed: None,
            }),
            (version, _) => Err(layout::unsupported(version)),
        }
    }
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

/// The characters of an application identifier (URL-safe, as Novu's).
const IDENTIFIER_ALPHABET: &[u8; 64] =
    b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

/// How many characters an identifier has (72 bits, as Novu's 12).
pub(crate) const IDENTIFIER_LEN: usize = 12;

/// The longest identifier looked up; longer is unknown without a read.
const MAX_IDENTIFIER_LEN: usize = 64;

/// A new random application identifier.
pub(crate) fn new_identifier() -> Result<String> {
    let mut raw = [0u8; IDENTIFIER_LEN];
    fill_random(&mut raw)?;
    Ok(spell_identifier(&raw))
}

/// The identifier of an environment created before identifiers existed:
/// derived from its id, so every reader of its old record agrees with the
/// one written for it at open. (The id is no more public than the
/// identifier, which grants nothing alone.)
pub(crate) fn legacy_identifier(id: ObjectId) -> String {
    let mut hash = Sha256::new();
    hash.update(b"subscriberd environment identifier v1");
    hash.update(id.as_bytes());
    spell_identifier(&hash.finalize()[..IDENTIFIER_LEN])
}

/// Each byte's low six bits as a character of the alphabet.
fn spell_identifier(bytes: &[u8]) -> String {
    bytes
        .iter()
        .map(|b| IDENTIFIER_ALPHABET[usize::from(b & 63)] as char)
        .collect()
}

/// Whether `text` could be an identifier (1 to 64 URL-safe characters):
/// anything else is unknown without a lookup.
pub(crate) fn plausible_identifier(text: &str) -> bool {
    (1..=MAX_IDENTIFIER_LEN).contains(&text.len())
        && text.bytes().all(|b| IDENTIFIER_ALPHABET.contains(&b))
}

/// At open: every environment record in format 2 and findable by its
/// identifier. Format-1 records get [`legacy_identifier`]; the index entry
/// is written before the record, as at creation.
pub(crate) fn upgrade_environments(trees: &Trees) -> Result<()> {
    for entry in trees.environments.iter() {
        let (key, bytes) = entry?;
        let env = Environment::decode(&bytes)?;
        let index = layout::identifier_key(&env.identifier);
        if trees.environment_identifiers.get(index)?.is_none() {
            trees
                .environment_identifiers
                .insert(index, env.id.as_bytes())?;
        }
        if layout::split_format(&bytes)?.0 != ENVIRONMENT_FORMAT {
            trees.environments.insert(key, env.encode()?)?;
        }
    }
    Ok(())
}
