//! The store's tenancy calls: organizations, environments and API keys
//! (the records and their rules are in `crate::tenancy`).

use crate::error::{Entity, Error, Field, InputProblem, Result};
use crate::id::{ObjectId, fill_random, hex};
use crate::layout;
use crate::store::{Engine, Store};
use crate::tenancy::{
    ApiKeyInfo, Environment, IssuedKey, Organization, StoredKey, Tenant, new_identifier,
    plausible_identifier, validate_name,
};

impl Store {
    /// Makes the tenancy change just committed in memory durable, whatever
    /// the mode: in relaxed mode a created key that vanishes, or a revoked
    /// key that works again, after a crash is a security problem, not a lost
    /// presence update; these writes are rare, so each pays for a flush.
    /// Durable mode shares the group commit; a temporary store never syncs.
    fn persist_tenancy(&self, engine: &Engine) -> Result<()> {
        let result = if self.waits_for_disk() {
            engine.barrier.wait_until_durable(engine.barrier.ticket())
        } else {
            self.sync_on(engine)
        };
        self.noted(engine, result)
    }

    /// Creates an organization.
    ///
    /// # Errors
    /// [`Error::InvalidInput`] for a blank or over-long name; [`Error::Storage`].
    pub fn create_organization(&self, name: &str) -> Result<Organization> {
        validate_name(name)?;
        let now = self.now();
        let org = Organization {
            id: ObjectId::generate(now)?,
            name: name.to_owned(),
            created_at: now,
        };
        let engine = self.engine()?;
        engine
            .trees
            .organizations
            .insert(layout::organization_key(org.id), layout::encode(&org)?)?;
        self.persist_tenancy(&engine)?;
        Ok(org)
    }

    /// Creates an environment in an existing organization.
    ///
    /// # Errors
    /// [`Error::NotFound`] if the organization does not exist;
    /// [`Error::InvalidInput`]; [`Error::Storage`].
    pub fn create_environment(&self, organization: ObjectId, name: &str) -> Result<Environment> {
        validate_name(name)?;
        let engine = self.engine()?;
        let trees = &engine.trees;
        if !trees
            .organizations
            .contains_key(layout::organization_key(organization))?
        {
            return Err(Error::NotFound(Entity::Organization));
        }
        let now = self.now();
        let id = ObjectId::generate(now)?;
        // The identifier's index entry first, claimed only if free: an
        // environment is never there without it.
        let mut claimed = None;
        for _ in 0..4 {
            let identifier = new_identifier()?;
            let swapped = trees.environment_identifiers.compare_and_swap(
                layout::identifier_key(&identifier),
                None as Option<&[u8]>,
                Some(id.as_bytes()),
            )?;
            if swapped.is_ok() {
                claimed = Some(identifier);
                break;
            }
        }
        let identifier = claimed
            .ok_or_else(|| Error::Storage("no free application identifier was drawn".into()))?;
        let env = Environment {
            id,
            organization_id: organization,
            name: name.to_owned(),
            created_at: now,
            identifier,
        };
        trees
            .environments
            .insert(layout::environment_key(env.id), env.encode()?)?;
        self.persist_tenancy(&engine)?;
        Ok(env)
    }

    /// The environment whose application identifier is `identifier`.
    ///
    /// # Errors
    /// [`Error::NotFound`] (`Environment`) for an unknown identifier;
    /// [`Error::Storage`], [`Error::Corrupt`].
    pub fn environment_by_identifier(&self, identifier: &str) -> Result<Environment> {
        if !plausible_identifier(identifier) {
            return Err(Error::NotFound(Entity::Environment));
        }
        let engine = self.engine()?;
        let Some(id) = engine
            .trees
            .environment_identifiers
            .get(layout::identifier_key(identifier))?
        else {
            return Err(Error::NotFound(Entity::Environment));
        };
        let id = <[u8; 12]>::try_from(id.as_ref())
            .map_err(|_| Error::Corrupt("an identifier names an id of the wrong length".into()))?;
        let env = self.environment(ObjectId::from_bytes(id))?;
        // An entry whose environment creation did not finish is no match.
        if env.identifier != identifier {
            return Err(Error::NotFound(Entity::Environment));
        }
        Ok(env)
    }

    /// Every environment, in id order.
    ///
    /// # Errors
    /// [`Error::Storage`], [`Error::Corrupt`].
    pub fn environments(&self) -> Result<Vec<Environment>> {
        self.engine()?
            .trees
            .environments
            .iter()
            .values()
            .map(|v| Environment::decode(&v?))
            .collect()
    }

    /// Every organization, in id order.
    ///
    /// # Errors
    /// [`Error::Storage`], [`Error::Corrupt`].
    pub fn organizations(&self) -> Result<Vec<Organization>> {
        self.engine()?
            .trees
            .organizations
            .iter()
            .values()
            .map(|v| layout::decode(&v?))
            .collect()
    }

    /// The environment with this id.
    ///
    /// # Errors
    /// [`Error::NotFound`]; [`Error::Storage`], [`Error::Corrupt`].
    pub fn environment(&self, id: ObjectId) -> Result<Environment> {
        match self
            .engine()?
            .trees
            .environments
            .get(layout::environment_key(id))?
        {
            Some(bytes) => Environment::decode(&bytes),
            None => Err(Error::NotFound(Entity::Environment)),
        }
    }

    /// The tenant of an environment, for embedding without API keys.
    ///
    /// # Errors
    /// As [`Store::environment`].
    pub fn tenant(&self, environment: ObjectId) -> Result<Tenant> {
        self.environment(environment).map(|env| env.tenant())
    }

    /// Issues a new API key for an environment. The secret is in the answer
    /// and nowhere else in the clear: the store keeps its SHA-256 digest,
    /// and with a server key ([`Config::server_key`](crate::Config::server_key))
    /// the secret sealed under it. The key is on disk when this returns,
    /// in every durability mode.
    ///
    /// # Errors
    /// [`Error::NotFound`] if the environment does not exist; [`Error::Storage`].
    pub fn issue_key(&self, environment: ObjectId) -> Result<IssuedKey> {
        let env = self.environment(environment)?;
        let mut raw = [0u8; 32];
        fill_random(&mut raw)?;
        let secret = hex(&raw);
        let info = self.store_key(&env, &secret)?;
        Ok(IssuedKey { secret, info })
    }

    /// Keeps the digest of `secret` (and it sealed, with a server key) as
    /// a key of `env`, durably.
    fn store_key(&self, env: &Environment, secret: &str) -> Result<ApiKeyInfo> {
        let info = crate::rules::key_info(env, secret, self.now())?;
        let digest = layout::api_key_key(secret);
        let stored = StoredKey {
            info,
            sealed: self.seal(&digest, secret)?,
        };
        let engine = self.engine()?;
        engine.trees.api_keys.insert(digest, stored.encode()?)?;
        self.persist_tenancy(&engine)?;
        Ok(stored.info)
    }

    /// `secret` sealed under the server key, if the store has one.
    fn seal(&self, digest: &[u8; 32], secret: &str) -> Result<Option<Vec<u8>>> {
        self.server_key()
            .map(|key| key.seal(digest, secret))
            .transpose()
    }

    /// The lazy upgrade of a key kept only as a digest (made before the
    /// store had a server key): its secret is at hand, so it is sealed now.
    /// Best effort and not flushed by itself (the next flush round carries
    /// it; if a crash takes it, the next use seals again). A key revoked
    /// meanwhile stays revoked: the swap expects the bytes read.
    fn seal_late(
        &self,
        engine: &Engine,
        digest: [u8; 32],
        read: &[u8],
        stored: StoredKey,
        secret: &str,
    ) {
        let upgraded = self
            .seal(&digest, secret)
            .and_then(|sealed| StoredKey { sealed, ..stored }.encode());
        let result = upgraded.and_then(|bytes| {
            engine
                .trees
                .api_keys
                .compare_and_swap(digest, Some(read), Some(bytes))
                .map(|_swapped_or_not| ())
                .map_err(Error::from)
        });
        // A storage failure is noted (the engine reopens); the request it
        // came with is still authenticated.
        let _ = self.noted(engine, result);
    }

    /// Registers a secret chosen by the operator (from a flag or environment
    /// variable) as a key of an environment. Registering the same secret for
    /// the same environment again returns the existing key.
    ///
    /// # Errors
    /// [`Error::InvalidInput`] unless the secret is 16 to 255 visible ASCII
    /// characters, or when it is already a key of another environment;
    /// [`Error::NotFound`] if the environment does not exist; [`Error::Storage`].
    pub fn add_key(&self, environment: ObjectId, secret: &str) -> Result<ApiKeyInfo> {
        crate::rules::check_secret(secret)?;
        let env = self.environment(environment)?;
        let engine = self.engine()?;
        let digest = layout::api_key_key(secret);
        if let Some(bytes) = engine.trees.api_keys.get(digest)? {
            let stored = StoredKey::decode(&bytes)?;
            if stored.info.environment_id != env.id {
                return Err(Error::invalid(
                    Field::ApiKey,
                    InputProblem::KeyOfAnotherEnvironment,
                ));
            }
            let info = stored.info.clone();
            if stored.sealed.is_none() && self.server_key().is_some() {
                self.seal_late(&engine, digest, &bytes, stored, secret);
                self.persist_tenancy(&engine)?;
            }
            return Ok(info);
        }
        self.store_key(&env, secret)
    }

    /// The first environment with this name, in id order.
    ///
    /// # Errors
    /// [`Error::NotFound`]; [`Error::Storage`], [`Error::Corrupt`].
    pub fn environment_named(&self, name: &str) -> Result<Environment> {
        self.environments()?
            .into_iter()
            .find(|env| env.name == name)
            .ok_or(Error::NotFound(Entity::Environment))
    }

    /// The tenant a secret grants access to. A key kept only as a digest
    /// is sealed now if the store has a server key (the lazy upgrade of
    /// keys made before it had one).
    ///
    /// # Errors
    /// [`Error::NotFound`] (`ApiKey`) for an unknown or revoked key;
    /// [`Error::Storage`], [`Error::Corrupt`].
    pub fn resolve_key(&self, secret: &str) -> Result<Tenant> {
        let engine = self.engine()?;
        let digest = layout::api_key_key(secret);
        match engine.trees.api_keys.get(digest)? {
            Some(bytes) => {
                let stored = StoredKey::decode(&bytes)?;
                let tenant = Tenant {
                    organization: stored.info.organization_id,
                    environment: stored.info.environment_id,
                };
                if stored.sealed.is_none() && self.server_key().is_some() {
                    self.seal_late(&engine, digest, &bytes, stored, secret);
                }
                Ok(tenant)
            }
            None => Err(Error::NotFound(Entity::ApiKey)),
        }
    }

    /// Whether `hash` is the HMAC-SHA256 of `subscriber_id` keyed with the
    /// secret of one of `environment`'s keys (the Inbox's
    /// `subscriberHash`), compared in constant time. Only keys sealed under
    /// this store's server key count: without one, nothing matches.
    ///
    /// # Errors
    /// [`Error::Storage`], [`Error::Corrupt`].
    pub fn subscriber_hash_matches(
        &self,
        environment: ObjectId,
        subscriber_id: &str,
        hash: &[u8],
    ) -> Result<bool> {
        let Some(server_key) = self.server_key() else {
            return Ok(false);
        };
        let mut sealed = Vec::new();
        for entry in self.engine()?.trees.api_keys.iter() {
            let (digest, bytes) = entry?;
            let stored = StoredKey::decode(&bytes)?;
            if let (true, Some(secret), Ok(digest)) = (
                stored.info.environment_id == environment,
                stored.sealed,
                <[u8; 32]>::try_from(digest.as_ref()),
            ) {
                sealed.push((digest, secret));
            }
        }
        Ok(server_key.hash_matches(&sealed, subscriber_id, hash))
    }

    /// Every key (without secrets), of one environment or of all.
    ///
    /// # Errors
    /// [`Error::Storage`], [`Error::Corrupt`].
    pub fn keys(&self, environment: Option<ObjectId>) -> Result<Vec<ApiKeyInfo>> {
        let mut keys = Vec::new();
        for value in self.engine()?.trees.api_keys.iter().values() {
            let info = StoredKey::decode(&value?)?.info;
            if environment.is_none_or(|env| env == info.environment_id) {
                keys.push(info);
            }
        }
        keys.sort_by_key(|k| (k.created_at, k.id));
        Ok(keys)
    }

    /// Revokes a key by id; it stops resolving at once, and the revocation
    /// is on disk when this returns, in every durability mode.
    ///
    /// # Errors
    /// [`Error::NotFound`] (`ApiKey`) if no key has this id; [`Error::Storage`].
    pub fn revoke_key(&self, id: ObjectId) -> Result<()> {
        let engine = self.engine()?;
        let api_keys = &engine.trees.api_keys;
        for entry in api_keys.iter() {
            let (digest, value) = entry?;
            let info = StoredKey::decode(&value)?.info;
            if info.id == id {
                api_keys.remove(digest)?;
                self.persist_tenancy(&engine)?;
                return Ok(());
            }
        }
        Err(Error::NotFound(Entity::ApiKey))
    }

    /// The environment named `name`, created (with a first organization if
    /// the store has none) when it does not exist. Returns it and whether it
    /// was created. Servers call this at start to get their default environment.
    ///
    /// # Errors
    /// [`Error::InvalidInput`] for a bad name; [`Error::Storage`], [`Error::Corrupt`].
    pub fn ensure_environment(&self, name: &str) -> Result<(Environment, bool)> {
        let _once = self.bootstrap_lock();
        match self.environment_named(name) {
            Ok(env) => return Ok((env, false)),
            Err(Error::NotFound(_)) => {}
            Err(e) => return Err(e),
        }
        let org = match self.organizations()?.into_iter().next() {
            Some(org) => org,
            None => self.create_organization("Default Organization")?,
        };
        Ok((self.create_environment(org.id, name)?, true))
    }
}
