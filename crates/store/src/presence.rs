//! The presence rules (SPEC sections 4 and 10), as pure functions on a
//! document: the presence write, its lease, and the lease's expiry.
//! Locking, version preconditions and storage are the store's business.

use std::time::Duration;

use crate::clock::Timestamp;
use crate::error::{Error, Field, InputProblem, Result};
use crate::subscriber::{Lease, Subscriber};

/// The longest presence lease, in seconds (one day).
pub const MAX_TTL_SECONDS: u32 = 86_400;

/// The lease length rule: a whole number of seconds from 0 (no lease) to
/// [`MAX_TTL_SECONDS`].
///
/// # Errors
/// [`InputProblem::NotInRange`]; the store reports it naming
/// [`Field::TtlSeconds`](crate::Field::TtlSeconds).
pub fn check_ttl_seconds(ttl: u64) -> std::result::Result<u32, InputProblem> {
    u32::try_from(ttl)
        .ok()
        .filter(|ttl| *ttl <= MAX_TTL_SECONDS)
        .ok_or(InputProblem::NotInRange {
            min: 0,
            max: u64::from(MAX_TTL_SECONDS),
        })
}

/// [`check_ttl_seconds`] as a store error.
pub(crate) fn validate_ttl_seconds(ttl: u32) -> Result<u32> {
    check_ttl_seconds(u64::from(ttl)).map_err(|p| Error::invalid(Field::TtlSeconds, p))
}

impl Subscriber {
    /// The presence rule: applies `isOnline = online` at `now`, the clock's
    /// reading. Its stamps are never earlier than a time the document holds
    /// (`updatedAt` moves to `now` or that time). Going offline from
    /// anything but "already offline" stamps `lastOnlineAt`; going online
    /// leaves it; the version rises by one (saturating). Going online with
    /// a TTL of `ttl_seconds` (not 0) starts or moves a lease from the
    /// clock's `now` itself, never from a later stamp: heard at `now`, it
    /// ends at `now` + TTL (SPEC section 10: a wall clock stepped back
    /// cannot push a heartbeat's deadline out). Going online with 0, or
    /// offline, ends any lease.
    ///
    /// [`Store::set_online`](crate::Store::set_online) applies it under the
    /// subscriber's lock; it is public so that code measured against the
    /// store (the benchmarks' raw peers) applies the very same change.
    pub fn set_online(&mut self, online: bool, ttl_seconds: u32, now: Timestamp) {
        let stamp = self.write_time(now);
        let already_offline = self.is_online == Some(false);
        if !online && !already_offline {
            self.last_online_at = Some(stamp);
        }
        self.is_online = Some(online);
        self.lease = (online && ttl_seconds > 0).then(|| Lease {
            heard_at: now,
            expires_at: now.saturating_add(Duration::from_secs(u64::from(ttl_seconds))),
            holder: None,
        });
        self.updated_at = stamp;
        self.version = self.version.next();
    }

    /// Whether the presence is held by the open connections of the store
    /// run `run` (SPEC 13): online, with a connection lease of that run.
    /// A presence write since (an explicit PATCH) or an expiry ends that.
    pub fn held_by(&self, run: u64) -> bool {
        self.is_online == Some(true) && self.lease.is_some_and(|lease| lease.holder == Some(run))
    }

    /// The connection rule going online (a connection opened, or its
    /// lease renewed): the presence write going online with a lease of
    /// `lease_secs` (at least 1) held by the store run `run`.
    pub(crate) fn connect(&mut self, run: u64, lease_secs: u32, now: Timestamp) {
        self.set_online(true, lease_secs.max(1), now);
        if let Some(lease) = &mut self.lease {
            lease.holder = Some(run);
        }
    }

    /// The connection rule going offline: the last connection closed at
    /// `closed_at` (its grace over): offline, `lastOnlineAt` the close time
    /// (never earlier than the one stored, never later than the write's
    /// stamp), any lease ended, `__v` + 1.
    pub(crate) fn disconnect(&mut self, closed_at: Timestamp, now: Timestamp) {
        let stamp = self.write_time(now);
        let closed = self
            .last_online_at
            .map_or(closed_at, |t| t.max(closed_at))
            .min(stamp);
        self.is_online = Some(false);
        self.last_online_at = Some(closed);
        self.lease = None;
        self.updated_at = stamp;
        self.version = self.version.next();
    }

    /// The lease's deadline, while one runs.
    pub fn online_expires_at(&self) -> Option<Timestamp> {
        self.lease.map(|lease| lease.expires_at)
    }

    /// Whether a lease runs and its deadline is at or before `now`.
    pub fn lease_expired(&self, now: Timestamp) -> bool {
        self.lease.is_some_and(|lease| lease.expires_at <= now)
    }

    /// The expiry rule: the lease ends and the subscriber goes offline, as
    /// a change of its own: `isOnline` false, `lastOnlineAt` the last
    /// heartbeat, `updatedAt` the deadline (or the stored `updatedAt` if
    /// later: times never go back), `__v` + 1. Nothing happens without a lease.
    pub fn expire(&mut self) {
        let Some(lease) = self.lease.take() else {
            return;
        };
        self.is_online = Some(false);
        let heard = self
            .last_online_at
            .map_or(lease.heard_at, |t| t.max(lease.heard_at));
        self.last_online_at = Some(heard);
        self.updated_at = self.updated_at.max(lease.expires_at);
        self.version = self.version.next();
    }

    /// The document as it reads at `now`: with its lease expired if the
    /// deadline has passed, whether or not the expiry is written yet.
    pub fn as_of(mut self, now: Timestamp) -> Subscriber {
        if self.lease_expired(now) {
            self.expire();
        }
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::id::ObjectId;
    use crate::precondition::Version;

    fn doc() -> Subscriber {
        let t = Timestamp::from_millis(1_000);
        Subscriber {
            id: ObjectId::from_bytes([1; 12]),
            subscriber_id: "u".into(),
            first_name: None,
            last_name: None,
            email: None,
            phone: None,
            avatar: None,
            locale: None,
            channels: vec![],
            is_online: None,
            last_online_at: None,
            lease: None,
            organization_id: ObjectId::from_bytes([2; 12]),
            environment_id: ObjectId::from_bytes([3; 12]),
            created_at: t,
            updated_at: t,
            version: Version(0),
            data: None,
            timezone: None,
        }
    }

    #[test]
    fn a_heartbeat_starts_and_moves_a_lease_and_offline_or_zero_ends_it() {
        let mut d = doc();
        d.set_online(true, 30, Timestamp::from_millis(2_000));
        assert_eq!(d.online_expires_at(), Some(Timestamp::from_millis(32_000)));
        d.set_online(true, 30, Timestamp::from_millis(10_000));
        assert_eq!(d.online_expires_at(), Some(Timestamp::from_millis(40_000)));
        assert_eq!(
            d.lease.map(|l| l.heard_at),
            Some(Timestamp::from_millis(10_000))
        );
        d.set_online(true, 0, Timestamp::from_millis(11_000));
        assert_eq!((d.lease, d.is_online), (None, Some(true)));
        d.set_online(true, 5, Timestamp::from_millis(12_000));
        d.set_online(false, 5, Timestamp::from_millis(13_000));
        assert_eq!(d.lease, None);
        assert_eq!(d.version, Version(5));
    }

    #[test]
    fn expiry_is_a_change_of_its_own_stamped_with_the_deadline() {
        let mut d = doc();
        d.set_online(true, 30, Timestamp::from_millis(2_000));
        let due = Timestamp::from_millis(32_000);
        // Not yet due: reads show it as it is.
        assert_eq!(d.clone().as_of(Timestamp::from_millis(31_999)), d);
        let read = d.clone().as_of(due);
        assert_eq!(read.is_online, Some(false));
        assert_eq!(read.lease, None);
        assert_eq!(read.last_online_at, Some(Timestamp::from_millis(2_000)));
        assert_eq!(read.updated_at, due);
        assert_eq!(read.version, Version(2));
        // Expiring twice changes nothing more.
        let mut again = read.clone();
        again.expire();
        assert_eq!(again, read);
        // A later stored time is kept: times never go back.
        let mut late = d.clone();
        late.updated_at = Timestamp::from_millis(50_000);
        late.expire();
        assert_eq!(late.updated_at, Timestamp::from_millis(50_000));
    }

    #[test]
    fn ttl_rule() {
        assert_eq!(check_ttl_seconds(0), Ok(0));
        assert_eq!(check_ttl_seconds(86_400), Ok(86_400));
        for bad in [86_401, u64::from(u32::MAX) + 1, u64::MAX] {
            assert!(check_ttl_seconds(bad).is_err(), "{bad}");
        }
    }
}
