//! [`Event`]: one Server-Sent Event, and the crate's only wire encoder.

use std::fmt;
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};

/// One Server-Sent Event: optional comment, `event` name, `data`, `id` and `retry` fields.
///
/// Every byte this crate writes to a client — mapped messages, heartbeats, retry hints, error
/// events, re-framed upstream events — is encoded by [`Event::encode`], so the wire rules live in
/// one place:
///
/// - `data` is split on every CR, LF and CRLF (CRLF is one break); each piece becomes its own
///   `data: ` line, so a value can never escape its field. Empty data is still dispatched.
/// - `event` and `id` are checked when set: a line break (or a NUL in an `id`) is an
///   [`EventError`], never written.
/// - A comment containing line breaks becomes several comment lines.
/// - An event with data ends with the blank line that dispatches it. An event without data
///   dispatches nothing in a client, so it ends no block: its comment, `id` and `retry` lines
///   are written alone, and join the next event's block (a client applies `retry` as it reads
///   it, and the `id` with the next event); its `event` name, which only the blank line would
///   have discarded, is not written, so it never renames the next event. Parsers in the field
///   that dispatch any block ending in a blank line (the Python `openai` SDK) would otherwise
///   dispatch it with empty data, and fail.
///
/// ```
/// use tower_sse::Event;
///
/// let event = Event::default().event("update")?.id("7")?.data("line 1\nline 2");
/// assert_eq!(
///     event.encode(),
///     "event: update\ndata: line 1\ndata: line 2\nid: 7\n\n",
/// );
/// # Ok::<(), tower_sse::EventError>(())
/// ```
#[derive(Clone, Default, PartialEq, Eq)]
#[must_use]
pub struct Event {
    // All fields hold valid UTF-8; `event` and `id` are validated when set.
    comment: Option<Bytes>,
    event: Option<Bytes>,
    data: Option<Bytes>,
    id: Option<Bytes>,
    retry: Option<Duration>,
}

/// Why a field could not be set on an [`Event`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum EventError {
    /// An `event` name contained a CR or LF, which would end the field early.
    LineBreakInEvent,
    /// An `id` contained a CR or LF, which would end the field early.
    LineBreakInId,
    /// An `id` contained a NUL, which makes clients ignore the field.
    NulInId,
    /// The value given to [`Event::json`] could not be serialized.
    #[cfg(feature = "json")]
    Json(String),
    /// A message could not be decoded as the type a mapper asked for (a gRPC message as its
    /// protobuf type, with `grpc::decode`).
    Decode(String),
}

impl fmt::Display for EventError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::LineBreakInEvent => f.write_str("event name contains a line break"),
            Self::LineBreakInId => f.write_str("event id contains a line break"),
            Self::NulInId => f.write_str("event id contains a NUL character"),
            #[cfg(feature = "json")]
            Self::Json(reason) => write!(f, "event data could not be serialized: {reason}"),
            Self::Decode(reason) => write!(f, "the message could not be decoded: {reason}"),
        }
    }
}

impl std::error::Error for EventError {}

impl Event {
    /// An event with no fields; set them with the builder methods.
    pub fn new() -> Self {
        Self::default()
    }

    /// An event named `error`, as the stream's final event after a failure.
    pub(crate) fn error() -> Self {
        Self {
            event: Some(Bytes::from_static(b"error")),
            ..Self::default()
        }
    }

    /// Sets the `data` field. Line breaks (CR, LF, CRLF) split it over several `data:` lines,
    /// which clients join back with LF.
    pub fn data(mut self, data: impl Into<String>) -> Self {
        self.data = Some(Bytes::from(data.into()));
        self
    }

    /// Sets the `data` field from bytes; invalid UTF-8 sequences become U+FFFD, exactly what a
    /// client would decode them to. Valid UTF-8 is kept without a copy.
    ///
    /// ```
    /// use tower_sse::Event;
    ///
    /// let event = Event::default().data_utf8_lossy(b"caf\xE9".as_slice().into());
    /// assert_eq!(event.encode(), "data: caf\u{FFFD}\n\n");
    /// ```
    pub fn data_utf8_lossy(mut self, data: Bytes) -> Self {
        self.data = Some(utf8_lossy(data));
        self
    }

    /// Serializes `value` as JSON into the `data` field (compact JSON never contains a raw line
    /// break).
    #[cfg(feature = "json")]
    pub fn json<T: serde::Serialize + ?Sized>(mut self, value: &T) -> Result<Self, EventError> {
        let json = serde_json::to_vec(value).map_err(|err| EventError::Json(err.to_string()))?;
        self.data = Some(Bytes::from(json));
        Ok(self)
    }

    /// Sets the `event` field (the type a client listens for; clients use `message` when absent).
    ///
    /// Fails with [`EventError::LineBreakInEvent`] if `name` contains CR or LF.
    pub fn event(mut self, name: impl Into<String>) -> Result<Self, EventError> {
        let name = name.into();
        if memchr::memchr2(b'\r', b'\n', name.as_bytes()).is_some() {
            return Err(EventError::LineBreakInEvent);
        }
        self.event = Some(Bytes::from(name));
        Ok(self)
    }

    /// Sets the `id` field, which clients send back as `Last-Event-ID` when they reconnect.
    /// An empty id resets the client's last event id.
    ///
    /// Fails with [`EventError::LineBreakInId`] on CR or LF and [`EventError::NulInId`] on NUL.
    pub fn id(mut self, id: impl Into<String>) -> Result<Self, EventError> {
        let id = id.into();
        if memchr::memchr2(b'\r', b'\n', id.as_bytes()).is_some() {
            return Err(EventError::LineBreakInId);
        }
        if memchr::memchr(0, id.as_bytes()).is_some() {
            return Err(EventError::NulInId);
        }
        self.id = Some(Bytes::from(id));
        Ok(self)
    }

    /// Sets the `retry` field: how long a client waits before reconnecting, in whole milliseconds.
    pub fn retry(mut self, delay: Duration) -> Self {
        self.retry = Some(delay);
        self
    }

    /// Adds a comment, which clients ignore. Line breaks split it over several comment lines.
    pub fn comment(mut self, text: impl Into<String>) -> Self {
        self.comment = Some(Bytes::from(text.into()));
        self
    }

    /// The `id` field, if set.
    pub fn get_id(&self) -> Option<&str> {
        self.id.as_deref().map(as_str)
    }

    /// The `event` field, if set.
    pub fn get_event(&self) -> Option<&str> {
        self.event.as_deref().map(as_str)
    }

    /// The `data` field, if set.
    pub fn get_data(&self) -> Option<&str> {
        self.data.as_deref().map(as_str)
    }

    /// The `retry` field, if set.
    pub fn get_retry(&self) -> Option<Duration> {
        self.retry
    }

    /// The comment, if set.
    pub fn get_comment(&self) -> Option<&str> {
        self.comment.as_deref().map(as_str)
    }

    /// Encodes the event in the `text/event-stream` wire format: ending with a blank line when
    /// it has data, as lines that join the next event's block when it has none.
    ///
    /// ```
    /// use std::time::Duration;
    /// use tower_sse::Event;
    ///
    /// assert_eq!(Event::default().retry(Duration::from_secs(3)).encode(), "retry: 3000\n");
    /// assert_eq!(Event::default().comment("").encode(), ":\n");
    /// ```
    pub fn encode(&self) -> String {
        let mut buf = BytesMut::new();
        self.encode_into(&mut buf);
        // The encoder only writes the fields' UTF-8 and ASCII.
        String::from_utf8_lossy(&buf).into_owned()
    }

    /// An event from fields the WHATWG parser produced (no line breaks, no NUL in the id, valid
    /// UTF-8), which need no second check.
    pub(crate) fn from_parsed(
        event: Option<Bytes>,
        data: Option<Bytes>,
        id: Option<Bytes>,
        retry: Option<Duration>,
    ) -> Self {
        Self {
            comment: None,
            event,
            data,
            id,
            retry,
        }
    }

    /// The length of the encoded event when every field is one line (the usual event): what
    /// [`encode_into`](Self::encode_into) reserves.
    pub(crate) fn encoded_len(&self) -> usize {
        let field =
            |value: Option<&[u8]>, name: &[u8]| value.map_or(0, |v| name.len() + v.len() + 1);
        let retry = self.retry.map_or(0, |retry| {
            let millis = u64::try_from(retry.as_millis()).unwrap_or(u64::MAX);
            "retry: ".len() + itoa::Buffer::new().format(millis).len() + 1
        });
        field(self.comment.as_deref(), b": ")
            + field(self.event.as_deref(), b"event: ")
            + field(self.data.as_deref(), b"data: ")
            + field(self.id.as_deref(), b"id: ")
            + retry
            + 1
    }

    /// Takes the id out of the event (used by the body to remember the last id sent without a
    /// copy).
    pub(crate) fn take_id(&mut self) -> Option<Bytes> {
        self.id.take()
    }

    /// Appends the wire form of the event to `buf`: the allocation-free form of
    /// [`Event::encode`], for code that writes many events into one buffer.
    ///
    /// ```
    /// use bytes::BytesMut;
    /// use tower_sse::Event;
    ///
    /// let mut buf = BytesMut::new();
    /// Event::default().data("a").encode_into(&mut buf);
    /// Event::default().data("b").encode_into(&mut buf);
    /// assert_eq!(&buf[..], b"data: a\n\ndata: b\n\n");
    /// ```
    pub fn encode_into(&self, buf: &mut BytesMut) {
        let mut digits = itoa::Buffer::new();
        let retry = self
            .retry
            .map(|retry| digits.format(u64::try_from(retry.as_millis()).unwrap_or(u64::MAX)));
        // One reservation, exact when every field is one line (the usual event): a large event
        // is never copied again as the buffer grows, and a lone event's buffer is frozen without
        // spare capacity (which would cost `Bytes` another allocation).
        buf.reserve(self.encoded_len());
        if let Some(comment) = &self.comment {
            for line in Lines::new(comment) {
                if line.is_empty() {
                    buf.put_slice(b":\n");
                } else {
                    put_field(buf, b": ", line);
                }
            }
        }
        // Without data the name has no effect on a client, but joined to the next event's
        // block it would rename that event.
        if let Some(event) = self.event.as_ref().filter(|_| self.data.is_some()) {
            put_field(buf, b"event: ", event);
        }
        if let Some(data) = &self.data {
            for line in Lines::new(data) {
                put_field(buf, b"data: ", line);
            }
        }
        if let Some(id) = &self.id {
            put_field(buf, b"id: ", id);
        }
        if let Some(retry) = retry {
            put_field(buf, b"retry: ", retry.as_bytes());
        }
        if self.data.is_some() {
            buf.put_u8(b'\n');
        }
    }
}

impl fmt::Debug for Event {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fn text(field: &Option<Bytes>) -> Option<&str> {
            field.as_deref().map(as_str)
        }
        f.debug_struct("Event")
            .field("comment", &text(&self.comment))
            .field("event", &text(&self.event))
            .field("data", &text(&self.data))
            .field("id", &text(&self.id))
            .field("retry", &self.retry)
            .finish()
    }
}

fn put_field(buf: &mut BytesMut, name: &[u8], value: &[u8]) {
    buf.reserve(name.len() + value.len() + 1);
    buf.put_slice(name);
    buf.put_slice(value);
    buf.put_u8(b'\n');
}

/// Converts bytes to valid UTF-8, keeping them as they are (no copy) when they already are.
pub(crate) fn utf8_lossy(bytes: Bytes) -> Bytes {
    // `from_utf8` is the fast check; the lossy conversion walks the bytes far more slowly.
    if std::str::from_utf8(&bytes).is_ok() {
        return bytes;
    }
    Bytes::from(String::from_utf8_lossy(&bytes).into_owned())
}

pub(crate) fn as_str(bytes: &[u8]) -> &str {
    // Every field is built from a `String` or through `utf8_lossy`.
    std::str::from_utf8(bytes).unwrap_or_default()
}

/// The lines of a value split on CR, LF and CRLF (CRLF is one break). A trailing break yields a
/// trailing empty line, and an empty value is one empty line.
pub(crate) struct Lines<'a> {
    rest: Option<&'a [u8]>,
}

impl<'a> Lines<'a> {
    pub(crate) fn new(value: &'a [u8]) -> Self {
        Self { rest: Some(value) }
    }
}

impl<'a> Iterator for Lines<'a> {
    type Item = &'a [u8];

    fn next(&mut self) -> Option<&'a [u8]> {
        let rest = self.rest?;
        match memchr::memchr2(b'\r', b'\n', rest) {
            None => {
                self.rest = None;
                Some(rest)
            }
            Some(at) => {
                let skip = if rest[at] == b'\r' && rest.get(at + 1) == Some(&b'\n') {
                    2
                } else {
                    1
                };
                self.rest = Some(&rest[at + skip..]);
                Some(&rest[..at])
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(value: &str) -> Vec<&str> {
        Lines::new(value.as_bytes()).map(as_str).collect()
    }

    #[test]
    fn lines_split_on_cr_lf_and_crlf_once() {
        assert_eq!(lines(""), [""]);
        assert_eq!(lines("a"), ["a"]);
        assert_eq!(lines("a\r\nb\rc\nd"), ["a", "b", "c", "d"]);
        assert_eq!(lines("a\n"), ["a", ""]);
        assert_eq!(lines("\r\r\n\n"), ["", "", "", ""]);
        assert_eq!(lines("\n\r"), ["", "", ""]);
    }

    #[test]
    fn retry_is_written_in_milliseconds() {
        let event = Event::default().retry(Duration::from_millis(1500));
        assert_eq!(event.encode(), "retry: 1500\n");
        let event = Event::default().retry(Duration::ZERO);
        assert_eq!(event.encode(), "retry: 0\n");
        let event = Event::default().retry(Duration::MAX);
        assert_eq!(event.encode(), format!("retry: {}\n", u64::MAX));
    }

    #[test]
    fn comment_lines_never_become_fields() {
        let event = Event::default().comment("a\ndata: x\r\n");
        assert_eq!(event.encode(), ": a\n: data: x\n:\n");
    }

    #[test]
    fn only_an_event_with_data_ends_its_block() {
        let named = Event::default().event("x").map(|event| event.id("7"));
        let Ok(Ok(named)) = named else {
            panic!("valid fields"); // ok: test
        };
        assert_eq!(named.encode(), "id: 7\n", "the name of nothing is dropped");
        assert_eq!(named.data("").encode(), "event: x\ndata: \nid: 7\n\n");
        assert_eq!(Event::default().encode(), "");
    }
}
