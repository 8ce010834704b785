//! A document's version (`__v`) and what a write may require of it before
//! it applies: the store's form of HTTP's `If-Match` (RFC 9110, section
//! 13.1.1).

use std::fmt;

/// A document's version, Novu's `__v`: 0 at creation, +1 on every committed change.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, bincode::Encode, bincode::Decode,
)]
pub struct Version(pub u64);

impl Version {
    pub(crate) fn next(self) -> Version {
        Version(self.0.saturating_add(1))
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// A condition on the current document, checked under its lock before a write.
///
/// ```
/// use subscriber_store::{Precondition, Version};
///
/// assert!(Precondition::from(Version(3)).holds(Some(Version(3))));
/// assert!(Precondition::AnyOf(vec![Version(3), Version(4)]).holds(Some(Version(4))));
/// assert!(Precondition::Exists.holds(Some(Version(0))));
/// assert!(!Precondition::Exists.holds(None));
/// // An empty list matches nothing (what a list of only weak tags comes to).
/// assert!(!Precondition::AnyOf(vec![]).holds(Some(Version(1))));
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash, bincode::Encode, bincode::Decode)]
pub enum Precondition {
    /// The document exists at exactly this version.
    Version(Version),
    /// The document exists at one of these versions; an empty list never holds.
    AnyOf(Vec<Version>),
    /// The document exists, at any version (`If-Match: *`).
    Exists,
}

impl Precondition {
    /// Whether a document at `current` (`None`: absent) satisfies it.
    pub fn holds(&self, current: Option<Version>) -> bool {
        match (self, current) {
            (_, None) => false,
            (Precondition::Version(v), Some(current)) => *v == current,
            (Precondition::AnyOf(list), Some(current)) => list.contains(&current),
            (Precondition::Exists, Some(_)) => true,
        }
    }
}

impl From<Version> for Precondition {
    fn from(version: Version) -> Self {
        Precondition::Version(version)
    }
}

impl fmt::Display for Precondition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Precondition::Version(v) => write!(f, "version {v}"),
            Precondition::AnyOf(list) if list.is_empty() => f.write_str("no version"),
            Precondition::AnyOf(list) if list.len() == 1 => write!(f, "version {}", list[0]),
            Precondition::AnyOf(list) => {
                f.write_str("one of versions ")?;
                for (i, v) in list.iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    write!(f, "{v}")?;
                }
                Ok(())
            }
            Precondition::Exists => f.write_str("any version"),
        }
    }
}
