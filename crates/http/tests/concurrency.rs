//! 64 clients hammering one subscriber over HTTP: the `__v` values they get
//! are distinct and consecutive, nothing fails, and the final document is
//! the last write.

mod common;

use std::collections::BTreeMap;
use std::sync::{Arc, Barrier};

use common::TestServer;

#[test]
fn sixty_four_clients_on_one_subscriber() {
    let s = Arc::new(TestServer::start());
    assert_eq!(
        s.call("POST", "/v1/subscribers", Some(r#"{"subscriberId":"hot"}"#))
            .status,
        201
    );
    const CLIENTS: usize = 64;
    const EACH: usize = 20;
    let start = Arc::new(Barrier::new(CLIENTS));
    let threads: Vec<_> = (0..CLIENTS)
        .map(|c| {
            let s = Arc::clone(&s);
            let start = Arc::clone(&start);
            std::thread::spawn(move || {
                start.wait();
                (0..EACH)
                    .map(|n| {
                        let online = (c + n) % 2 == 0;
                        let reply = s.call(
                            "PATCH",
                            "/v1/subscribers/hot/online-status",
                            Some(&format!("{{\"isOnline\": {online}}}")),
                        );
                        assert_eq!(
                            reply.status,
                            200,
                            "{}",
                            String::from_utf8_lossy(&reply.body)
                        );
                        reply.data()
                    })
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let mut by_version = BTreeMap::new();
    for t in threads {
        for doc in t.join().expect("client") {
            let v = doc["__v"].as_u64().expect("__v");
            assert!(
                by_version.insert(v, doc).is_none(),
                "__v {v} returned twice"
            );
        }
    }
    let total = (CLIENTS * EACH) as u64;
    assert_eq!(
        by_version.keys().copied().collect::<Vec<_>>(),
        (1..=total).collect::<Vec<_>>()
    );
    // Along the versions, times never go backwards (the clock is read under
    // the subscriber's lock), and createdAt <= updatedAt.
    let mut previous: Option<&serde_json::Value> = None;
    for doc in by_version.values() {
        assert!(
            doc["createdAt"].as_str() <= doc["updatedAt"].as_str(),
            "{doc}"
        );
        if let Some(prev) = previous {
            for field in ["updatedAt", "lastOnlineAt"] {
                // ISO 8601 with fixed width: text order is time order.
                assert!(
                    prev[field].as_str() <= doc[field].as_str(),
                    "{field} went backwards: {prev} then {doc}"
                );
            }
        }
        previous = Some(doc);
    }
    let last = by_version.remove(&total).expect("last write");
    assert_eq!(s.call("GET", "/v1/subscribers/hot", None).data(), last);
}
