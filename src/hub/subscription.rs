//! [`Subscription`]: one client's stream of a hub's topics, as a response.

use std::sync::Arc;

use bytes::Bytes;
use http_body_util::Empty;

use super::GapReason;
use crate::engine::BoxSource;
use crate::SseBody;

/// How a subscription began, for the application to log or count.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Resume {
    /// No `Last-Event-ID`: live events from now on.
    Fresh,
    /// The client's position was known and covered (or it asked for the
    /// [earliest](super::Subscribe::earliest) events): the events it missed (`replayed` of
    /// them), then live ones.
    Resumed {
        /// How many retained events were sent first.
        replayed: usize,
    },
    /// The client's position could not be resumed exactly: a gap event, then what is retained
    /// (`replayed` events), then live ones.
    Gap {
        /// Why.
        reason: GapReason,
        /// How many retained events were sent after the gap event.
        replayed: usize,
    },
}

/// A client's subscription to one or more topics of a [`Hub`](super::Hub): an event stream
/// response.
///
/// Behind [`SseLayer`](crate::SseLayer) it is served by the layer's engine with the layer's
/// settings (retry hint, heartbeats, shutdown, maximum age, write deadline, `on_close`),
/// without being decoded again; on its own it is still a valid `text/event-stream` body, with
/// the default settings. Turn it into a response with [`into_http`](Self::into_http), or
/// return it from an axum handler (feature `axum`).
pub struct Subscription {
    source: BoxSource,
    topics: Vec<Arc<str>>,
    resume: Resume,
}

impl Subscription {
    pub(super) fn new(source: BoxSource, topics: Vec<Arc<str>>, resume: Resume) -> Self {
        Self {
            source,
            topics,
            resume,
        }
    }

    /// How the subscription began: fresh, resumed, or after a gap.
    pub fn resume(&self) -> Resume {
        self.resume
    }

    /// The subscription as an event stream response.
    pub fn into_http(self) -> http::Response<SseBody<Empty<Bytes>>> {
        crate::source::boxed_response(self.source)
    }
}

/// A subscription is a [`Source`](crate::source::Source): wrap it to add to its stream (end it
/// at a deadline, say), and serve it with [`source::response`](crate::source::response).
impl crate::source::Source for Subscription {
    fn poll_events(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        out: &mut crate::source::Output<'_>,
    ) -> std::task::Poll<Result<(), crate::StreamError>> {
        self.get_mut().source.as_mut().poll_events(cx, out)
    }
}

impl std::fmt::Debug for Subscription {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Subscription")
            .field("topics", &self.topics)
            .field("resume", &self.resume)
            .finish_non_exhaustive()
    }
}

impl From<Subscription> for http::Response<SseBody<Empty<Bytes>>> {
    fn from(subscription: Subscription) -> Self {
        subscription.into_http()
    }
}

impl Resume {
    /// The outcome of a subscribe: a gap if any, else resumed when the client gave an id.
    pub(super) fn of(gap: Option<GapReason>, had_id: bool, replayed: usize) -> Self {
        match gap {
            Some(reason) => Self::Gap { reason, replayed },
            None if had_id => Self::Resumed { replayed },
            None => Self::Fresh,
        }
    }
}

/// Counts one hub subscriber in the metrics while it lives: each engine's subscriber source
/// holds one.
pub(super) struct Counted(());

impl Counted {
    pub(super) fn new() -> Self {
        crate::metrics::hub_subscribers(1.0);
        Self(())
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        crate::metrics::hub_subscribers(-1.0);
    }
}
