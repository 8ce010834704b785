//! The server key (SPEC 13): 32 secret bytes the server is given at start
//! and that are never stored with the data. It seals the API keys the
//! store keeps for HMAC verification (a copied data directory or database
//! dump alone reveals no key), checks an Inbox `subscriberHash` against
//! them, and derives the other keys a facade needs (the Inbox token's).

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::error::{Error, Field, InputProblem, Result};
use crate::id::{fill_random, hex};

/// The server key's length in bytes (written as 64 hex characters).
pub const SERVER_KEY_BYTES: usize = 32;

/// The format byte in front of a sealed secret.
const SEALED_FORMAT: u8 = 1;
const NONCE_BYTES: usize = 24;
/// What a sealed secret is bound to, with the digest of its key: a
/// ciphertext moved to another key's record does not open there.
const SEAL_CONTEXT: &[u8] = b"subscriberd api key v1";
/// The purpose the sealing key is derived for.
const SEAL_PURPOSE: &str = "api-key-seal-v1";

/// The server key. Cheap to clone; its `Debug` never shows the bytes.
#[derive(Clone, PartialEq, Eq)]
pub struct ServerKey {
    bytes: [u8; SERVER_KEY_BYTES],
}

impl std::fmt::Debug for ServerKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ServerKey(<redacted>)")
    }
}

impl ServerKey {
    /// A new random key from the operating system's secure source.
    ///
    /// # Errors
    /// [`Error::Storage`] if the random source fails.
    pub fn generate() -> Result<ServerKey> {
        let mut bytes = [0u8; SERVER_KEY_BYTES];
        fill_random(&mut bytes)?;
        Ok(ServerKey { bytes })
    }

    /// The key of these bytes.
    pub fn from_bytes(bytes: [u8; SERVER_KEY_BYTES]) -> ServerKey {
        ServerKey { bytes }
    }

    /// The key written as text: 64 hexadecimal characters (either case),
    /// surrounding whitespace ignored (a file's final newline).
    ///
    /// # Errors
    /// [`Error::InvalidInput`] naming the server key for anything else.
    pub fn parse(text: &str) -> Result<ServerKey> {
        let invalid = || Error::invalid(Field::ServerKey, InputProblem::NotServerKey);
        let raw = text.trim().as_bytes();
        if raw.len() != 2 * SERVER_KEY_BYTES {
            return Err(invalid());
        }
        let mut bytes = [0u8; SERVER_KEY_BYTES];
        for (byte, pair) in bytes.iter_mut().zip(raw.chunks_exact(2)) {
            let high = hex_value(pair[0]).ok_or_else(invalid)?;
            let low = hex_value(pair[1]).ok_or_else(invalid)?;
            *byte = high << 4 | low;
        }
        Ok(ServerKey { bytes })
    }

    /// The key as [`ServerKey::parse`] reads it: 64 lowercase hex characters.
    pub fn to_hex(&self) -> String {
        hex(&self.bytes)
    }

    /// A key for one purpose, derived from this one (HMAC-SHA256 keyed
    /// with the server key over `subscriberd/<purpose>`): every server
    /// given the same server key derives the same key.
    pub fn derive(&self, purpose: &str) -> [u8; 32] {
        let mut mac = hmac_of(&self.bytes);
        mac.update(b"subscriberd/");
        mac.update(purpose.as_bytes());
        mac.finalize().into_bytes().into()
    }

    fn cipher(&self) -> XChaCha20Poly1305 {
        XChaCha20Poly1305::new(&self.derive(SEAL_PURPOSE).into())
    }

    /// `secret`, the API key whose digest is `digest`, sealed: a format
    /// byte, a random nonce, then the ciphertext and its tag.
    pub(crate) fn seal(&self, digest: &[u8; 32], secret: &str) -> Result<Vec<u8>> {
        let mut nonce = [0u8; NONCE_BYTES];
        fill_random(&mut nonce)?;
        let aad = [SEAL_CONTEXT, digest.as_slice()].concat();
        let sealed = self
            .cipher()
            .encrypt(
                XNonce::from_slice(&nonce),
                Payload {
                    msg: secret.as_bytes(),
                    aad: &aad,
                },
            )
            .map_err(|_| Error::Storage("cannot seal an API key".into()))?;
        Ok([&[SEALED_FORMAT][..], &nonce, &sealed].concat())
    }

    /// The secret sealed by [`ServerKey::seal`] for `digest`; `None` if
    /// it was sealed under another server key, for another digest, or the
    /// bytes are damaged.
    pub(crate) fn open(&self, digest: &[u8; 32], sealed: &[u8]) -> Option<Vec<u8>> {
        let (&format, rest) = sealed.split_first()?;
        if format != SEALED_FORMAT || rest.len() < NONCE_BYTES {
            return None;
        }
        let (nonce, ciphertext) = rest.split_at(NONCE_BYTES);
        let aad = [SEAL_CONTEXT, digest.as_slice()].concat();
        self.cipher()
            .decrypt(
                XNonce::from_slice(nonce),
                Payload {
                    msg: ciphertext,
                    aad: &aad,
                },
            )
            .ok()
    }

    /// Whether `hash` is HMAC-SHA256 of `subscriber_id` keyed with the
    /// bytes of one of the sealed secrets (each with its key's digest), in
    /// constant time per key. Secrets that do not open are skipped.
    pub(crate) fn hash_matches(
        &self,
        sealed: &[([u8; 32], Vec<u8>)],
        subscriber_id: &str,
        hash: &[u8],
    ) -> bool {
        let mut matched = false;
        for (digest, bytes) in sealed {
            let Some(secret) = self.open(digest, bytes) else {
                continue;
            };
            let mut mac = hmac_of(&secret);
            mac.update(subscriber_id.as_bytes());
            // verify_slice compares in constant time.
            matched |= mac.verify_slice(hash).is_ok();
        }
        matched
    }
}

/// HMAC-SHA256 keyed with `key`, of any length. The key is brought to
/// SHA-256's 64-byte block as RFC 2104 says (hashed when longer, padded
/// with zeros), so no length can fail.
fn hmac_of(key: &[u8]) -> Hmac<Sha256> {
    let mut block = [0u8; 64];
    if key.len() > block.len() {
        block[..32].copy_from_slice(&<Sha256 as sha2::Digest>::digest(key));
    } else {
        block[..key.len()].copy_from_slice(key);
    }
    <Hmac<Sha256> as hmac::digest::KeyInit>::new(&block.into())
}

fn hex_value(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(byte: u8) -> ServerKey {
        ServerKey::from_bytes([byte; SERVER_KEY_BYTES])
    }

    fn hmac_hex(secret: &str, message: &str) -> Vec<u8> {
        let mut mac = hmac_of(secret.as_bytes());
        mac.update(message.as_bytes());
        mac.finalize().into_bytes().to_vec()
    }

    #[test]
    fn hmac_of_any_key_length_is_rfc_2104_hmac_sha256() {
        // RFC 4231, test case 1, and test case 6 (a 131-byte key, hashed).
        let mut mac = hmac_of(&[0x0b; 20]);
        mac.update(b"Hi There");
        assert_eq!(
            hex(&mac.finalize().into_bytes()),
            "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7"
        );
        let mut mac = hmac_of(&[0xaa; 131]);
        mac.update(b"Test Using Larger Than Block-Size Key - Hash Key First");
        assert_eq!(
            hex(&mac.finalize().into_bytes()),
            "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54"
        );
        for len in [0, 1, 32, 63, 64, 65, 200] {
            let key: Vec<u8> = (0..len).map(|i| i as u8).collect();
            let mut ours = hmac_of(&key);
            let mut theirs = <Hmac<Sha256> as Mac>::new_from_slice(&key).expect("any length");
            ours.update(b"subscriber-1");
            theirs.update(b"subscriber-1");
            assert_eq!(
                ours.finalize().into_bytes(),
                theirs.finalize().into_bytes(),
                "{len}"
            );
        }
    }

    #[test]
    fn text_form_round_trips_and_bad_text_is_refused() {
        let k = ServerKey::generate().expect("random");
        assert_eq!(
            ServerKey::parse(&format!("{}\n", k.to_hex())).expect("parses"),
            k
        );
        assert_eq!(
            ServerKey::parse(&k.to_hex().to_uppercase()).expect("either case"),
            k
        );
        for bad in ["", "abc", &"g".repeat(64), &"a".repeat(63), &"a".repeat(66)] {
            assert!(ServerKey::parse(bad).is_err(), "{bad:?}");
        }
        assert_eq!(format!("{k:?}"), "ServerKey(<redacted>)");
    }

    #[test]
    fn sealed_secrets_open_only_with_their_key_and_digest() {
        let (digest, other) = ([1; 32], [2; 32]);
        let sealed = key(7).seal(&digest, "the-secret").expect("seals");
        assert!(!sealed.windows(10).any(|w| w == b"the-secret"));
        assert_eq!(
            key(7).open(&digest, &sealed).as_deref(),
            Some(&b"the-secret"[..])
        );
        assert_eq!(key(8).open(&digest, &sealed), None);
        assert_eq!(key(7).open(&other, &sealed), None);
        let mut damaged = sealed.clone();
        let last = damaged.len() - 1;
        damaged[last] ^= 1;
        assert_eq!(key(7).open(&digest, &damaged), None);
        for cut in 0..sealed.len() {
            assert_eq!(key(7).open(&digest, &sealed[..cut]), None);
        }
        // Two seals of one secret differ (a fresh nonce each).
        assert_ne!(sealed, key(7).seal(&digest, "the-secret").expect("seals"));
    }

    #[test]
    fn a_hash_matches_when_one_sealed_key_made_it() {
        let k = key(3);
        let sealed = vec![
            ([1; 32], k.seal(&[1; 32], "key-one").expect("seals")),
            ([2; 32], k.seal(&[2; 32], "key-two").expect("seals")),
        ];
        assert!(k.hash_matches(&sealed, "user-1", &hmac_hex("key-two", "user-1")));
        assert!(k.hash_matches(&sealed, "user-1", &hmac_hex("key-one", "user-1")));
        assert!(!k.hash_matches(&sealed, "user-2", &hmac_hex("key-one", "user-1")));
        assert!(!k.hash_matches(&sealed, "user-1", &hmac_hex("key-three", "user-1")));
        assert!(!k.hash_matches(&sealed, "user-1", &[0; 31]));
        assert!(!key(4).hash_matches(&sealed, "user-1", &hmac_hex("key-one", "user-1")));
    }

    #[test]
    fn derived_keys_are_stable_and_differ_by_purpose() {
        // HMAC-SHA256(key = 32 bytes of 0x01, "subscriberd/inbox-token-v1"):
        // servers of one store must derive these same bytes in every build.
        assert_eq!(
            hex(&key(1).derive("inbox-token-v1")),
            "c628c2f4386c00af06f343fc809165c50f35e4519e78a5cbaeffdc533bf89919"
        );
        assert_ne!(key(1).derive("a"), key(1).derive("b"));
        assert_ne!(key(1).derive("a"), key(2).derive("a"));
    }
}
