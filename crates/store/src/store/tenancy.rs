//! The store's tenancy calls: organizations, environments and API keys
//! (the records and their rules are in `crate::tenancy`).

use crate::error::{Entity, Error, Field, InputProblem, Result};
use crate::id::{ObjectId, fill_random, hex};
use crate::layout;
use crate::store::{Engine, Store};
use crate::tenancy::{ApiKeyInfo, Environment, IssuedKey, Organization, Tenant, validate_name};

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
        let env = Environment {
            id: ObjectId::generate(now)?,
            organization_id: organization,
            name: name.to_owned(),
            created_at: now,
        };
        trees
            .environments
            .insert(layout::environment_key(env.id), layout::encode(&env)?)?;
        self.persist_tenancy(&engine)?;
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
            .map(|v| layout::decode(&v?))
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
            Some(bytes) => layout::decode(&bytes),
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
    /// and nowhere else: the store keeps its SHA-256 digest. The key is on
    /// disk when this returns, in every durability mode.
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

    /// Keeps the digest of `secret` as a key of `env`, durably.
    fn store_key(&self, env: &Environment, secret: &str) -> Result<ApiKeyInfo> {
        let info = crate::rules::key_info(env, secret, self.now())?;
        let engine = self.engine()?;
        engine
            .trees
            .api_keys
            .insert(layout::api_key_key(secret), layout::encode(&info)?)?;
        self.persist_tenancy(&engine)?;
        Ok(info)
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
        if let Some(bytes) = self
            .engine()?
            .trees
            .api_keys
            .get(layout::api_key_key(secret))?
        {
            let info: ApiKeyInfo = layout::decode(&bytes)?;
            if info.environment_id != env.id {
                return Err(Error::invalid(
                    Field::ApiKey,
                    InputProblem::KeyOfAnotherEnvironment,
                ));
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

    /// The tenant a secret grants access to.
    ///
    /// # Errors
    /// [`Error::NotFound`] (`ApiKey`) for an unknown or revoked key;
    /// [`Error::Storage`], [`Error::Corrupt`].
    pub fn resolve_key(&self, secret: &str) -> Result<Tenant> {
        match self
            .engine()?
            .trees
            .api_keys
            .get(layout::api_key_key(secret))?
        {
            Some(bytes) => {
                let info: ApiKeyInfo = layout::decode(&bytes)?;
                Ok(Tenant {
                    organization: info.organization_id,
                    environment: info.environment_id,
                })
            }
            None => Err(Error::NotFound(Entity::ApiKey)),
        }
    }

    /// Every key (without secrets), of one environment or of all.
    ///
    /// # Errors
    /// [`Error::Storage`], [`Error::Corrupt`].
    pub fn keys(&self, environment: Option<ObjectId>) -> Result<Vec<ApiKeyInfo>> {
        let mut keys = Vec::new();
        for value in self.engine()?.trees.api_keys.iter().values() {
            let info: ApiKeyInfo = layout::decode(&value?)?;
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
            let info: ApiKeyInfo = layout::decode(&value)?;
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
