//! Property test: random operations on a few subscribers give the same
//! documents and errors from the store as from a plain in-memory model, also
//! across closing and reopening the store.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use proptest::prelude::*;
use subscriber_store::{
    Clock, Entity, Error, ObjectId, Subscriber, SubscriberInput, Timestamp, Version,
};

#[derive(Debug, Clone)]
enum Op {
    Upsert {
        id: &'static str,
        first_name: Option<Option<String>>,
        email: Option<Option<String>>,
        fail_if_exists: bool,
        expected: Option<u64>,
    },
    SetOnline {
        id: &'static str,
        online: bool,
        expected: Option<u64>,
    },
    Delete {
        id: &'static str,
        expected: Option<u64>,
    },
    Get {
        id: &'static str,
    },
    Advance(u64),
    Reopen,
}

fn op() -> impl Strategy<Value = Op> {
    let id = prop::sample::select(vec!["a", "b", "c"]);
    let expected = prop::option::weighted(0.3, 0u64..4);
    prop_oneof![
        3 => (
            id.clone(),
            prop::option::of(prop::option::of("[a-z]{0,3}")),
            prop::option::of(prop::option::of("[a-z]{1,3}@x")),
            prop::bool::weighted(0.2),
            expected.clone()
        )
            .prop_map(|(id, first_name, email, fail_if_exists, expected)| Op::Upsert {
                id,
                first_name,
                email,
                fail_if_exists,
                expected
            }),
        4 => (id.clone(), any::<bool>(), expected.clone())
            .prop_map(|(id, online, expected)| Op::SetOnline { id, online, expected }),
        1 => (id.clone(), expected).prop_map(|(id, expected)| Op::Delete { id, expected }),
        2 => id.prop_map(|id| Op::Get { id }),
        2 => (0u64..5_000).prop_map(Op::Advance),
        1 => Just(Op::Reopen),
    ]
}

/// The model's document: everything the store returns but `_id`.
#[derive(Debug, Clone, PartialEq)]
struct Doc {
    first_name: Option<String>,
    email: Option<Option<String>>,
    is_online: Option<bool>,
    last_online_at: Option<Timestamp>,
    created_at: Timestamp,
    updated_at: Timestamp,
    version: u64,
}

impl Doc {
    fn of(s: &Subscriber) -> Doc {
        Doc {
            first_name: s.first_name.clone(),
            email: s.email.clone(),
            is_online: s.is_online,
            last_online_at: s.last_online_at,
            created_at: s.created_at,
            updated_at: s.updated_at,
            version: s.version.0,
        }
    }
}

#[derive(Default)]
struct Model {
    docs: BTreeMap<&'static str, Doc>,
}

fn conflict(expected: u64, current: Option<&Doc>) -> Error {
    Error::VersionConflict {
        expected: Version(expected).into(),
        current: current.map(|d| Version(d.version)),
    }
}

const NOT_FOUND: Error = Error::NotFound(Entity::Subscriber);

impl Model {
    fn apply(&mut self, op: &Op, now: Timestamp) -> Option<Result<Doc, Error>> {
        let mismatch = |doc: Option<&Doc>, expected: &Option<u64>| {
            expected.filter(|e| doc.map(|d| d.version) != Some(*e))
        };
        Some(match op {
            Op::Upsert {
                id,
                first_name,
                email,
                fail_if_exists,
                expected,
            } => {
                let current = self.docs.get(id);
                if let Some(e) = mismatch(current, expected) {
                    Err(conflict(e, current))
                } else if let (true, Some(doc)) = (*fail_if_exists, current) {
                    Err(Error::AlreadyExists {
                        current: Version(doc.version),
                    })
                } else {
                    let mut doc = match current {
                        Some(doc) => Doc {
                            version: doc.version + 1,
                            updated_at: now,
                            ..doc.clone()
                        },
                        None => Doc {
                            first_name: None,
                            email: None,
                            is_online: None,
                            last_online_at: None,
                            created_at: now,
                            updated_at: now,
                            version: 0,
                        },
                    };
                    // Three-way fields: absent keeps, null clears, a value sets.
                    if let Some(first_name) = first_name {
                        doc.first_name = first_name.clone();
                    }
                    if let Some(email) = email {
                        doc.email = email.clone().map(Some);
                    }
                    self.docs.insert(id, doc.clone());
                    Ok(doc)
                }
            }
            Op::SetOnline {
                id,
                online,
                expected,
            } => match self.docs.get_mut(id) {
                None => Err(NOT_FOUND),
                Some(doc) => {
                    if let Some(e) = mismatch(Some(doc), expected) {
                        Err(conflict(e, Some(doc)))
                    } else {
                        if !online && doc.is_online != Some(false) {
                            doc.last_online_at = Some(now);
                        }
                        doc.is_online = Some(*online);
                        doc.updated_at = now;
                        doc.version += 1;
                        Ok(doc.clone())
                    }
                }
            },
            Op::Delete { id, expected } => match self.docs.get(id) {
                None => Err(NOT_FOUND),
                Some(doc) => match mismatch(Some(doc), expected) {
                    Some(e) => Err(conflict(e, Some(doc))),
                    None => Ok(self.docs.remove(id).expect("present")),
                },
            },
            Op::Get { id } => self.docs.get(id).cloned().ok_or(NOT_FOUND),
            Op::Advance(_) | Op::Reopen => return None,
        })
    }
}

fn run(f: &mut common::Fixture, op: &Op) -> Option<Result<Subscriber, Error>> {
    let (store, tenant) = (&f.store, &f.tenant);
    Some(match op {
        Op::Upsert {
            id,
            first_name,
            email,
            fail_if_exists,
            expected,
        } => {
            let mut input = SubscriberInput::new(*id);
            input.first_name = first_name.clone();
            input.email = email.clone();
            if *fail_if_exists && expected.is_none() {
                store.create(tenant, input)
            } else {
                let command = subscriber_store::Command::Upsert {
                    input,
                    fail_if_exists: *fail_if_exists,
                };
                store.execute(tenant, command, expected.map(|v| Version(v).into()))
            }
        }
        Op::SetOnline {
            id,
            online,
            expected,
        } => store.set_online(tenant, id, *online, expected.map(|v| Version(v).into())),
        Op::Delete { id, expected } => {
            store.delete(tenant, id, expected.map(|v| Version(v).into()))
        }
        Op::Get { id } => store.get(tenant, id),
        Op::Advance(ms) => {
            f.clock.advance(Duration::from_millis(*ms));
            return None;
        }
        Op::Reopen => {
            f.reopen();
            return None;
        }
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn store_matches_model(ops in prop::collection::vec(op(), 1..40)) {
        let mut f = common::Fixture::new();
        let mut model = Model::default();
        let mut ids: BTreeMap<&'static str, ObjectId> = BTreeMap::new();
        for op in &ops {
            let now = f.clock.now();
            let expected = model.apply(op, now);
            let actual = run(&mut f, op);
            let actual_doc = actual.as_ref().map(|r| r.as_ref().map(Doc::of).map_err(Clone::clone));
            prop_assert_eq!(&actual_doc, &expected, "op {:?}", op);
            if let Some(Ok(doc)) = &actual {
                let id = op_id(op);
                // `_id` is fixed from creation until delete.
                let known = *ids.entry(id).or_insert(doc.id);
                prop_assert_eq!(known, doc.id);
                if matches!(op, Op::Delete { .. }) {
                    ids.remove(id);
                }
            }
        }
        // Finally every document the model holds is in the store after a reopen.
        f.reopen();
        for (id, doc) in &model.docs {
            let stored = f.store.get(&f.tenant, id).map(|s| Doc::of(&s));
            prop_assert_eq!(stored, Ok(doc.clone()));
        }
    }
}

fn op_id(op: &Op) -> &'static str {
    match op {
        Op::Upsert { id, .. }
        | Op::SetOnline { id, .. }
        | Op::Delete { id, .. }
        | Op::Get { id } => id,
        Op::Advance(_) | Op::Reopen => "",
    }
}
