//! `POST /v1/inbox/session` (SPEC 13): what the Inbox calls first, with no
//! API key. Checks in order: the body (400 not JSON, 422 a bad member),
//! the application identifier (400), the HMAC hash while it is required
//! (400), then creates the subscriber if missing through the store's
//! ordinary create and answers a signed session token. A refusal changes
//! nothing.

use bytes::Bytes;
use hyper::body::Incoming;
use hyper::{Request, StatusCode};
use subscriber_store::{Command, Error};

use crate::error::{ApiError, SessionRefusal, from_store, session_refused};
use crate::extract;
use crate::handlers::{Context, Reply, data_status_reply};
use crate::metrics::SessionOutcome;
use crate::wire::{self, SessionDto};

/// The environment Novu's Inbox reports as development mode.
const DEVELOPMENT: &str = "Development";

pub(crate) async fn session(
    state: &Context,
    request: Request<Incoming>,
) -> Result<Reply, ApiError> {
    let outcome = open(state, request).await;
    if let Some(metrics) = &state.config.metrics {
        metrics.inbox_session(match &outcome {
            Ok(_) => SessionOutcome::Created,
            Err((_, outcome)) => *outcome,
        });
    }
    outcome.map_err(|(error, _)| error)
}

async fn open(
    state: &Context,
    request: Request<Incoming>,
) -> Result<Reply, (ApiError, SessionOutcome)> {
    let refused = |refusal, outcome| (session_refused(refusal), outcome);
    let failed = |e: &Error| {
        let error = from_store(e, None);
        let outcome = match error.status {
            StatusCode::UNPROCESSABLE_ENTITY => SessionOutcome::Invalid,
            _ => SessionOutcome::Failed,
        };
        (error, outcome)
    };
    let inbox = &state.config.inbox;
    let Some(token_key) = &inbox.token_key else {
        return Err(refused(SessionRefusal::NoServerKey, SessionOutcome::Failed));
    };
    let (parts, body) = request.into_parts();
    let invalid = |error| (error, SessionOutcome::Invalid);
    let bytes: Bytes = extract::body(
        &parts.headers,
        body,
        state.config.max_body_bytes,
        state.config.body_read_timeout,
    )
    .await
    .map_err(invalid)?;
    let json = wire::parse_json(&bytes).map_err(invalid)?;
    let asked = wire::session_body(&json, &bytes).map_err(invalid)?;

    let store = &state.store;
    let env = match store
        .environment_by_identifier(&asked.application_identifier)
        .await
    {
        Ok(env) => env,
        Err(Error::NotFound(_)) => {
            return Err(refused(
                SessionRefusal::UnknownApplication,
                SessionOutcome::UnknownApplication,
            ));
        }
        Err(e) => return Err(failed(&e)),
    };
    let subscriber_id = asked.subscriber.subscriber_id.clone();
    if inbox.hmac {
        let bad_hash = || refused(SessionRefusal::BadHash, SessionOutcome::BadHash);
        let hash = asked
            .subscriber_hash
            .as_deref()
            .and_then(lowercase_hex_digest)
            .ok_or_else(bad_hash)?;
        let matches = store
            .subscriber_hash_matches(env.id, &subscriber_id, &hash)
            .await
            .map_err(|e| failed(&e))?;
        if !matches {
            return Err(bad_hash());
        }
    }

    // Created when missing; an existing document is left as it is.
    let tenant = env.tenant();
    let command = Command::Upsert {
        input: asked.subscriber,
        fail_if_exists: true,
    };
    let written = store
        .submit(&tenant, command, None, None)
        .await
        .and_then(|executed| executed.outcome);
    match written {
        Ok(_) | Err(Error::AlreadyExists { .. }) => {}
        Err(e) => return Err(failed(&e)),
    }

    let token = token_key
        .issue(&tenant, &subscriber_id, store.now(), inbox.token_ttl)
        .map_err(|e| (ApiError::internal(&e), SessionOutcome::Failed))?;
    data_status_reply(
        StatusCode::CREATED,
        SessionDto {
            token: &token,
            total_unread_count: 0,
            remove_novu_branding: false,
            is_development_mode: env.name == DEVELOPMENT,
            application_identifier: &env.identifier,
        },
    )
    .map_err(|e| (e, SessionOutcome::Failed))
}

/// The 32 bytes of a SHA-256 HMAC written as 64 lowercase hex characters
/// (as Node's `digest('hex')` and Python's `hexdigest()` write it).
fn lowercase_hex_digest(text: &str) -> Option<[u8; 32]> {
    let digit = |c: u8| match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    };
    let raw = text.as_bytes();
    if raw.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (byte, pair) in out.iter_mut().zip(raw.chunks_exact(2)) {
        *byte = digit(pair[0])? << 4 | digit(pair[1])?;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_64_lowercase_hex_characters_are_a_hash() {
        let good = "0f".repeat(32);
        assert_eq!(lowercase_hex_digest(&good), Some([0x0f; 32]));
        for bad in [
            String::new(),
            "0f".repeat(31),
            "0f".repeat(33),
            "0F".repeat(32),
            format!("{}zz", "0f".repeat(31)),
            format!("{}é", "0f".repeat(31)),
        ] {
            assert_eq!(lowercase_hex_digest(&bad), None, "{bad}");
        }
    }
}
