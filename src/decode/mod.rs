//! Cutting the inner body into messages: one decoder per [`Framing`].
//!
//! Every decoder takes body chunks as they come (split anywhere) and hands complete items to a
//! callback; none holds more than `max_message_size` bytes of an unfinished message.

mod event_stream;
mod frames;
mod lines;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue};

use crate::{Event, Message, StreamError};

use event_stream::EventStreamDecoder;
use lines::LineDecoder;

/// How the inner response body is cut into messages.
///
/// By default the layer picks the framing from the inner response's `Content-Type`
/// ([`Framing::from_content_type`]); [`SseLayer::framing`](crate::SseLayer::framing) overrides it
/// when an upstream's `Content-Type` cannot be trusted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Framing {
    /// One body data frame is one message (empty frames are skipped). The messages of a gRPC
    /// stream under `GrpcLayer` (feature `grpc`), one per length-prefixed gRPC
    /// message, report this framing too.
    Frames,
    /// One line is one message (NDJSON / JSON Lines): lines end with LF or CRLF, may be split
    /// across frames, and empty lines are skipped. A last line without a line break still counts.
    Lines,
    /// The inner body already is a `text/event-stream`: it is parsed by the WHATWG rules and every
    /// event is encoded again, so heartbeats fall between events and no field can be injected.
    EventStream,
}

impl Framing {
    /// The framing for an inner `Content-Type`: `text/event-stream` → [`Framing::EventStream`];
    /// `application/x-ndjson`, `application/jsonl`, `application/json-lines` and
    /// `application/x-jsonlines` → [`Framing::Lines`]; anything else, or none →
    /// [`Framing::Frames`].
    ///
    /// ```
    /// use http::HeaderValue;
    /// use tower_sse::Framing;
    ///
    /// let ndjson = HeaderValue::from_static("application/x-ndjson; charset=utf-8");
    /// assert_eq!(Framing::from_content_type(Some(&ndjson)), Framing::Lines);
    /// assert_eq!(Framing::from_content_type(None), Framing::Frames);
    /// ```
    pub fn from_content_type(content_type: Option<&HeaderValue>) -> Self {
        let Some(value) = content_type.and_then(|value| value.to_str().ok()) else {
            return Self::Frames;
        };
        let essence = crate::headers::essence(value);
        let is = |name: &str| essence.eq_ignore_ascii_case(name);
        if is(crate::headers::EVENT_STREAM) {
            Self::EventStream
        } else if is("application/x-ndjson")
            || is("application/jsonl")
            || is("application/json-lines")
            || is("application/x-jsonlines")
        {
            Self::Lines
        } else {
            Self::Frames
        }
    }
}

/// What a decoder hands on.
#[derive(Debug)]
pub(crate) enum Item {
    /// A message for the mapper.
    Message(Message),
    /// A block of an inner event stream that dispatches no event but changes the client's state
    /// (an id-only or retry-only block): written as it is, without the mapper.
    Control(Event),
}

/// Where a decoder hands each complete item.
pub(crate) type Emit<'a> = dyn FnMut(Item) -> Result<(), StreamError> + 'a;

/// A decoder: bytes in, items out. The core's framings ([`Decoder`]) and gRPC's are decoders,
/// each driven by the engine's [`Decoded`](crate::engine::Decoded) source.
pub(crate) trait Decode: Send {
    /// Decodes one chunk, calling `emit` for every complete item. Stops at the first error.
    fn decode(&mut self, chunk: Bytes, emit: &mut Emit<'_>) -> Result<(), StreamError>;

    /// The body's trailers.
    fn trailers(&mut self, trailers: &HeaderMap) -> Result<(), StreamError>;

    /// The body has ended: hands on what is complete, and fails if what it holds is not.
    fn finish(&mut self, emit: &mut Emit<'_>) -> Result<(), StreamError>;

    /// The bytes its buffers have allocated (for tests bounding memory).
    #[cfg(test)]
    fn held(&self) -> usize;
}

/// The decoder of one response, picked by its [`Framing`].
pub(crate) enum Decoder {
    Frames { max: usize },
    Lines(Box<LineDecoder>),
    EventStream(Box<EventStreamDecoder>),
}

impl std::fmt::Debug for Decoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Frames { .. } => "Decoder::Frames",
            Self::Lines(_) => "Decoder::Lines",
            Self::EventStream(_) => "Decoder::EventStream",
        })
    }
}

impl Decoder {
    /// The decoder for `framing`. `preamble_retry` is the `retry:` hint the stream opened with,
    /// which an inner event stream need not repeat.
    pub(crate) fn new(
        framing: Framing,
        max_message_size: usize,
        preamble_retry: Option<std::time::Duration>,
    ) -> Self {
        match framing {
            Framing::Frames => Self::Frames {
                max: max_message_size,
            },
            Framing::Lines => Self::Lines(Box::new(LineDecoder::new(max_message_size))),
            Framing::EventStream => Self::EventStream(Box::new(EventStreamDecoder::new(
                max_message_size,
                preamble_retry,
            ))),
        }
    }

    /// Decodes one chunk, calling `emit` for every complete item. Stops at the first error.
    pub(crate) fn decode(&mut self, chunk: Bytes, emit: &mut Emit<'_>) -> Result<(), StreamError> {
        match self {
            Self::Frames { max } => frames::decode(chunk, *max, emit),
            Self::Lines(decoder) => decoder.decode(chunk, emit),
            Self::EventStream(decoder) => decoder.decode(chunk, emit),
        }
    }

    /// The bytes its buffers have allocated (for tests bounding memory).
    #[cfg(test)]
    pub(crate) fn held(&self) -> usize {
        match self {
            Self::Frames { .. } => 0,
            Self::Lines(decoder) => decoder.held(),
            Self::EventStream(decoder) => decoder.held(),
        }
    }

    /// The `retry` the block being read has set so far (an inner event stream's): a client
    /// applies it the moment its line ends, before the block is dispatched.
    pub(crate) fn pending_retry(&self) -> Option<std::time::Duration> {
        match self {
            Self::EventStream(decoder) => decoder.pending_retry(),
            _ => None,
        }
    }

    /// The body has ended: hands on what is complete and drops what is not.
    pub(crate) fn finish(&mut self, emit: &mut Emit<'_>) -> Result<(), StreamError> {
        match self {
            Self::Frames { .. } => Ok(()),
            Self::Lines(decoder) => decoder.finish(emit),
            Self::EventStream(decoder) => decoder.finish(emit),
        }
    }
}

impl Decode for Decoder {
    fn decode(&mut self, chunk: Bytes, emit: &mut Emit<'_>) -> Result<(), StreamError> {
        Decoder::decode(self, chunk, emit)
    }

    /// The core's framings read no trailers.
    fn trailers(&mut self, _trailers: &HeaderMap) -> Result<(), StreamError> {
        Ok(())
    }

    fn finish(&mut self, emit: &mut Emit<'_>) -> Result<(), StreamError> {
        Decoder::finish(self, emit)
    }

    #[cfg(test)]
    fn held(&self) -> usize {
        Decoder::held(self)
    }
}

#[cfg(test)]
pub(crate) mod fuzz;

#[cfg(test)]
pub(crate) mod test_support {
    use super::*;

    /// Decodes `input` split into chunks at `cuts`, returning the items or the error.
    pub(crate) fn decode_split(
        framing: Framing,
        max: usize,
        input: &[u8],
        cuts: &[usize],
    ) -> Result<Vec<Event>, StreamError> {
        split_with(Decoder::new(framing, max, None), input, cuts)
    }

    /// Decodes `input` with `decoder`, split into chunks at `cuts`.
    pub(crate) fn split_with(
        mut decoder: Decoder,
        input: &[u8],
        cuts: &[usize],
    ) -> Result<Vec<Event>, StreamError> {
        let mut out = Vec::new();
        let mut emit = |item: Item| {
            out.push(match item {
                Item::Message(message) => message.into_event(),
                Item::Control(event) => event,
            });
            Ok(())
        };
        let mut start = 0;
        for &cut in cuts.iter().chain(std::iter::once(&input.len())) {
            decoder.decode(Bytes::copy_from_slice(&input[start..cut]), &mut emit)?;
            start = cut;
        }
        decoder.finish(&mut emit)?;
        Ok(out)
    }
}
