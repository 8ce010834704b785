//! While the store opens, the port already answers: 503 in the error shape
//! (a readiness probe sees "starting", not a refused connection), and the
//! server takes over the same listener once the store is open.

use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_port_answers_503_until_the_store_is_open() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (open, opened) = tokio::sync::oneshot::channel::<&'static str>();
    let starting = tokio::spawn(async move {
        let value = subscriber_http::answer_starting(&listener, async {
            opened.await.unwrap_or("dropped")
        })
        .await;
        (value, listener)
    });
    for path in ["/ready", "/v1/health-check", "/v1/subscribers/a"] {
        let reply =
            tokio::task::spawn_blocking(move || testkit::send(addr, "GET", path, &[], None))
                .await
                .expect("client");
        assert_eq!(reply.status, 503, "{path}");
        let body = reply.json();
        assert_eq!(body["statusCode"], 503);
        assert_eq!(
            body["message"],
            "Starting: recovering the store, retry shortly"
        );
    }
    open.send("open").expect("send");
    let (value, listener) = tokio::time::timeout(Duration::from_secs(5), starting)
        .await
        .expect("returns once the store is open")
        .expect("task");
    assert_eq!(value, "open");
    // The listener is handed back, still bound.
    assert_eq!(listener.local_addr().expect("addr"), addr);
}
