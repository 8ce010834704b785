//! Organizations, environments and API keys in tables, for `serve`'s
//! provisioning and the tests: the same rules (names, secrets, digests)
//! as the sled store's tenancy.

use subscriber_store::{
    ApiKeyInfo, Entity, Environment, Error, InputProblem, IssuedKey, ObjectId, Organization,
    Result, rules,
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
                "INSERT INTO environments (id, organization_id, name, created_at) VALUES ($1, $2, $3, $4)",
                &[&env.id.as_bytes().as_slice(), &org, &env.name, &millis(now)],
            )
            .await
            .map_err(|e| self.failed(&e))?;
        Ok(env)
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
                "SELECT id, organization_id, created_at FROM environments WHERE name = $1",
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
        };
        tx.execute(
            "INSERT INTO environments (id, organization_id, name, created_at) VALUES ($1, $2, $3, $4)",
            &[
                &env.id.as_bytes().as_slice(),
                &org.as_bytes().as_slice(),
                &env.name,
                &millis(now),
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

    async fn store_key(&self, env: &Environment, secret: &str) -> Result<ApiKeyInfo> {
        let now = self.now();
        let info = rules::key_info(env, secret, now)?;
        let digest = rules::key_digest(secret);
        let client = self.client().await?;
        client
            .execute(
                "INSERT INTO api_keys (digest, id, organization_id, environment_id, hint, created_at)
                 VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (digest) DO NOTHING",
                &[
                    &digest.as_slice(),
                    &info.id.as_bytes().as_slice(),
                    &env.organization_id.as_bytes().as_slice(),
                    &env.id.as_bytes().as_slice(),
                    &info.hint,
                    &millis(now),
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
