//! Tenancy: environments isolate subscribers; keys are issued, resolved,
//! listed without secrets and revoked.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command as Process, Stdio};
use std::time::Duration;

use common::Fixture;
use subscriber_store::{Config, Durability, Entity, Error, ObjectId, Store, SubscriberInput};

#[test]
fn environment_a_never_sees_environment_b() {
    let f = Fixture::new();
    let org = f.store.create_organization("Other").expect("org");
    let b = f
        .store
        .create_environment(org.id, "Production")
        .expect("env")
        .tenant();
    let a = f.tenant;
    f.store
        .upsert(&a, SubscriberInput::new("shared-id"), None)
        .expect("create in A");
    let missing = Err(Error::NotFound(Entity::Subscriber));
    assert_eq!(f.store.get(&b, "shared-id"), missing);
    assert_eq!(f.store.set_online(&b, "shared-id", true, None), missing);
    assert_eq!(f.store.delete(&b, "shared-id", None), missing);

    // The same id in B is a separate document.
    let in_b = f
        .store
        .upsert(&b, SubscriberInput::new("shared-id"), None)
        .expect("create in B");
    assert_eq!(in_b.environment_id, b.environment_id());
    f.store
        .set_online(&b, "shared-id", true, None)
        .expect("B online");
    let in_a = f.store.get(&a, "shared-id").expect("A unchanged");
    assert_eq!(in_a.is_online, None);
    assert_eq!(in_a.environment_id, a.environment_id());
}

#[test]
fn issued_key_resolves_to_its_environment() {
    let f = Fixture::new();
    let key = f.store.issue_key(f.tenant.environment_id()).expect("issue");
    assert_eq!(key.secret.len(), 64);
    assert!(key.secret.bytes().all(|b| b.is_ascii_hexdigit()));
    assert_eq!(f.store.resolve_key(&key.secret).expect("resolve"), f.tenant);
    assert_eq!(key.info.hint, key.secret[60..]);
    assert!(!format!("{key:?}").contains(&key.secret));
}

#[test]
fn unknown_key_is_not_found() {
    let f = Fixture::new();
    for secret in ["", "nope", &"0".repeat(64)] {
        assert_eq!(
            f.store.resolve_key(secret),
            Err(Error::NotFound(Entity::ApiKey))
        );
    }
}

#[test]
fn keys_are_listed_without_secrets_and_revoked_at_once() {
    let f = Fixture::new();
    let env = f.tenant.environment_id();
    let k1 = f.store.issue_key(env).expect("k1");
    let k2 = f.store.issue_key(env).expect("k2");
    let listed = f.store.keys(Some(env)).expect("list");
    assert_eq!(listed.len(), 2);
    assert!(listed.contains(&k1.info) && listed.contains(&k2.info));
    let dump = format!("{listed:?}");
    assert!(!dump.contains(&k1.secret) && !dump.contains(&k2.secret));

    f.store.revoke_key(k1.info.id).expect("revoke");
    assert_eq!(
        f.store.resolve_key(&k1.secret),
        Err(Error::NotFound(Entity::ApiKey))
    );
    assert_eq!(f.store.resolve_key(&k2.secret).expect("k2 works"), f.tenant);
    assert_eq!(f.store.keys(None).expect("list"), vec![k2.info.clone()]);
    assert_eq!(
        f.store.revoke_key(k1.info.id),
        Err(Error::NotFound(Entity::ApiKey))
    );
}

#[test]
fn keys_of_unknown_environment_cannot_be_issued() {
    let f = Fixture::new();
    let ghost: ObjectId = "0123456789abcdef01234567".parse().expect("hex");
    assert_eq!(
        f.store.issue_key(ghost),
        Err(Error::NotFound(Entity::Environment))
    );
    assert_eq!(
        f.store.create_environment(ghost, "x"),
        Err(Error::NotFound(Entity::Organization))
    );
    assert_eq!(
        f.store.tenant(ghost),
        Err(Error::NotFound(Entity::Environment))
    );
}

#[test]
fn ensure_environment_creates_it_once() {
    let dir = tempfile::tempdir().expect("dir");
    let store =
        subscriber_store::Store::open(subscriber_store::Config::new(dir.path())).expect("open");
    let (env, created) = store.ensure_environment("Development").expect("ensure");
    assert!(created);
    assert_eq!(env.name, "Development");
    assert_eq!(store.organizations().expect("orgs").len(), 1);
    let (again, created) = store.ensure_environment("Development").expect("again");
    assert!(!created);
    assert_eq!(again, env);
    let (prod, created) = store.ensure_environment("Production").expect("second env");
    assert!(created);
    assert_eq!(prod.organization_id, env.organization_id);
    assert_eq!(store.environments().expect("envs").len(), 2);
}

#[test]
fn operator_chosen_key_is_registered_once_and_resolves() {
    let f = Fixture::new();
    let env = f.tenant.environment_id();
    let secret = "operator-chosen-secret-0001";
    let info = f.store.add_key(env, secret).expect("add");
    assert_eq!(f.store.add_key(env, secret).expect("again"), info);
    assert_eq!(f.store.resolve_key(secret).expect("resolves"), f.tenant);
    assert_eq!(f.store.keys(Some(env)).expect("list").len(), 1);
    for bad in ["short", "has a space in it!!", &"x".repeat(256)] {
        assert!(matches!(
            f.store.add_key(env, bad),
            Err(Error::InvalidInput { .. })
        ));
    }
    assert_eq!(
        f.store.environment_named("Development").expect("named").id,
        env
    );
}

const CHILD_DIR_VAR: &str = "SUBSCRIBER_STORE_TENANCY_CHILD_DIR";
const CHILD_REVOKE_VAR: &str = "SUBSCRIBER_STORE_TENANCY_CHILD_REVOKE";

/// The child of `key_changes_survive_sigkill_in_relaxed_mode`: a relaxed
/// store whose background flush is a minute away creates an environment,
/// issues and registers keys, revokes one, reports, and waits to be killed.
#[test]
#[ignore = "the child process of key_changes_survive_sigkill_in_relaxed_mode, which runs it"]
fn tenancy_child() {
    let dir = std::env::var(CHILD_DIR_VAR).expect("run by the parent test");
    let revoke: ObjectId = std::env::var(CHILD_REVOKE_VAR)
        .expect("key id")
        .parse()
        .expect("object id");
    let store = Store::open(
        Config::new(dir)
            .durability(Durability::Relaxed)
            .flush_interval(Duration::from_secs(60)),
    )
    .expect("open");
    let (env, created) = store.ensure_environment("Production").expect("env");
    assert!(created);
    let issued = store.issue_key(env.id).expect("issue");
    store
        .add_key(env.id, "operator-chosen-secret-0002")
        .expect("add");
    store.revoke_key(revoke).expect("revoke");
    println!("done {}", issued.secret);
    std::thread::sleep(Duration::from_secs(60));
}

#[test]
fn key_changes_survive_sigkill_in_relaxed_mode() {
    let dir = tempfile::tempdir().expect("dir");
    let relaxed = || {
        Config::new(dir.path())
            .durability(Durability::Relaxed)
            .flush_interval(Duration::from_secs(60))
    };
    let (development, old) = {
        let store = Store::open(relaxed()).expect("open");
        let (env, _) = store.ensure_environment("Development").expect("env");
        let old = store.issue_key(env.id).expect("old key");
        store.flush().expect("flush");
        (env.tenant(), old)
    };
    let mut child = Process::new(std::env::current_exe().expect("test binary"))
        .args(["--exact", "tenancy_child", "--ignored", "--nocapture"])
        .env(CHILD_DIR_VAR, dir.path())
        .env(CHILD_REVOKE_VAR, old.info.id.to_string())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn child");
    let stdout = child.stdout.take().expect("piped");
    let secret = BufReader::new(stdout)
        .lines()
        .map_while(std::result::Result::ok)
        .find_map(|line| line.strip_prefix("done ").map(str::to_owned));
    // SIGKILL as soon as the calls returned: nothing but their own flush
    // can have put them on disk.
    child.kill().expect("SIGKILL");
    child.wait().expect("reap");
    let secret = secret.expect("the child reported its key");

    let store = Store::open(relaxed()).expect("reopen");
    assert_eq!(
        store.resolve_key(&old.secret),
        Err(Error::NotFound(Entity::ApiKey)),
        "a revoked key works again after a crash"
    );
    let production = store
        .environment_named("Production")
        .expect("the environment created with the key survives")
        .tenant();
    assert_ne!(production, development);
    assert_eq!(
        store.resolve_key(&secret).expect("the issued key survives"),
        production
    );
    assert_eq!(
        store
            .resolve_key("operator-chosen-secret-0002")
            .expect("the registered key survives"),
        production
    );
}
