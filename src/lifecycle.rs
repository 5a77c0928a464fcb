//! The life of one event stream: the [`Disconnect`] handle, and what is reported when it closes.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::event::as_str;

/// A request extension that tells the inner service when its response is over, so the producer
/// can stop its work. Every request through the layer carries one.
///
/// It resolves once the response body is dropped: the client left, or the stream ended. Cloning
/// is cheap.
///
/// ```
/// use axum::{body::Body, Extension};
/// use tower_sse::Disconnect;
///
/// async fn ticks(Extension(disconnect): Extension<Disconnect>) -> Body {
///     let (tx, rx) = tokio::sync::mpsc::channel::<Result<String, std::io::Error>>(16);
///     tokio::spawn(async move {
///         for n in 0u64.. {
///             tokio::select! {
///                 _ = disconnect.disconnected() => break, // the client left: stop working
///                 sent = tx.send(Ok(format!("tick {n}"))) => if sent.is_err() { break },
///             }
///         }
///     });
///     Body::from_stream(tokio_stream_from(rx))
/// }
/// # fn tokio_stream_from<T: Send + 'static>(mut rx: tokio::sync::mpsc::Receiver<T>)
/// #     -> impl futures_util::Stream<Item = T> + Send + 'static {
/// #     futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx))
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct Disconnect {
    token: CancellationToken,
}

impl Disconnect {
    pub(crate) fn new(token: CancellationToken) -> Self {
        Self { token }
    }

    /// Waits until the event stream is over.
    pub fn disconnected(&self) -> impl Future<Output = ()> + Send + '_ {
        self.token.cancelled()
    }

    /// Waits until the event stream is over, owning the handle (for `'static` tasks).
    pub fn into_disconnected(self) -> impl Future<Output = ()> + Send + 'static {
        self.token.cancelled_owned()
    }

    /// Whether the event stream is already over.
    pub fn is_disconnected(&self) -> bool {
        self.token.is_cancelled()
    }
}

/// Why an event stream closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum CloseReason {
    /// The response body was dropped before the stream ended: the client went away.
    ClientGone,
}

/// What [`SseLayer::on_disconnect`](crate::SseLayer::on_disconnect) is told about a stream that
/// closed.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct CloseInfo {
    /// Why the stream closed.
    pub reason: CloseReason,
    /// How long the stream was open.
    pub duration: Duration,
    /// Events handed to the connection, a final `error` event and id-only blocks of an inner
    /// event stream included (heartbeats and the retry hint not counted).
    pub events: u64,
    /// Bytes handed to the connection, all included.
    pub bytes: u64,
    /// The last `id` sent, if any.
    pub last_event_id: Option<String>,
}

/// A callback told of closed streams.
pub(crate) type OnClose = Arc<dyn Fn(&CloseInfo) + Send + Sync>;

/// Counts what a stream sends and reports a disconnect when dropped before the stream ended.
pub(crate) struct Tracker {
    opened: Instant,
    events: u64,
    bytes: u64,
    last_event_id: Option<Bytes>,
    /// The connection started reading the body (a HEAD response's body never is).
    polled: bool,
    ended: bool,
    on_disconnect: Option<OnClose>,
}

impl Tracker {
    pub(crate) fn new(on_disconnect: Option<OnClose>) -> Self {
        Self {
            opened: Instant::now(),
            events: 0,
            bytes: 0,
            last_event_id: None,
            polled: false,
            ended: false,
            on_disconnect,
        }
    }

    pub(crate) fn event_sent(&mut self, id: Option<Bytes>) {
        self.events += 1;
        if id.is_some() {
            self.last_event_id = id;
        }
    }

    pub(crate) fn polled(&mut self) {
        self.polled = true;
    }

    pub(crate) fn bytes_sent(&mut self, len: usize) {
        self.bytes += len as u64;
    }

    /// The stream reached its end: dropping it is no longer a disconnect.
    pub(crate) fn ended(&mut self) {
        self.ended = true;
    }
}

impl Drop for Tracker {
    fn drop(&mut self) {
        if self.ended || !self.polled {
            return;
        }
        if let Some(on_disconnect) = &self.on_disconnect {
            on_disconnect(&CloseInfo {
                reason: CloseReason::ClientGone,
                duration: self.opened.elapsed(),
                events: self.events,
                bytes: self.bytes,
                last_event_id: self
                    .last_event_id
                    .as_deref()
                    .map(|id| as_str(id).to_owned()),
            });
        }
    }
}
