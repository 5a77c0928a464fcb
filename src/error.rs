//! [`StreamError`]: why an event stream ended early.

use std::error::Error;
use std::fmt;

use crate::{Event, EventError};

/// A boxed error, as the inner body's error is carried.
pub type BoxError = Box<dyn Error + Send + Sync>;

/// Why an event stream stopped before the inner body ended.
///
/// The stream then ends cleanly after a final event chosen by
/// [`SseLayer::map_error`](crate::SseLayer::map_error) (by default [`StreamError::to_event`]),
/// never with a torn connection.
#[derive(Debug)]
#[non_exhaustive]
pub enum StreamError {
    /// The inner body returned an error.
    Body(BoxError),
    /// A message was longer than the configured `max_message_size`.
    TooLarge {
        /// The configured limit, in bytes.
        limit: usize,
    },
    /// The message mapper returned an error.
    Event(EventError),
    /// The inner body broke the rules of its framing, as the framing's decoder found. Under
    /// `GrpcLayer` (feature `grpc`) this is a `grpc::CallError`: the call ended with a
    /// status other than OK (or none), or a message was compressed.
    Decode(BoxError),
}

impl StreamError {
    /// The default final event: `event: error` with a short description that reveals nothing of
    /// the inner error's text (which may hold internal details).
    ///
    /// ```
    /// use tower_sse::StreamError;
    ///
    /// let event = StreamError::TooLarge { limit: 16 }.to_event();
    /// assert_eq!(event.encode(), "event: error\ndata: message too large\n\n");
    /// ```
    pub fn to_event(&self) -> Event {
        let data = match self {
            Self::Body(_) => "stream failed",
            Self::TooLarge { .. } => "message too large",
            Self::Event(_) => "invalid event",
            Self::Decode(_) => "stream failed",
        };
        Event::error().data(data)
    }
}

impl fmt::Display for StreamError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Body(_) => f.write_str("the inner body failed"),
            Self::TooLarge { limit } => write!(f, "a message exceeded the limit of {limit} bytes"),
            Self::Event(_) => f.write_str("a message could not be mapped to an event"),
            Self::Decode(_) => f.write_str("the inner body broke its framing"),
        }
    }
}

impl Error for StreamError {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        match self {
            Self::Body(err) => Some(err.as_ref()),
            Self::TooLarge { .. } => None,
            Self::Decode(err) => Some(err.as_ref()),
            Self::Event(err) => Some(err),
        }
    }
}

/// An error and its sources, joined by `: `, for logs.
pub(crate) struct Chain<'a>(pub(crate) &'a (dyn Error + 'static));

impl fmt::Display for Chain<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)?;
        let mut source = self.0.source();
        while let Some(error) = source {
            write!(f, ": {error}")?;
            source = error.source();
        }
        Ok(())
    }
}
