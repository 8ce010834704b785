//! A durable write as a future: it resolves only after a flush round has
//! covered it, wakes its task when the store's commit thread finishes that
//! round, and many futures share one round. The store runs no async
//! runtime; this test drives the futures with a minimal executor.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll, Wake, Waker};
use std::time::{Duration, Instant};

use subscriber_store::{Command, Config, Durability, Store, SubscriberInput};

/// Counts its wakes and unparks the thread that polls.
struct Unpark {
    thread: std::thread::Thread,
    wakes: AtomicUsize,
}

impl Wake for Unpark {
    fn wake(self: Arc<Self>) {
        self.wakes.fetch_add(1, Ordering::SeqCst);
        self.thread.unpark();
    }
}

fn block_on<F: Future + Unpin>(mut future: F, waker: &Waker) -> F::Output {
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut cx = Context::from_waker(waker);
    loop {
        if let Poll::Ready(out) = Pin::new(&mut future).poll(&mut cx) {
            return out;
        }
        assert!(Instant::now() < deadline, "the future was never woken");
        std::thread::park_timeout(Duration::from_millis(100));
    }
}

#[test]
fn awaited_writes_resolve_after_a_round_that_covers_them_and_share_rounds() {
    let dir = tempfile::tempdir().expect("dir");
    let store = Store::open(Config::new(dir.path()).durability(Durability::Durable)).expect("open");
    let org = store.create_organization("Acme").expect("org");
    let tenant = store
        .create_environment(org.id, "Dev")
        .expect("env")
        .tenant();
    for i in 0..16 {
        store
            .upsert(&tenant, SubscriberInput::new(format!("u{i}")), None)
            .expect("create");
    }
    let waker_state = Arc::new(Unpark {
        thread: std::thread::current(),
        wakes: AtomicUsize::new(0),
    });
    let waker = Waker::from(Arc::clone(&waker_state));

    let rounds_before = store.flush_rounds();
    // Committed in memory, visible, but no round has run for them yet:
    // nobody is waiting.
    let pending: Vec<_> = (0..16)
        .map(|i| {
            let command = Command::SetOnline {
                subscriber_id: format!("u{i}"),
                online: true,
            };
            store.commit(&tenant, command, None).expect("commit")
        })
        .collect();
    assert_eq!(store.get(&tenant, "u3").expect("get").is_online, Some(true));
    assert_eq!(store.flush_rounds(), rounds_before, "no waiter, no round");

    let mut cx = Context::from_waker(&waker);
    let mut pending = pending;
    let first = Pin::new(&mut pending[0]).poll(&mut cx);
    assert!(first.is_pending(), "not durable before any round");
    let docs: Vec<_> = pending
        .into_iter()
        .map(|f| block_on(f, &waker).expect("durable"))
        .collect();
    assert!(
        docs.iter()
            .all(|d| d.is_online == Some(true) && d.version.0 == 1)
    );
    let rounds = store.flush_rounds() - rounds_before;
    assert!(rounds >= 1, "a round ran for them");
    assert!(
        rounds <= 2,
        "16 waiting writes shared their rounds: {rounds}"
    );
    assert!(
        waker_state.wakes.load(Ordering::SeqCst) >= 1,
        "the commit thread woke the task"
    );

    // Reopened, the writes are there.
    drop(store);
    let store = Store::open(Config::new(dir.path())).expect("reopen");
    assert_eq!(store.get(&tenant, "u15").expect("get").version.0, 1);
}

#[test]
fn in_relaxed_mode_and_for_temporary_stores_the_future_is_ready_at_once() {
    let dir = tempfile::tempdir().expect("dir");
    for config in [
        Config::new(dir.path()).durability(Durability::Relaxed),
        Config::temporary(),
    ] {
        let store = Store::open(config).expect("open");
        let org = store.create_organization("Acme").expect("org");
        let tenant = store
            .create_environment(org.id, "Dev")
            .expect("env")
            .tenant();
        let mut durable = store
            .commit(
                &tenant,
                Command::Upsert {
                    input: SubscriberInput::new("u"),
                    fail_if_exists: true,
                },
                None,
            )
            .expect("commit");
        let waker = Waker::noop();
        let mut cx = Context::from_waker(waker);
        match Pin::new(&mut durable).poll(&mut cx) {
            Poll::Ready(Ok(doc)) => assert_eq!(doc.subscriber_id, "u"),
            other => panic!("expected ready, got {other:?}"),
        }
    }
}
