//! Shared test helpers: a store on a temporary directory with a manual clock,
//! and one tenant in it.
#![allow(dead_code)]

use std::path::Path;
use std::sync::Arc;

use subscriber_store::{Config, Durability, ManualClock, Store, Tenant, Timestamp};

/// 2026-11-26T10:00:00.000Z
pub const START: Timestamp = Timestamp::from_millis(1_795_687_200_000);

pub struct Fixture {
    pub dir: tempfile::TempDir,
    pub clock: ManualClock,
    pub store: Store,
    pub tenant: Tenant,
}

pub fn config(dir: &Path, clock: &ManualClock) -> Config {
    Config::new(dir)
        .durability(Durability::Relaxed)
        .clock(Arc::new(clock.clone()))
}

impl Fixture {
    pub fn new() -> Fixture {
        let dir = tempfile::tempdir().expect("temp dir");
        let clock = ManualClock::new(START);
        let store = Store::open(config(dir.path(), &clock)).expect("open");
        let org = store.create_organization("Acme").expect("org");
        let tenant = store
            .create_environment(org.id, "Development")
            .expect("env")
            .tenant();
        Fixture {
            dir,
            clock,
            store,
            tenant,
        }
    }

    /// Closes the store and opens it again on the same directory.
    pub fn reopen(&mut self) {
        self.store.flush().expect("flush");
        let placeholder = Store::open(Config::temporary()).expect("temporary store");
        drop(std::mem::replace(&mut self.store, placeholder));
        self.store = Store::open(config(self.dir.path(), &self.clock)).expect("reopen");
    }

    pub fn ms(&self, millis: u64) -> Timestamp {
        Timestamp::from_millis(START.as_millis() + millis)
    }
}
