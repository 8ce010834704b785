//! [`ObjectId`]: the 12-byte identifier of documents, organizations,
//! environments and keys, shown as 24 lowercase hex characters like MongoDB's.

use std::fmt;
use std::str::FromStr;

use crate::clock::Timestamp;
use crate::error::{Error, Field, InputProblem, Result};

/// A 12-byte identifier: 4 bytes of creation time in seconds (big-endian),
/// then 8 random bytes. Displays as 24 lowercase hex characters.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, bincode::Encode, bincode::Decode)]
pub struct ObjectId([u8; 12]);

impl ObjectId {
    /// A fresh id stamped with `now`.
    pub(crate) fn generate(now: Timestamp) -> Result<Self> {
        let mut bytes = [0u8; 12];
        // Truncation to 32 bits is the ObjectId convention (wraps in 2106).
        let secs = (now.as_millis() / 1000) as u32;
        bytes[..4].copy_from_slice(&secs.to_be_bytes());
        fill_random(&mut bytes[4..])?;
        Ok(ObjectId(bytes))
    }

    /// The raw bytes.
    pub fn as_bytes(&self) -> &[u8; 12] {
        &self.0
    }

    pub(crate) fn from_bytes(bytes: [u8; 12]) -> Self {
        ObjectId(bytes)
    }
}

/// Fills `buf` from the operating system's secure random source.
pub(crate) fn fill_random(buf: &mut [u8]) -> Result<()> {
    getrandom::fill(buf).map_err(|e| Error::Storage(format!("random source failed: {e}")))
}

/// Lowercase hex of `bytes`.
pub(crate) fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(DIGITS[usize::from(b >> 4)] as char);
        out.push(DIGITS[usize::from(b & 0x0f)] as char);
    }
    out
}

impl fmt::Display for ObjectId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex(&self.0))
    }
}

impl fmt::Debug for ObjectId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ObjectId({self})")
    }
}

impl FromStr for ObjectId {
    type Err = Error;

    /// Parses 24 hex characters (either case).
    fn from_str(s: &str) -> Result<Self> {
        let invalid = || Error::invalid(Field::Id, InputProblem::NotObjectId);
        let raw = s.as_bytes();
        if raw.len() != 24 {
            return Err(invalid());
        }
        let mut bytes = [0u8; 12];
        for (i, pair) in raw.chunks_exact(2).enumerate() {
            let text = std::str::from_utf8(pair).map_err(|_| invalid())?;
            bytes[i] = u8::from_str_radix(text, 16).map_err(|_| invalid())?;
        }
        Ok(ObjectId(bytes))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_through_hex() {
        let id = ObjectId::generate(Timestamp::from_millis(1_795_687_200_000)).expect("random");
        let text = id.to_string();
        assert_eq!(text.len(), 24);
        assert!(
            text.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        );
        assert_eq!(text[..8], format!("{:08x}", 1_795_687_200u32));
        assert_eq!(text.parse::<ObjectId>().expect("parses"), id);
    }

    #[test]
    fn rejects_malformed_hex() {
        for bad in [
            "",
            "abc",
            "zz0000000000000000000000",
            "00000000000000000000000é",
        ] {
            assert!(bad.parse::<ObjectId>().is_err(), "{bad}");
        }
    }
}
