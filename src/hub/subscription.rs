//! [`Subscription`]: one client's stream of a hub's topics, as a response.

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body_util::Empty;

use super::memory::{Drained, Entry, Queue};
use super::{GapReason, Hub};
use crate::config::Config;
use crate::engine::{BoxSource, Handoff, HandoffSlot, Output, Source};
use crate::headers::set_event_stream_headers;
use crate::{CloseReason, Event, SseBody, StreamError};

/// How a subscription began, for the application to log or count.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Resume {
    /// No `Last-Event-ID`: live events from now on.
    Fresh,
    /// The client's position was known and covered: the events it missed (`replayed` of them),
    /// then live ones.
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

/// A client's subscription to one or more topics of a [`Hub`]: an event stream response.
///
/// Behind [`SseLayer`](crate::SseLayer) it is served by the layer's engine with the layer's
/// settings (retry hint, heartbeats, shutdown, maximum age, write deadline, `on_close`),
/// without being decoded again; on its own it is still a valid `text/event-stream` body, with
/// the default settings. Turn it into a response with [`into_http`](Self::into_http), or
/// return it from an axum handler (feature `axum`).
pub struct Subscription {
    source: SubscriberSource,
    resume: Resume,
}

impl Subscription {
    pub(super) fn new(
        hub: Hub,
        topics: Vec<Arc<str>>,
        queue: Arc<Queue>,
        replay: VecDeque<Entry>,
        gap: Option<Event>,
        resume: Resume,
    ) -> Self {
        crate::metrics::hub_subscribers(1.0);
        Self {
            source: SubscriberSource {
                hub,
                topics,
                queue,
                gap,
                replay,
            },
            resume,
        }
    }

    /// How the subscription began: fresh, resumed, or after a gap.
    pub fn resume(&self) -> Resume {
        self.resume
    }

    /// The subscription as an event stream response.
    pub fn into_http(self) -> http::Response<SseBody<Empty<Bytes>>> {
        let source: BoxSource = Box::pin(self.source);
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
}

impl std::fmt::Debug for Subscription {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Subscription")
            .field("topics", &self.source.topics)
            .field("resume", &self.resume)
            .finish_non_exhaustive()
    }
}

impl From<Subscription> for http::Response<SseBody<Empty<Bytes>>> {
    fn from(subscription: Subscription) -> Self {
        subscription.into_http()
    }
}

/// The source of a subscriber's stream: the gap event, the replay, then its live queue. It
/// leaves its topics when dropped.
struct SubscriberSource {
    hub: Hub,
    topics: Vec<Arc<str>>,
    queue: Arc<Queue>,
    gap: Option<Event>,
    replay: VecDeque<Entry>,
}

impl Source for SubscriberSource {
    fn poll_events(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        out: &mut Output<'_>,
    ) -> Poll<Result<(), StreamError>> {
        let this = self.get_mut();
        if let Some(gap) = this.gap.take() {
            out.event(gap);
        }
        while !out.is_full() {
            let Some(entry) = this.replay.pop_front() else {
                break;
            };
            out.encoded(&entry.encoded, Some(entry.id));
        }
        loop {
            if out.is_full() {
                return Poll::Pending;
            }
            match this.queue.drain(out, cx.waker()) {
                Drained::Some => {}
                Drained::Empty => return Poll::Pending,
                Drained::Lagged => {
                    out.closing(CloseReason::Lagged);
                    return Poll::Ready(Ok(()));
                }
                Drained::Closed => return Poll::Ready(Ok(())),
            }
        }
    }
}

impl Drop for SubscriberSource {
    fn drop(&mut self) {
        self.hub.engine().leave(&self.topics, &self.queue);
        crate::metrics::hub_subscribers(-1.0);
    }
}
