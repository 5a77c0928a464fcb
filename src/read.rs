//! Reading event streams: the crate's WHATWG parser over any response body, for tests of your
//! own endpoints, for clients and for gateways.
//!
//! [`EventReader`] reads a `text/event-stream` body as a browser's `EventSource` does: it yields
//! every event the stream dispatches (a block with data), keeps the *last event ID* and the
//! reconnection delay across events (id-only and retry-only blocks included), drops a final
//! block the body did not finish, and ignores comments and unknown fields. It holds at most
//! `max_message_size` bytes of an unfinished event, whatever the peer sends.
//!
//! ```
//! use axum::{body::Body, routing::get, Router};
//! use futures_util::stream;
//! use tower::ServiceExt;
//! use tower_sse::{read::EventReader, SseLayer};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! async fn ticks() -> Body {
//!     let frames = ["one", "two"].map(|text| Ok::<_, std::io::Error>(text));
//!     Body::from_stream(stream::iter(frames))
//! }
//! let app = Router::new().route("/ticks", get(ticks)).layer(SseLayer::new());
//!
//! let request = http::Request::get("/ticks")
//!     .header("accept", "text/event-stream")
//!     .body(Body::empty())?;
//! let response = app.oneshot(request).await?;
//! assert_eq!(response.headers()["content-type"], "text/event-stream");
//!
//! let mut events = EventReader::new(response.into_body());
//! let mut seen = Vec::new();
//! while let Some(message) = events.next_event().await {
//!     seen.push(message?.text().into_owned());
//! }
//! assert_eq!(seen, ["one", "two"]);
//! assert_eq!(events.retry(), Some(tower_sse::DEFAULT_RETRY));
//! # Ok(())
//! # }
//! ```

use std::collections::VecDeque;
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use bytes::Buf;
use http_body::Body;
use pin_project_lite::pin_project;

use crate::decode::{Decoder, Item};
use crate::error::BoxError;
use crate::{Framing, Message, StreamError, DEFAULT_MAX_MESSAGE_SIZE};

pin_project! {
    /// Reads the events of a `text/event-stream` body, as `EventSource` interprets it.
    ///
    /// Each [`Message`] is one dispatched event: its [`event_type`](Message::event_type), its
    /// [`data`](Message::data), and the `id` and `retry` its own block set.
    /// The client's state across events is on the reader: [`last_event_id`](Self::last_event_id)
    /// (what a reconnect sends as `Last-Event-ID`) and [`retry`](Self::retry).
    ///
    /// A failing body ends the reader with [`StreamError::Body`]; an event longer than the
    /// limit with [`StreamError::TooLarge`]. After an error, the reader yields nothing more.
    /// It is also a `futures_core::Stream` of the same items.
    pub struct EventReader<B> {
        #[pin]
        body: B,
        decoder: Decoder,
        // What the last chunk decoded to, handed out one event at a time so that the state
        // (`last_event_id`, `retry`) is the one of the event just returned.
        ready: VecDeque<Item>,
        last_event_id: String,
        retry: Option<Duration>,
        // The error that ended the body, returned once the events before it are out.
        failed: Option<StreamError>,
        ended: bool,
    }
}

impl<B> EventReader<B> {
    /// Reads `body`, holding at most [`DEFAULT_MAX_MESSAGE_SIZE`] of an unfinished event.
    pub fn new(body: B) -> Self {
        Self::with_max_message_size(body, DEFAULT_MAX_MESSAGE_SIZE)
    }

    /// Reads `body`, holding at most `limit` bytes of an unfinished event: a longer one ends
    /// the reader with [`StreamError::TooLarge`].
    pub fn with_max_message_size(body: B, limit: usize) -> Self {
        Self {
            body,
            decoder: Decoder::new(Framing::EventStream, limit, None),
            ready: VecDeque::new(),
            last_event_id: String::new(),
            retry: None,
            failed: None,
            ended: false,
        }
    }

    /// The client's last event ID after the events read so far: what a reconnect sends as
    /// `Last-Event-ID` (empty: none). An `id` field sets it, an empty one clears it, and it
    /// carries over events that set none.
    pub fn last_event_id(&self) -> &str {
        &self.last_event_id
    }

    /// The reconnection delay the stream asked for so far with `retry:`, if any. A `retry`
    /// line counts as soon as it is read, as a client applies it, also in a block not yet
    /// dispatched (the layer's own retry hint joins the first event's block).
    pub fn retry(&self) -> Option<Duration> {
        // A retry of a block after events not yet handed out waits for them.
        let pending = self.ready.is_empty().then(|| self.decoder.pending_retry());
        pending.flatten().or(self.retry)
    }
}

impl<B> EventReader<B>
where
    B: Body,
    B::Error: Into<BoxError>,
{
    /// The next event, `None` at the end of the body (or after an error).
    pub async fn next_event(&mut self) -> Option<Result<Message, StreamError>>
    where
        B: Unpin,
    {
        std::future::poll_fn(|cx| Pin::new(&mut *self).poll_next_event(cx)).await
    }

    /// Polls for the next event: the poll form of [`next_event`](Self::next_event).
    pub fn poll_next_event(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Message, StreamError>>> {
        let mut this = self.project();
        loop {
            while let Some(item) = this.ready.pop_front() {
                let (id, retry, message) = match item {
                    Item::Message(message) => {
                        let id = message.id().map(str::to_owned);
                        (id, message.retry(), Some(message))
                    }
                    Item::Control(event) => {
                        (event.get_id().map(str::to_owned), event.get_retry(), None)
                    }
                };
                if let Some(id) = id {
                    *this.last_event_id = id;
                }
                if retry.is_some() {
                    *this.retry = retry;
                }
                if let Some(message) = message {
                    return Poll::Ready(Some(Ok(message)));
                }
            }
            if let Some(error) = this.failed.take() {
                return Poll::Ready(Some(Err(error)));
            }
            if *this.ended {
                return Poll::Ready(None);
            }
            let ready = &mut *this.ready;
            let mut emit = |item| {
                ready.push_back(item);
                Ok(())
            };
            let decoded = match ready!(this.body.as_mut().poll_frame(cx)) {
                Some(Ok(frame)) => match frame.into_data() {
                    Ok(mut data) => {
                        let chunk = data.copy_to_bytes(data.remaining());
                        this.decoder.decode(chunk, &mut emit)
                    }
                    Err(_trailers) => Ok(()),
                },
                Some(Err(error)) => Err(StreamError::Body(error.into())),
                None => {
                    *this.ended = true;
                    this.decoder.finish(&mut emit)
                }
            };
            if let Err(error) = decoded {
                // The events complete before the error come first, then the error, then the end.
                *this.ended = true;
                *this.failed = Some(error);
            }
        }
    }
}

impl<B> futures_core::Stream for EventReader<B>
where
    B: Body,
    B::Error: Into<BoxError>,
{
    type Item = Result<Message, StreamError>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.poll_next_event(cx)
    }
}

impl<B> std::fmt::Debug for EventReader<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventReader")
            .field("last_event_id", &self.last_event_id)
            .field("retry", &self.retry)
            .field("ended", &self.ended)
            .finish_non_exhaustive()
    }
}
