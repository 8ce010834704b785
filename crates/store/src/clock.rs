//! Time as the store sees it: a [`Timestamp`] in milliseconds and the
//! injectable [`Clock`] that produces it. Nothing else in the store reads the
//! system time, so tests can set it.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Milliseconds since the Unix epoch, UTC.
///
/// Displays as ISO 8601 with milliseconds: `2026-11-26T10:00:00.000Z`.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, bincode::Encode, bincode::Decode,
)]
pub struct Timestamp(u64);

impl Timestamp {
    /// The instant `millis` milliseconds after the Unix epoch.
    pub const fn from_millis(millis: u64) -> Self {
        Timestamp(millis)
    }

    /// Milliseconds since the Unix epoch.
    pub const fn as_millis(self) -> u64 {
        self.0
    }

    /// This instant moved forward by `by`, saturating at the far future.
    pub fn saturating_add(self, by: Duration) -> Self {
        let add = u64::try_from(by.as_millis()).unwrap_or(u64::MAX);
        Timestamp(self.0.saturating_add(add))
    }

    /// This instant moved back by `by`, saturating at the epoch.
    pub fn saturating_sub(self, by: Duration) -> Self {
        let sub = u64::try_from(by.as_millis()).unwrap_or(u64::MAX);
        Timestamp(self.0.saturating_sub(sub))
    }

    fn as_system_time(self) -> SystemTime {
        UNIX_EPOCH + Duration::from_millis(self.0)
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // humantime renders years up to 9999; later instants cannot come from a
        // clock but could come from a hand-made Timestamp, so clamp rather than panic.
        const MAX_MILLIS: u64 = 253_402_300_799_999; // 9999-12-31T23:59:59.999Z
        let clamped = Timestamp(self.0.min(MAX_MILLIS));
        write!(
            f,
            "{}",
            humantime::format_rfc3339_millis(clamped.as_system_time())
        )
    }
}

/// A source of the current time. The store reads time only through this.
pub trait Clock: Send + Sync + fmt::Debug {
    /// The current instant by the wall clock (it may step either way).
    fn now(&self) -> Timestamp;

    /// Time elapsed since a fixed origin of this process, as the process
    /// measures it: never steps back or jumps when the wall clock is set.
    /// Lease deadlines held by a running store follow it (SPEC section 10).
    /// The default reads the system's monotonic clock.
    fn monotonic(&self) -> Duration {
        static ORIGIN: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
        ORIGIN.get_or_init(Instant::now).elapsed()
    }
}

/// One reading of both clocks, taken together.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Now {
    /// The wall clock: what timestamps say.
    pub wall: Timestamp,
    /// The monotonic clock: what lease deadlines follow.
    pub mono: Duration,
}

impl Now {
    /// Both readings of `clock`, now.
    pub fn of(clock: &dyn Clock) -> Now {
        Now {
            wall: clock.now(),
            mono: clock.monotonic(),
        }
    }
}

/// The real wall clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Timestamp {
        let since = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or(Duration::ZERO);
        Timestamp(u64::try_from(since.as_millis()).unwrap_or(u64::MAX))
    }
}

/// A clock that moves only when told to; clones share the same time.
/// [`advance`](ManualClock::advance) is time passing (both the wall and
/// the monotonic clock move); [`set`](ManualClock::set) is the wall clock
/// being stepped (the monotonic clock stays).
///
/// ```
/// use subscriber_store::{Clock, ManualClock, Timestamp};
/// use std::time::Duration;
///
/// let clock = ManualClock::new(Timestamp::from_millis(1_000));
/// clock.advance(Duration::from_secs(1));
/// assert_eq!(clock.now().as_millis(), 2_000);
/// clock.set(Timestamp::from_millis(500)); // stepped back
/// assert_eq!(clock.now().as_millis(), 500);
/// assert_eq!(clock.monotonic(), Duration::from_secs(1));
/// ```
#[derive(Debug, Clone)]
pub struct ManualClock {
    wall: Arc<AtomicU64>,
    mono: Arc<AtomicU64>,
}

impl ManualClock {
    /// A clock stopped at `start` (its monotonic time at zero).
    pub fn new(start: Timestamp) -> Self {
        ManualClock {
            wall: Arc::new(AtomicU64::new(start.0)),
            mono: Arc::new(AtomicU64::new(0)),
        }
    }

    /// Steps the wall clock to `to` (it may go backwards); the monotonic
    /// clock does not move.
    pub fn set(&self, to: Timestamp) {
        self.wall.store(to.0, Ordering::SeqCst);
    }

    /// Time passes: both clocks move forward by `by`.
    pub fn advance(&self, by: Duration) {
        let add = u64::try_from(by.as_millis()).unwrap_or(u64::MAX);
        self.mono.fetch_add(add, Ordering::SeqCst);
        self.wall.fetch_add(add, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Timestamp {
        Timestamp(self.wall.load(Ordering::SeqCst))
    }

    fn monotonic(&self) -> Duration {
        Duration::from_millis(self.mono.load(Ordering::SeqCst))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn displays_iso_8601_with_millis() {
        let t = Timestamp::from_millis(1_795_687_200_123);
        assert_eq!(t.to_string(), "2026-11-26T10:00:00.123Z");
        assert_eq!(
            Timestamp::from_millis(0).to_string(),
            "1970-01-01T00:00:00.000Z"
        );
    }

    #[test]
    fn far_future_is_clamped_not_a_panic() {
        assert_eq!(
            Timestamp::from_millis(u64::MAX).to_string(),
            "9999-12-31T23:59:59.999Z"
        );
    }
}
