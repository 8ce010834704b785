//! The presence feed as server-sent events (SPEC section 11): the response
//! body, and the task that fills it from the store's pages, waits on the
//! store's notice of the next event, writes a comment after each silence
//! and ends when the client leaves or the server shuts down. Which events
//! there are, and in which order, is the store's business.

use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use hyper::body::{Body, Frame};
use subscriber_store::{Backend, EventPage, PresenceEvent, Tenant};
use tokio::sync::{mpsc, watch};

use crate::wire::EventDto;

/// The comment a silent stream sends, so proxies and clients see it alive.
const KEEP_ALIVE: &[u8] = b": keep-alive\n\n";

/// The body of an event stream: chunks from its task, in order. It ends
/// (hyper then writes the final empty chunk) when the task does.
#[derive(Debug)]
pub(crate) struct EventStream {
    chunks: mpsc::Receiver<Bytes>,
}

impl Body for EventStream {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        self.get_mut()
            .chunks
            .poll_recv(cx)
            .map(|chunk| chunk.map(|bytes| Ok(Frame::data(bytes))))
    }
}

/// What a stream reads and how.
#[derive(Debug)]
pub(crate) struct Feed {
    pub store: std::sync::Arc<dyn Backend>,
    pub tenant: Tenant,
    /// The events after the start cursor, already read: a cursor the store
    /// refuses was answered before the response began.
    pub first: EventPage,
    /// The size of each page read while catching up.
    pub limit: u32,
    /// The longest silence before a comment.
    pub keep_alive: Duration,
    /// Counts open streams.
    pub metrics: Option<std::sync::Arc<crate::metrics::Metrics>>,
}

/// Starts a task that streams `feed` into the returned body until the
/// client goes away (the body is dropped) or `stop` turns true.
pub(crate) fn start(feed: Feed, stop: watch::Receiver<bool>) -> EventStream {
    // A few chunks of slack: a client that stops reading holds the task
    // at its next send, not the store.
    let (sender, chunks) = mpsc::channel(8);
    let metrics = feed.metrics.clone();
    if let Some(metrics) = &metrics {
        metrics.stream_opened();
    }
    tokio::spawn(async move {
        tokio::select! {
            () = run(feed, &sender) => {}
            () = stopped(stop) => {}
            () = sender.closed() => {}
        }
        if let Some(metrics) = &metrics {
            metrics.stream_closed();
        }
    });
    EventStream { chunks }
}

/// Resolves once the server shuts down (also when the server is gone).
async fn stopped(mut stop: watch::Receiver<bool>) {
    let _ = stop.wait_for(|stopped| *stopped).await;
}

/// Sends pages of events, and waits for more between them, until a send
/// fails (the client left) or the store fails (logged; the stream ends, and
/// the client's reconnect with `Last-Event-ID` gets the error in full).
async fn run(feed: Feed, sender: &mpsc::Sender<Bytes>) {
    let Feed {
        store,
        tenant,
        first,
        limit,
        keep_alive,
        metrics: _,
    } = feed;
    let mut page = first;
    loop {
        let cursor = page.next;
        if page.events.is_empty() {
            let notice = match store.event_after(&tenant, cursor) {
                Ok(notice) => notice,
                Err(e) => return ended(&e),
            };
            // After a silence, a comment, then a fresh look and a fresh
            // notice (a store that reopened its database after a storage
            // failure notifies through its new feed).
            if tokio::time::timeout(keep_alive, notice).await.is_err()
                && sender.send(Bytes::from_static(KEEP_ALIVE)).await.is_err()
            {
                return;
            }
        } else {
            let chunk = match frames(&page.events) {
                Ok(chunk) => chunk,
                Err(e) => return ended(&e),
            };
            if sender.send(chunk).await.is_err() {
                return;
            }
        }
        page = match store.events(&tenant, Some(cursor), limit).await {
            Ok(page) => page,
            Err(e) => return ended(&e),
        };
    }
}

fn ended(cause: &dyn std::fmt::Display) {
    tracing::warn!(%cause, "presence event stream ended by an error");
}

/// `id: <seq>\nevent: presence\ndata: <event JSON>\n\n` for each event, as
/// one chunk. The JSON is compact, so it holds no line break.
pub(crate) fn frames(events: &[PresenceEvent]) -> serde_json::Result<Bytes> {
    let mut chunk = Vec::new();
    for event in events {
        chunk.extend_from_slice(format!("id: {}\nevent: presence\ndata: ", event.seq).as_bytes());
        serde_json::to_writer(&mut chunk, &EventDto::new(event))?;
        chunk.extend_from_slice(b"\n\n");
    }
    Ok(Bytes::from(chunk))
}

#[cfg(test)]
mod tests {
    use super::*;
    use subscriber_store::{EventCause, Timestamp, Version};

    #[test]
    fn each_event_is_one_frame_with_its_seq_as_id() {
        let event = |seq, cause| PresenceEvent {
            seq,
            subscriber_id: "a\nb".into(),
            is_online: false,
            last_online_at: None,
            version: Version(3),
            at: Timestamp::from_millis(1_795_687_200_000),
            cause,
        };
        let chunk = frames(&[event(7, EventCause::Write), event(9, EventCause::Deleted)])
            .expect("serialises");
        let text = std::str::from_utf8(&chunk).expect("utf-8");
        assert_eq!(
            text,
            "id: 7\nevent: presence\ndata: {\"seq\":\"7\",\"subscriberId\":\"a\\nb\",\"isOnline\":false,\"lastOnlineAt\":null,\"__v\":3,\"at\":\"2026-11-26T10:00:00.000Z\",\"cause\":\"write\"}\n\n\
             id: 9\nevent: presence\ndata: {\"seq\":\"9\",\"subscriberId\":\"a\\nb\",\"isOnline\":false,\"lastOnlineAt\":null,\"__v\":3,\"at\":\"2026-11-26T10:00:00.000Z\",\"cause\":\"deleted\"}\n\n"
        );
    }
}
