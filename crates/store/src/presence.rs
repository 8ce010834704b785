//! The presence write's rule (SPEC section 4), as a pure function on a document.
//! Locking, versions preconditions and storage are the store's business.

use crate::clock::Timestamp;
use crate::subscriber::Subscriber;

impl Subscriber {
    /// The presence rule: applies `isOnline = online` at `now`. Going
    /// offline from anything but "already offline" stamps `lastOnlineAt`;
    /// going online leaves it; the version rises by one (saturating) and
    /// `updatedAt` moves to `now`.
    ///
    /// [`Store::set_online`](crate::Store::set_online) applies it under the
    /// subscriber's lock; it is public so that code measured against the
    /// store (the benchmarks' raw peers) applies the very same change.
    pub fn set_online(&mut self, online: bool, now: Timestamp) {
        let already_offline = self.is_online == Some(false);
        if !online && !already_offline {
            self.last_online_at = Some(now);
        }
        self.is_online = Some(online);
        self.updated_at = now;
        self.version = self.version.next();
    }
}
