//! Organizations, environments and API keys in tables, for `serve`'s
//! provisioning and the tests, and the Inbox's reads (an environment by
//! its identifier, the HMAC check against the sealed keys): the same
//! rules (names, identifiers, secrets, digests, sealing) as the sled
//! store's tenancy.

use subscriber_store::{
    ApiKeyInfo, Entity, Environment, Error, InputProblem, IssuedKey, ObjectId, Organization,
    Result, Tenant, rules,
};

use crate::PgBackend;
use crate::reads::id;
use crate::write::{millis, time_of};

impl PgBackend {
    /// Creates an organization.
    ///
    /// # Errors
    /// [`Error::InvalidInput`] for a bad name; [`Error::Storage`].
    pub async fn create_organization(&self, name: &str) -> Result<Organization> {
        rules::check_name(name)?;
        let now = self.now();
        let org = Organization {
            id: rules::new_id(now)?,
            name: name.to_owned(),
            created_at: now,
        };
        let client = self.client().await?;
        client
            .execute(
                "INSERT INTO organizations (id, name, created_at) VALUES ($1, $2, $3)",
                &[&org.id.as_bytes().as_slice(), &org.name, &millis(now)],
            )
            .await
            .map_err(|e| self.failed(&e))?;
        Ok(org)
    }

    /// Creates an environment (names are unique here: many servers
    /// provision the same one at once).
    ///
    /// # Errors
    /// [`Error::NotFound`] for an unknown organization; [`Error::InvalidInput`];
    /// [`Error::Storage`].
    pub async fn create_environment(
        &self,
        organization: ObjectId,
        name: &str,
    ) -> Result<Environment> {
        rules::check_name(name)?;
        let now = self.now();
        let env = Environment {
            id: rules::new_id(now)?,
            organization_id: organization,
            name: name.to_owned(),
            created_at: now,
            identifier: rules::new_identifier()?,
        };
        let client = self.client().await?;
        let org = organization.as_bytes().as_slice();
        let exists = client
            .query_opt("SELECT 1 FROM organizations WHERE id = $1", &[&org])
            .await
            .map_err(|e| self.failed(&e))?;
        if exists.is_none() {
            return Err(Error::NotFound(Entity::Organization));
        }
        client
            .execute(
                "INSERT INTO environments (id, organization_id, name, created_at, identifier) VALUES ($1, $2, $3, $4, $5)",
                &[&env.id.as_bytes().as_slice(), &org, &env.name, &millis(now), &env.identifier],
            )
            .await
            .map_err(|e| self.failed(&e))?;
        Ok(env)
    }

    /// The environment a tenant scopes.
    ///
    /// # Errors
    /// [`Error::NotFound`]; [`Error::Storage`].
    pub async fn environment(&self, tenant: &Tenant) -> Result<Environment> {
        let env = tenant.environment_id().as_bytes().to_vec();
        self.environment_where("id = $1", &env).await
    }

    /// The environment with this application identifier.
    ///
    /// # Errors
    /// [`Error::NotFound`] for an unknown one; [`Error::Storage`].
    pub async fn environment_by_identifier(&self, identifier: &str) -> Result<Environment> {
        if !rules::plausible_identifier(identifier) {
            return Err(Error::NotFound(Entity::Environment));
        }
        self.environment_where("identifier = $1", &identifier).await
    }

    async fn environment_where(
        &self,
        condition: &str,
        value: &(dyn tokio_postgres::types::ToSql + Sync),
    ) -> Result<Environment> {
        let client = self.client().await?;
        let statement = client
            .prepare_cached(&format!(
                "SELECT id, organization_id, name, created_at, identifier FROM environments WHERE {condition}"
            ))
            .await
            .map_err(|e| self.failed(&e))?;
        let row = client
            .query_opt(&statement, &[value])
            .await
            .map_err(|e| self.failed(&e))?
            .ok_or(Error::NotFound(Entity::Environment))?;
        Ok(Environment {
            id: id(row.get(0))?,
            organization_id: id(row.get(1))?,
            name: row.get(2),
            created_at: time_of(row.get(3)),
            identifier: row.get(4),
        })
    }

    /// Whether `hash` is the HMAC-SHA256 of `subscriber_id` keyed with one
    /// of `environment`'s keys: those sealed under this server's key.
    ///
    /// # Errors
    /// [`Error::Storage`].
    pub async fn subscriber_hash_matches(
        &self,
        environment: ObjectId,
        subscriber_id: &str,
        hash: &[u8],
    ) -> Result<bool> {
        let Some(server_key) = &self.inner.options.server_key else {
            return Ok(false);
        };
        let client = self.client().await?;
        let statement = client
            .prepare_cached(
                "SELECT digest, sealed_secret FROM api_keys WHERE environment_id = $1 AND sealed_secret IS NOT NULL",
            )
            .await
            .map_err(|e| self.failed(&e))?;
        let rows = client
            .query(&statement, &[&environment.as_bytes().as_slice()])
            .await
            .map_err(|e| self.failed(&e))?;
        let sealed: Vec<([u8; 32], Vec<u8>)> = rows
            .iter()
            .filter_map(|row| {
                let digest = <[u8; 32]>::try_from(row.get::<_, &[u8]>(0)).ok()?;
                Some((digest, row.get::<_, Vec<u8>>(1)))
            })
            .collect();
        Ok(rules::subscriber_hash_matches(
            server_key,
            &sealed,
            subscriber_id,
            hash,
        ))
    }

    /// The environment called `name`, created (with a default organization
    /// when there is none) if missing; `true` if it was created. Safe when
    /// many servers start at once.
    ///
    /// # Errors
    /// [`Error::InvalidInput`]; [`Error::Storage`].
    pub async fn ensure_environment(&self, name: &str) -> Result<(Environment, bool)> {
        rules::check_name(name)?;
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(|e| self.failed(&e))?;
        // Provisioning takes turns across processes.
        tx.execute("SELECT pg_advisory_xact_lock(7)", &[])
            .await
            .map_err(|e| self.failed(&e))?;
        if let Some(row) = tx
            .query_opt(
                "SELECT id, organization_id, created_at, identifier FROM environments WHERE name = $1",
                &[&name],
            )
            .await
            .map_err(|e| self.failed(&e))?
        {
            return Ok((
                Environment {
                    id: id(row.get(0))?,
                    organization_id: id(row.get(1))?,
                    name: name.to_owned(),
                    created_at: time_of(row.get(2)),
                    identifier: row.get(3),
                },
                false,
            ));
        }
        let now = self.now();
        let org = match tx
            .query_opt("SELECT id FROM organizations ORDER BY id LIMIT 1", &[])
            .await
            .map_err(|e| self.failed(&e))?
        {
            Some(row) => id(row.get(0))?,
            None => {
                let org = rules::new_id(now)?;
                tx.execute(
                    "INSERT INTO organizations (id, name, created_at) VALUES ($1, $2, $3)",
                    &[
                        &org.as_bytes().as_slice(),
                        &"Default Organization",
                        &millis(now),
                    ],
                )
                .await
                .map_err(|e| self.failed(&e))?;
                org
            }
        };
        let env = Environment {
            id: rules::new_id(now)?,
            organization_id: org,
            name: name.to_owned(),
            created_at: now,
            identifier: rules::new_identifier()?,
        };
        tx.execute(
            "INSERT INTO environments (id, organization_id, name, created_at, identifier) VALUES ($1, $2, $3, $4, $5)",
            &[
                &env.id.as_bytes().as_slice(),
                &org.as_bytes().as_slice(),
                &env.name,
                &millis(now),
                &env.identifier,
            ],
        )
        .await
        .map_err(|e| self.failed(&e))?;
        tx.commit().await.map_err(|e| self.failed(&e))?;
        Ok((env, true))
    }

    /// Registers an operator's secret as a key of `environment` (again for
    /// the same environment: the existing key).
    ///
    /// # Errors
    /// [`Error::InvalidInput`] for a bad secret or one of another
    /// environment; [`Error::NotFound`]; [`Error::Storage`].
    pub async fn add_key(&self, environment: &Environment, secret: &str) -> Result<ApiKeyInfo> {
        rules::check_secret(secret)?;
        self.store_key(environment, secret).await
    }

    /// Issues a new random key for `environment`; the secret is in the
    /// answer only.
    ///
    /// # Errors
    /// [`Error::Storage`].
    pub async fn issue_key(&self, environment: &Environment) -> Result<IssuedKey> {
        let secret = rules::new_secret()?;
        let info = self.store_key(environment, &secret).await?;
        Ok(IssuedKey { secret, info })
    }

    /// Keeps the digest of `secret` (and it sealed, with a server key) as
    /// a key of `env`; a secret already kept is sealed now if it was not.
    async fn store_key(&self, env: &Environment, secret: &str) -> Result<ApiKeyInfo> {
        let now = self.now();
        let info = rules::key_info(env, secret, now)?;
        let digest = rules::key_digest(secret);
        let sealed = self.seal(secret)?;
        let client = self.client().await?;
        client
            .execute(
                "INSERT INTO api_keys (digest, id, organization_id, environment_id, hint, created_at, sealed_secret)
                 VALUES ($1, $2, $3, $4, $5, $6, $7)
                 ON CONFLICT (digest) DO UPDATE SET sealed_secret = excluded.sealed_secret
                 WHERE api_keys.sealed_secret IS NULL AND api_keys.environment_id = excluded.environment_id",
                &[
                    &digest.as_slice(),
                    &info.id.as_bytes().as_slice(),
                    &env.organization_id.as_bytes().as_slice(),
                    &env.id.as_bytes().as_slice(),
                    &info.hint,
                    &millis(now),
                    &sealed,
                ],
            )
            .await
            .map_err(|e| self.failed(&e))?;
        let row = client
            .query_one(
                "SELECT id, organization_id, environment_id, hint, created_at FROM api_keys WHERE digest = $1",
                &[&digest.as_slice()],
            )
            .await
            .map_err(|e| self.failed(&e))?;
        let stored = ApiKeyInfo {
            id: id(row.get(0))?,
            organization_id: id(row.get(1))?,
            environment_id: id(row.get(2))?,
            hint: row.get(3),
            created_at: time_of(row.get(4)),
        };
        if stored.environment_id != env.id {
            return Err(Error::InvalidInput {
                field: subscriber_store::Field::ApiKey,
                problem: InputProblem::KeyOfAnotherEnvironment,
            });
        }
        Ok(stored)
    }

    /// `secret` sealed under the server key, if this server has one.
    pub(crate) fn seal(&self, secret: &str) -> Result<Option<Vec<u8>>> {
        self.inner
            .options
            .server_key
            .as_ref()
            .map(|key| rules::seal_secret(key, secret))
            .transpose()
    }

    /// How many API keys exist.
    ///
    /// # Errors
    /// [`Error::Storage`].
    pub async fn key_count(&self) -> Result<u64> {
        let client = self.client().await?;
        let row = client
            .query_one("SELECT count(*) FROM api_keys", &[])
            .await
            .map_err(|e| self.failed(&e))?;
        Ok(u64::try_from(row.get::<_, i64>(0)).unwrap_or(0))
    }
}
