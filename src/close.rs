//! Why an event stream closed, and what is reported when it does.

use std::sync::Arc;
use std::time::Duration;

/// Why an event stream closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum CloseReason {
    /// The inner body ended: every message was sent.
    Completed,
    /// The response body was dropped before the stream ended: the client went away, or its
    /// connection failed (reset, or aborted by the kernel's TCP user timeout).
    ClientGone,
    /// Events were waiting but the connection took nothing for the
    /// [write deadline](crate::SseLayer::write_deadline): the client stopped reading, or its
    /// packets no longer arrive.
    Stalled,
    /// The inner body failed, or a message could not be sent (too large, refused by the
    /// mapper): the stream ended with an `error` event.
    InnerError,
    /// The layer's [shutdown signal](crate::SseLayer::graceful_shutdown) ended the stream.
    Shutdown,
    /// The stream reached its [maximum age](crate::SseLayer::max_age).
    MaxAge,
    /// The client fell behind what its source would queue for it (a hub subscriber whose queue
    /// filled): the stream ended after whole events, and the client catches up from history
    /// when it reconnects with its `Last-Event-ID`.
    Lagged,
}

impl CloseReason {
    /// Whether the client's side ended the stream ([`ClientGone`](Self::ClientGone) or
    /// [`Stalled`](Self::Stalled)), as opposed to the server's.
    pub fn is_disconnect(self) -> bool {
        matches!(self, Self::ClientGone | Self::Stalled)
    }

    /// The reason in `snake_case` (`client_gone`), as the `reason` label of the metrics.
    ///
    /// ```
    /// assert_eq!(tower_sse::CloseReason::MaxAge.as_str(), "max_age");
    /// ```
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Completed => "completed",
            Self::ClientGone => "client_gone",
            Self::Stalled => "stalled",
            Self::InnerError => "inner_error",
            Self::Shutdown => "shutdown",
            Self::MaxAge => "max_age",
            Self::Lagged => "lagged",
        }
    }
}

/// What [`SseLayer::on_close`](crate::SseLayer::on_close) and
/// [`SseLayer::on_disconnect`](crate::SseLayer::on_disconnect) are told about a stream that
/// closed.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct CloseInfo {
    /// Why the stream closed.
    pub reason: CloseReason,
    /// How long the stream was open.
    pub duration: Duration,
    /// Events handed to the connection, a final `error` or shutdown event and id-only blocks of
    /// an inner event stream included (heartbeats and the retry hint not counted).
    pub events: u64,
    /// Bytes handed to the connection, all included.
    pub bytes: u64,
    /// The last `id` sent, if any.
    pub last_event_id: Option<String>,
}

/// A callback told of closed streams.
pub(crate) type OnClose = Arc<dyn Fn(&CloseInfo) + Send + Sync>;
