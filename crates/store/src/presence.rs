//! The presence write's rule (SPEC section 4), as a pure function on a document.
//! Locking, versions preconditions and storage are the store's business.

use crate::clock::Timestamp;
use crate::subscriber::Subscriber;

/// Applies `isOnline = online` at `now`: going offline from anything but
/// "already offline" stamps `lastOnlineAt`; going online leaves it; the
/// version rises by one and `updatedAt` moves to `now`.
pub(crate) fn set_online(doc: &mut Subscriber, online: bool, now: Timestamp) {
    let already_offline = doc.is_online == Some(false);
    if !online && !already_offline {
        doc.last_online_at = Some(now);
    }
    doc.is_online = Some(online);
    doc.updated_at = now;
    doc.version = doc.version.next();
}
