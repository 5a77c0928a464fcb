//! [`Message`]: one unit of the inner body, before it becomes an [`Event`].

use std::borrow::Cow;
use std::time::Duration;

use bytes::Bytes;

use crate::event::{as_str, utf8_lossy, Event};
use crate::Framing;

/// One message cut from the inner response body by its [`Framing`]: a body frame, an NDJSON
/// line, or an event of an inner `text/event-stream`.
///
/// The layer turns each message into an [`Event`] with the mapper given to
/// [`SseLayer::map_message`](crate::SseLayer::map_message), or with [`Message::into_event`] by
/// default.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    data: Bytes,
    framing: Framing,
    // Both come from the WHATWG parser: valid UTF-8, no line break, and no NUL in the id.
    event: Option<Bytes>,
    id: Option<Bytes>,
    retry: Option<Duration>,
}

impl Message {
    /// A message holding `data`, as the [`Framing::Frames`] framing makes it.
    pub fn new(data: impl Into<Bytes>) -> Self {
        Self::with_framing(data.into(), Framing::Frames)
    }

    pub(crate) fn with_framing(data: Bytes, framing: Framing) -> Self {
        Self {
            data,
            framing,
            event: None,
            id: None,
            retry: None,
        }
    }

    /// Sets the fields an inner event stream gave the message. The values come from the
    /// WHATWG parser, so they hold no line break and the id holds no NUL.
    pub(crate) fn with_fields(
        mut self,
        event: Option<Bytes>,
        id: Option<Bytes>,
        retry: Option<Duration>,
    ) -> Self {
        self.event = event;
        self.id = id;
        self.retry = retry;
        self
    }

    /// The raw bytes of the message (for an inner event stream: the event's data).
    pub fn data(&self) -> &Bytes {
        &self.data
    }

    /// The data as text, invalid UTF-8 replaced by U+FFFD.
    pub fn text(&self) -> Cow<'_, str> {
        String::from_utf8_lossy(&self.data)
    }

    /// Takes the raw bytes.
    pub fn into_data(self) -> Bytes {
        self.data
    }

    /// How this message was cut from the inner body.
    pub fn framing(&self) -> Framing {
        self.framing
    }

    /// The `event` name the inner event stream gave (none for other framings).
    pub fn event(&self) -> Option<&str> {
        self.event.as_deref().map(as_str)
    }

    /// The event's type as `EventSource` dispatches it: the `event` name, or `message` when the
    /// name is absent or empty.
    ///
    /// ```
    /// assert_eq!(tower_sse::Message::new("x").event_type(), "message");
    /// ```
    pub fn event_type(&self) -> &str {
        match self.event() {
            None | Some("") => "message",
            Some(name) => name,
        }
    }

    /// The `id` set in this event's block of an inner event stream (none for other framings, and
    /// none when the block set no id: clients keep the last id they saw, so nothing is lost).
    pub fn id(&self) -> Option<&str> {
        self.id.as_deref().map(as_str)
    }

    /// The `retry` an inner event stream sent with this event.
    pub fn retry(&self) -> Option<Duration> {
        self.retry
    }

    /// The default mapping: the data as text (invalid UTF-8 becomes U+FFFD, as a client would
    /// decode it) and, for an inner event stream, its event name, id and retry. (Under
    /// `GrpcLayer`, the default is the standard base64 of a message's protobuf bytes instead.)
    ///
    /// ```
    /// use tower_sse::Message;
    ///
    /// let event = Message::new("hello").into_event();
    /// assert_eq!(event.encode(), "data: hello\n\n");
    /// ```
    pub fn into_event(self) -> Event {
        Event::from_parsed(self.event, Some(utf8_lossy(self.data)), self.id, self.retry)
    }
}

impl From<Message> for Event {
    fn from(message: Message) -> Self {
        message.into_event()
    }
}
