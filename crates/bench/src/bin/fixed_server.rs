//! The HTTP peer: a minimal hyper server that answers every request with a
//! fixed body the size of a presence-write answer. It measures what the
//! machine, hyper and the load generator cost without any work.
//!
//! `fixed_server ADDR` prints `listening on http://ADDR` and serves until killed.
#![allow(clippy::unwrap_used)]

use std::convert::Infallible;

use bytes::Bytes;
use http_body_util::Full;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Response, header};
use hyper_util::rt::TokioIo;

const BODY: &str = r#"{"data":{"_id":"6b0827134eab3109d7d2bfe1","firstName":"Ada","lastName":"Lovelace","email":"user1@example.com","subscriberId":"subscriber-0000001","channels":[],"isOnline":false,"lastOnlineAt":"2026-11-26T12:33:23.621Z","_organizationId":"6b08270befc6f02cacfdd944","_environmentId":"6b08270be778a0bef0b3fa51","deleted":false,"createdAt":"2026-11-26T12:33:23.613Z","updatedAt":"2026-11-26T12:33:23.621Z","__v":1}}"#;

fn main() {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:0".into());
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind(&addr).await.unwrap();
        println!("listening on http://{}", listener.local_addr().unwrap());
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            let _ = stream.set_nodelay(true);
            tokio::spawn(async move {
                let service = service_fn(|_request| async {
                    let mut response =
                        Response::new(Full::new(Bytes::from_static(BODY.as_bytes())));
                    response.headers_mut().insert(
                        header::CONTENT_TYPE,
                        header::HeaderValue::from_static("application/json; charset=utf-8"),
                    );
                    Ok::<_, Infallible>(response)
                });
                let _ = http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
}
