//! The Inbox session token (SPEC 13): a JWT (HS256) naming the environment,
//! its organization and the subscriber, with an expiry, signed with a key
//! derived from the server key, so every server given the same server key
//! accepts the tokens of the others. [`TokenKey::verify`] is what a
//! connection's handshake calls; it knows nothing about HTTP.

use std::collections::HashSet;
use std::time::Duration;

use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use subscriber_store::{ObjectId, ServerKey, Tenant, Timestamp, rules};

/// The purpose the signing key is derived from the server key for.
const PURPOSE: &str = "inbox-token-v1";
/// Who issues the tokens, and whom they are for (Novu's subscriber token
/// names the same audience).
const ISSUER: &str = "subscriberd";
const AUDIENCE: &str = "widget_user";

/// Why a token is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TokenError {
    /// Not a token of ours: not a JWT, another algorithm, claims missing
    /// or of the wrong shape, another issuer or audience.
    #[error("not an Inbox session token")]
    Malformed,
    /// The signature is not ours: forged, altered, or signed with another
    /// server key.
    #[error("the token's signature does not verify")]
    Forged,
    /// The token ran out at `expired_at`.
    #[error("the token expired at {expired_at}")]
    Expired {
        /// When it ran out.
        expired_at: Timestamp,
    },
    /// A valid token of another environment than the one expected.
    #[error("the token belongs to another environment")]
    OtherEnvironment,
    /// The token could not be signed (never for a well-formed session).
    #[error("cannot sign the token: {0}")]
    Signing(String),
}

/// What a valid token says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    /// The subscriber the session is for.
    pub subscriber_id: String,
    /// Its environment.
    pub environment_id: ObjectId,
    /// The environment's organization.
    pub organization_id: ObjectId,
    /// When the token runs out.
    pub expires_at: Timestamp,
}

impl Session {
    /// The tenant the session is scoped to.
    pub fn tenant(&self) -> Tenant {
        rules::tenant(self.organization_id, self.environment_id)
    }
}

/// The claims as they travel (Novu's subscriber token's names).
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Claims {
    subscriber_id: String,
    environment_id: String,
    organization_id: String,
    iss: String,
    aud: String,
    /// Seconds since the epoch.
    iat: u64,
    /// Seconds since the epoch.
    exp: u64,
}

/// The key tokens are signed and verified with.
#[derive(Clone)]
pub struct TokenKey {
    encoding: EncodingKey,
    decoding: DecodingKey,
}

impl std::fmt::Debug for TokenKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TokenKey(<redacted>)")
    }
}

impl TokenKey {
    /// The token key every server given `server_key` derives.
    pub fn new(server_key: &ServerKey) -> TokenKey {
        let secret = server_key.derive(PURPOSE);
        TokenKey {
            encoding: EncodingKey::from_secret(&secret),
            decoding: DecodingKey::from_secret(&secret),
        }
    }

    /// A token for `subscriber_id` of `tenant`, valid from `now` for `ttl`
    /// (whole seconds).
    ///
    /// # Errors
    /// [`TokenError::Signing`].
    pub fn issue(
        &self,
        tenant: &Tenant,
        subscriber_id: &str,
        now: Timestamp,
        ttl: Duration,
    ) -> Result<String, TokenError> {
        let iat = now.as_millis() / 1000;
        let claims = Claims {
            subscriber_id: subscriber_id.to_owned(),
            environment_id: tenant.environment_id().to_string(),
            organization_id: tenant.organization_id().to_string(),
            iss: ISSUER.to_owned(),
            aud: AUDIENCE.to_owned(),
            iat,
            exp: iat.saturating_add(ttl.as_secs().max(1)),
        };
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.encoding)
            .map_err(|e| TokenError::Signing(e.to_string()))
    }

    /// What `token` says, if it is ours and has not run out at `now`.
    ///
    /// # Errors
    /// [`TokenError::Malformed`], [`TokenError::Forged`],
    /// [`TokenError::Expired`].
    pub fn verify(&self, token: &str, now: Timestamp) -> Result<Session, TokenError> {
        let mut validation = Validation::new(Algorithm::HS256);
        // Expiry is checked below against the caller's clock, to the second.
        validation.validate_exp = false;
        validation.required_spec_claims = ["exp", "iss", "aud"]
            .into_iter()
            .map(String::from)
            .collect::<HashSet<_>>();
        validation.set_issuer(&[ISSUER]);
        validation.set_audience(&[AUDIENCE]);
        let data = jsonwebtoken::decode::<Claims>(token, &self.decoding, &validation).map_err(
            |e| match e.kind() {
                ErrorKind::InvalidSignature => TokenError::Forged,
                _ => TokenError::Malformed,
            },
        )?;
        let claims = data.claims;
        let expired_at = Timestamp::from_millis(claims.exp.saturating_mul(1000));
        if expired_at <= now {
            return Err(TokenError::Expired { expired_at });
        }
        let id = |text: &str| text.parse::<ObjectId>().map_err(|_| TokenError::Malformed);
        Ok(Session {
            environment_id: id(&claims.environment_id)?,
            organization_id: id(&claims.organization_id)?,
            subscriber_id: claims.subscriber_id,
            expires_at: expired_at,
        })
    }

    /// As [`TokenKey::verify`], for a connection to `environment` only.
    ///
    /// # Errors
    /// As [`TokenKey::verify`], and [`TokenError::OtherEnvironment`].
    pub fn verify_for(
        &self,
        token: &str,
        now: Timestamp,
        environment: ObjectId,
    ) -> Result<Session, TokenError> {
        let session = self.verify(token, now)?;
        if session.environment_id != environment {
            return Err(TokenError::OtherEnvironment);
        }
        Ok(session)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tenant(byte: u8) -> Tenant {
        rules::tenant(
            rules::id_from_bytes([byte; 12]),
            rules::id_from_bytes([byte + 1; 12]),
        )
    }

    const NOW: Timestamp = Timestamp::from_millis(1_795_687_200_000);

    #[test]
    fn a_token_names_its_tenant_and_subscriber_until_it_expires() {
        let key = TokenKey::new(&ServerKey::from_bytes([1; 32]));
        let token = key
            .issue(&tenant(1), "user-1", NOW, Duration::from_secs(60))
            .expect("signs");
        let session = key.verify(&token, NOW).expect("verifies");
        assert_eq!(session.subscriber_id, "user-1");
        assert_eq!(session.tenant(), tenant(1));
        assert_eq!(
            session.expires_at,
            Timestamp::from_millis(NOW.as_millis() + 60_000)
        );
        let later = Timestamp::from_millis(NOW.as_millis() + 59_999);
        assert!(key.verify(&token, later).is_ok());
        let end = Timestamp::from_millis(NOW.as_millis() + 60_000);
        assert_eq!(
            key.verify(&token, end),
            Err(TokenError::Expired { expired_at: end })
        );
        // Another server with the same server key accepts it.
        let same = TokenKey::new(&ServerKey::from_bytes([1; 32]));
        assert!(same.verify(&token, NOW).is_ok());
        assert_eq!(
            key.verify_for(&token, NOW, tenant(3).environment_id()),
            Err(TokenError::OtherEnvironment)
        );
        assert!(
            key.verify_for(&token, NOW, tenant(1).environment_id())
                .is_ok()
        );
    }

    #[test]
    fn forged_altered_and_foreign_tokens_are_refused() {
        let key = TokenKey::new(&ServerKey::from_bytes([1; 32]));
        let other = TokenKey::new(&ServerKey::from_bytes([2; 32]));
        let token = other
            .issue(&tenant(1), "user-1", NOW, Duration::from_secs(60))
            .expect("signs");
        assert_eq!(key.verify(&token, NOW), Err(TokenError::Forged));
        // The payload swapped for another subscriber's, signature kept.
        let mine = key
            .issue(&tenant(1), "user-1", NOW, Duration::from_secs(60))
            .expect("signs");
        let theirs = key
            .issue(&tenant(1), "admin", NOW, Duration::from_secs(60))
            .expect("signs");
        let parts: Vec<&str> = mine.split('.').collect();
        let payload = theirs.split('.').nth(1).expect("payload");
        let spliced = format!("{}.{payload}.{}", parts[0], parts[2]);
        assert_eq!(key.verify(&spliced, NOW), Err(TokenError::Forged));
        // alg none, garbage, and a token of another shape.
        let none = format!("eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.{payload}.");
        for bad in ["", "abc", "a.b.c", none.as_str()] {
            assert_eq!(key.verify(bad, NOW), Err(TokenError::Malformed), "{bad}");
        }
        let foreign = jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &serde_json::json!({"sub": "x", "exp": 9_999_999_999u64}),
            &EncodingKey::from_secret(&ServerKey::from_bytes([1; 32]).derive(PURPOSE)),
        )
        .expect("signs");
        assert_eq!(key.verify(&foreign, NOW), Err(TokenError::Malformed));
    }
}
