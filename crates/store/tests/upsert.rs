//! Create/upsert and get: defaults, field updates, versions, validation.

mod common;

use std::time::Duration;

use common::{Fixture, START};
use subscriber_store::{
    ChannelSettings, Credentials, Data, Entity, Error, Field, InputProblem, MAX_RECORD_BYTES,
    SubscriberInput, Version,
};

#[test]
fn create_sets_defaults_and_version_zero() {
    let f = Fixture::new();
    let doc = f
        .store
        .upsert(&f.tenant, SubscriberInput::new("u1"), None)
        .expect("create");
    assert_eq!(doc.subscriber_id, "u1");
    assert_eq!(doc.version, Version(0));
    assert_eq!(doc.created_at, START);
    assert_eq!(doc.updated_at, START);
    assert!(doc.channels.is_empty());
    assert_eq!(doc.is_online, None);
    assert_eq!(doc.last_online_at, None);
    assert_eq!(doc.email, None);
    assert_eq!(doc.data, None);
    assert_eq!(doc.organization_id, f.tenant.organization_id());
    assert_eq!(doc.environment_id, f.tenant.environment_id());
    assert_eq!(f.store.get(&f.tenant, "u1").expect("get"), doc);
}

#[test]
fn upsert_changes_only_given_fields_and_raises_version() {
    let f = Fixture::new();
    let mut input = SubscriberInput::new("u1");
    input.first_name = Some(Some("Ada".into()));
    input.email = Some(Some("ada@example.com".into()));
    input.data = Some(Some(
        Data::from_value(&serde_json::json!({"plan": "pro"})).expect("data"),
    ));
    let created = f.store.upsert(&f.tenant, input, None).expect("create");

    f.clock.advance(Duration::from_secs(5));
    let mut input = SubscriberInput::new("u1");
    input.last_name = Some(Some("Lovelace".into()));
    input.email = Some(None); // null clears
    let updated = f.store.upsert(&f.tenant, input, None).expect("update");

    assert_eq!(updated.id, created.id);
    assert_eq!(updated.version, Version(1));
    assert_eq!(updated.first_name.as_deref(), Some("Ada"));
    assert_eq!(updated.last_name.as_deref(), Some("Lovelace"));
    assert_eq!(updated.email, None);
    assert_eq!(updated.data, created.data);
    assert_eq!(updated.created_at, START);
    assert_eq!(updated.updated_at, f.ms(5_000));
}

#[test]
fn upsert_without_fields_still_counts_as_a_change() {
    let f = Fixture::new();
    f.store
        .upsert(&f.tenant, SubscriberInput::new("u1"), None)
        .expect("create");
    let again = f
        .store
        .upsert(&f.tenant, SubscriberInput::new("u1"), None)
        .expect("upsert");
    assert_eq!(again.version, Version(1));
}

#[test]
fn create_only_fails_when_present_and_changes_nothing() {
    let f = Fixture::new();
    f.store
        .create(&f.tenant, SubscriberInput::new("u1"))
        .expect("create");
    let mut input = SubscriberInput::new("u1");
    input.first_name = Some(Some("Changed".into()));
    assert_eq!(
        f.store.create(&f.tenant, input),
        Err(Error::AlreadyExists {
            current: Version(0)
        })
    );
    let doc = f.store.get(&f.tenant, "u1").expect("get");
    assert_eq!(doc.first_name, None);
    assert_eq!(doc.version, Version(0));
}

#[test]
fn data_comes_back_equal() {
    let f = Fixture::new();
    let value = serde_json::json!({"b": [1, 2.5, {"x": null}], "a": "ünïcode", "n": -7});
    let mut input = SubscriberInput::new("u1");
    input.data = Some(Some(Data::from_value(&value).expect("data")));
    f.store.upsert(&f.tenant, input, None).expect("create");
    let doc = f.store.get(&f.tenant, "u1").expect("get");
    let data = doc.data.expect("data set");
    assert_eq!(data.to_value().expect("json"), value);
    assert_eq!(data.as_json(), serde_json::to_string(&value).expect("json"));
}

#[test]
fn channels_get_a_stable_integration_id() {
    let f = Fixture::new();
    let channel = ChannelSettings {
        provider_id: "slack".into(),
        integration_identifier: None,
        credentials: Credentials {
            webhook_url: Some("https://hooks.example.com/x".into()),
            ..Default::default()
        },
    };
    let mut input = SubscriberInput::new("u1");
    input.channels = Some(vec![channel.clone()]);
    let first = f
        .store
        .upsert(&f.tenant, input.clone(), None)
        .expect("create");
    let second = f.store.upsert(&f.tenant, input, None).expect("upsert");
    assert_eq!(first.channels.len(), 1);
    assert_eq!(first.channels[0].provider_id, "slack");
    assert_eq!(first.channels[0].credentials, channel.credentials);
    assert_eq!(
        first.channels[0].integration_id,
        second.channels[0].integration_id
    );
}

#[test]
fn invalid_input_is_rejected_and_changes_nothing() {
    let f = Fixture::new();
    let cases = [
        ("", InputProblem::Blank),
        ("  ", InputProblem::Blank),
        ("bad\u{7}id", InputProblem::ControlCharacter),
        (&"x".repeat(256), InputProblem::TooLong { max_bytes: 255 }),
    ];
    for (id, problem) in cases {
        let err = f
            .store
            .upsert(&f.tenant, SubscriberInput::new(id), None)
            .expect_err("invalid id");
        assert_eq!(
            err,
            Error::InvalidInput {
                field: Field::SubscriberId,
                problem
            }
        );
    }
    let mut input = SubscriberInput::new("u1");
    input.channels = Some(vec![ChannelSettings {
        provider_id: "carrier-pigeon".into(),
        integration_identifier: None,
        credentials: Credentials::default(),
    }]);
    let err = f
        .store
        .upsert(&f.tenant, input, None)
        .expect_err("bad provider");
    assert_eq!(
        err,
        Error::InvalidInput {
            field: Field::ProviderId { channel: 0 },
            problem: InputProblem::UnknownProvider
        }
    );
    assert_eq!(
        f.store.get(&f.tenant, "u1"),
        Err(Error::NotFound(Entity::Subscriber))
    );
}

#[test]
fn oversized_document_is_rejected() {
    let f = Fixture::new();
    let mut input = SubscriberInput::new("u1");
    let big = "x".repeat(600 * 1024);
    input.data = Some(Some(
        Data::from_value(&serde_json::json!({ "blob": big })).expect("data"),
    ));
    let err = f.store.upsert(&f.tenant, input, None).expect_err("too big");
    assert!(
        matches!(err, Error::TooLarge { bytes, limit } if bytes > limit && limit == MAX_RECORD_BYTES),
        "{err:?}"
    );
    assert!(f.store.get(&f.tenant, "u1").is_err());
}

#[test]
fn get_of_missing_subscriber_is_not_found() {
    let f = Fixture::new();
    assert_eq!(
        f.store.get(&f.tenant, "nobody"),
        Err(Error::NotFound(Entity::Subscriber))
    );
}
