//! Sources of your own: events from anywhere (a channel, a database's change feed, a message
//! queue), served through the layer like any other stream.
//!
//! A [`Source`] writes the events it has ready into an [`Output`] whenever the engine asks, and
//! never waits. [`response`] turns it into an event stream response: behind
//! [`SseLayer`](crate::SseLayer) it is served with the layer's settings (retry hint,
//! heartbeats, shutdown, maximum age, write deadline, limits, `on_close`, metrics), whatever the
//! request's `Accept`, and without being decoded again; on its own, with the defaults. The hub's
//! subscriptions are such sources.
//!
//! A source over a `tokio::sync::mpsc` receiver:
//!
//! ```
//! use std::pin::Pin;
//! use std::task::{Context, Poll};
//!
//! use tokio::sync::mpsc;
//! use tower_sse::source::{self, Output, Source};
//! use tower_sse::{Event, StreamError};
//!
//! struct Channel(mpsc::Receiver<Event>);
//!
//! impl Source for Channel {
//!     fn poll_events(
//!         mut self: Pin<&mut Self>,
//!         cx: &mut Context<'_>,
//!         out: &mut Output<'_>,
//!     ) -> Poll<Result<(), StreamError>> {
//!         // Everything ready, coalesced into one frame; the engine comes back for more.
//!         while !out.is_full() {
//!             match self.0.poll_recv(cx) {
//!                 Poll::Ready(Some(event)) => out.event(event),
//!                 Poll::Ready(None) => return Poll::Ready(Ok(())), // the senders are gone
//!                 Poll::Pending => return Poll::Pending,
//!             }
//!         }
//!         Poll::Pending
//!     }
//! }
//!
//! // In a handler behind `SseLayer`:
//! let (tx, rx) = mpsc::channel(64);
//! let response = source::response(Channel(rx));
//! assert_eq!(response.headers()["content-type"], "text/event-stream");
//! # drop(tx);
//! ```
//!
//! When the client leaves, the stream (and the source with it) is dropped: a channel's
//! senders then see it closed.

use bytes::{Bytes, BytesMut};
use http_body_util::Empty;

use crate::config::Config;
use crate::engine::{BoxSource, Handoff, HandoffSlot};
use crate::headers::set_event_stream_headers;
use crate::{Event, SseBody};

pub use crate::engine::{Output, Source};

/// An event encoded once, to be written into many streams without a copy
/// ([`Output::encoded`]): a hub encodes each published event once for every subscriber. It can
/// only be made by this crate's encoder, so its lines are always valid fields; it ends with
/// the blank line that dispatches it when it has data (see [`Event::encode`]).
///
/// ```
/// use tower_sse::source::EncodedEvent;
/// use tower_sse::Event;
///
/// let event = EncodedEvent::new(&Event::default().id("7")?.data("hello"));
/// assert_eq!(&event.as_bytes()[..], b"data: hello\nid: 7\n\n");
/// assert_eq!(event.id(), Some("7"));
/// # Ok::<(), tower_sse::EventError>(())
/// ```
#[derive(Debug, Clone)]
pub struct EncodedEvent {
    bytes: Bytes,
    id: Option<Bytes>,
    dispatches: bool,
}

impl EncodedEvent {
    /// Encodes `event`.
    pub fn new(event: &Event) -> Self {
        let mut bytes = BytesMut::with_capacity(event.encoded_len());
        event.encode_into(&mut bytes);
        Self {
            bytes: bytes.freeze(),
            id: event
                .get_id()
                .map(|id| Bytes::copy_from_slice(id.as_bytes())),
            dispatches: event.get_data().is_some(),
        }
    }

    /// Bytes this crate encoded: one event whole (ending with its blank line when it has
    /// data), `id` its id as written, and whether a client dispatches it.
    #[cfg_attr(not(feature = "hub"), allow(dead_code))] // the hub's rings, and tests
    pub(crate) fn from_encoded(bytes: Bytes, id: Option<Bytes>, dispatches: bool) -> Self {
        Self {
            bytes,
            id,
            dispatches,
        }
    }

    /// The event on the wire.
    pub fn as_bytes(&self) -> &Bytes {
        &self.bytes
    }

    /// Its id, if it has one.
    pub fn id(&self) -> Option<&str> {
        self.id.as_deref().map(crate::event::as_str)
    }

    pub(crate) fn id_bytes(&self) -> Option<Bytes> {
        self.id.clone()
    }

    /// Whether a client dispatches it (it has data).
    pub fn dispatches(&self) -> bool {
        self.dispatches
    }
}

impl From<Event> for EncodedEvent {
    fn from(event: Event) -> Self {
        Self::new(&event)
    }
}

/// `source` as an event stream response (`200`, `text/event-stream`): behind
/// [`SseLayer`](crate::SseLayer) it is served by the layer's engine with the layer's settings;
/// on its own, with the defaults of [`SseLayer::new`](crate::SseLayer::new).
pub fn response<S>(source: S) -> http::Response<SseBody<Empty<Bytes>>>
where
    S: Source + Send + 'static,
{
    boxed_response(Box::pin(source))
}

/// [`response`] for a source already boxed, with a body type of the caller's (it holds the
/// source, and never the other body).
pub(crate) fn boxed_response<B>(source: BoxSource) -> http::Response<SseBody<B>> {
    let slot = HandoffSlot::new(source);
    let body = SseBody::handoff(
        Handoff::Waiting(slot.clone()),
        Config::shared_default(),
        None,
        Default::default(),
    );
    let mut response = http::Response::new(body);
    set_event_stream_headers(response.headers_mut(), false);
    response.extensions_mut().insert(slot);
    response
}
