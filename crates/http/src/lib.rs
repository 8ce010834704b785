//! The HTTP facade over `subscriber-store`: Novu's subscriber routes on hyper
//! 1.x, and the presence feed and queries (`/v1/presence/...`, beyond Novu;
//! the feed also as server-sent events). It routes, authenticates, converts
//! wire JSON to store commands, makes one store call per request and renders
//! the outcome; the rules live in the store.
//!
//! ```no_run
//! # async fn run() -> std::io::Result<()> {
//! use subscriber_http::{ServerConfig, serve};
//! use subscriber_store::{Config, Store};
//!
//! let store = Store::open(Config::new("./subscriberd-data")).expect("open store");
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:3000").await?;
//! serve(listener, store, ServerConfig::default(), async {
//!     let _ = tokio::signal::ctrl_c().await;
//! })
//! .await
//! # }
//! ```

mod error;
mod extract;
#[doc(hidden)]
pub mod fuzzing;
mod handlers;
mod inbox;
pub mod metrics;
mod openapi;
mod router;
mod server;
mod socket;
mod stream;
pub mod token;
mod wire;

pub use metrics::Metrics;
pub use openapi::document as openapi_document;
pub use server::{InboxConfig, ServerConfig, answer_starting, serve, serve_metrics};
pub use token::{Session, TokenError, TokenKey};

/// Every `(method, path pattern)` the server routes, as the OpenAPI document
/// names them.
pub fn routes() -> impl Iterator<Item = (&'static str, &'static str)> {
    router::ROUTES.iter().map(|(m, p, _)| (m.as_str(), *p))
}
