//! The gRPC framing: length-prefixed messages, and the status the trailers carry. Plugged into
//! the core's engine as a decoder of its own ([`Decode`]).

use bytes::{Buf, Bytes, BytesMut};
use http::HeaderMap;

use super::status::{code, CallError, Status};
use crate::decode::{Decode, Emit, Item};
use crate::{Framing, Message, StreamError};

/// Every message starts with a compression flag and its length as a big-endian `u32`.
const PREFIX: usize = 5;

/// Reassembles messages split across body frames (and splits frames holding several); holds at
/// most `max` bytes of an unfinished message.
#[derive(Debug)]
pub(crate) struct GrpcDecoder {
    /// The unfinished prefix, or the unfinished message once its prefix is read.
    partial: BytesMut,
    /// The length of the message being read, once its prefix is complete.
    expected: Option<usize>,
    max: usize,
    /// The status has come (in the trailers, or in the head of a trailers-only response).
    status_seen: bool,
}

impl GrpcDecoder {
    pub(super) fn new(max: usize) -> Self {
        Self {
            partial: BytesMut::new(),
            expected: None,
            max,
            status_seen: false,
        }
    }

    pub(super) fn decode(
        &mut self,
        mut chunk: Bytes,
        emit: &mut Emit<'_>,
    ) -> Result<(), StreamError> {
        while !chunk.is_empty() {
            let len = match self.expected {
                Some(len) => len,
                None => match self.prefix(&mut chunk)? {
                    Some(len) => len,
                    None => return Ok(()),
                },
            };
            // A whole message in the chunk (an empty one too, even at the chunk's end) is taken
            // without a copy.
            let message = if self.partial.is_empty() && chunk.len() >= len {
                chunk.split_to(len)
            } else {
                let take = (len - self.partial.len()).min(chunk.len());
                self.partial.extend_from_slice(&chunk[..take]);
                chunk.advance(take);
                if self.partial.len() < len {
                    return Ok(());
                }
                self.partial.split().freeze()
            };
            self.expected = None;
            emit(Item::Message(Message::with_framing(
                message,
                Framing::Frames,
            )))?;
        }
        Ok(())
    }

    /// Reads a message's prefix from `chunk` (or keeps its start), returning the length once
    /// the prefix is whole.
    fn prefix(&mut self, chunk: &mut Bytes) -> Result<Option<usize>, StreamError> {
        let take = (PREFIX - self.partial.len()).min(chunk.len());
        self.partial.extend_from_slice(&chunk[..take]);
        chunk.advance(take);
        if self.partial.len() < PREFIX {
            return Ok(None);
        }
        let mut prefix = self.partial.split();
        let compressed = prefix.get_u8();
        let len = prefix.get_u32();
        if compressed != 0 {
            return Err(CallError::Compressed.into());
        }
        let len = usize::try_from(len).unwrap_or(usize::MAX);
        if len > self.max {
            return Err(StreamError::TooLarge { limit: self.max });
        }
        self.expected = Some(len);
        Ok(Some(len))
    }

    /// The trailers: a status other than OK ends the stream with it.
    pub(super) fn trailers(&mut self, trailers: &HeaderMap) -> Result<(), StreamError> {
        let Some(status) = Status::from_headers(trailers) else {
            return Ok(());
        };
        self.status_seen = true;
        status.into_result()
    }

    pub(super) fn finish(&mut self) -> Result<(), StreamError> {
        let error = |code, message: &str| {
            Err(CallError::Status {
                code,
                message: message.into(),
            }
            .into())
        };
        if self.expected.is_some() || !self.partial.is_empty() {
            return error(code::INTERNAL, "the stream ended inside a message");
        }
        if !self.status_seen {
            return error(code::UNKNOWN, "the stream ended without a grpc-status");
        }
        Ok(())
    }
}

impl Decode for GrpcDecoder {
    fn decode(&mut self, chunk: Bytes, emit: &mut Emit<'_>) -> Result<(), StreamError> {
        GrpcDecoder::decode(self, chunk, emit)
    }

    fn trailers(&mut self, trailers: &HeaderMap) -> Result<(), StreamError> {
        GrpcDecoder::trailers(self, trailers)
    }

    fn finish(&mut self, _emit: &mut Emit<'_>) -> Result<(), StreamError> {
        GrpcDecoder::finish(self)
    }

    #[cfg(test)]
    fn held(&self) -> usize {
        self.partial.capacity()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn framed(messages: &[&[u8]]) -> Vec<u8> {
        let mut out = Vec::new();
        for message in messages {
            out.push(0);
            out.extend_from_slice(&(message.len() as u32).to_be_bytes());
            out.extend_from_slice(message);
        }
        out
    }

    fn call_error<T>(result: &Result<T, StreamError>) -> Option<CallError> {
        result.as_ref().err().and_then(CallError::of).cloned()
    }

    fn status(code: i32, message: &str) -> CallError {
        CallError::Status {
            code,
            message: message.into(),
        }
    }

    fn status_code<T>(result: &Result<T, StreamError>) -> Option<i32> {
        match call_error(result)? {
            CallError::Status { code, .. } => Some(code),
            CallError::Compressed => None,
        }
    }

    fn ok_trailers() -> HeaderMap {
        let mut trailers = HeaderMap::new();
        trailers.insert("grpc-status", http::HeaderValue::from_static("0"));
        trailers
    }

    /// Decodes `input` cut at `cuts`, then the trailers; the messages or the first error.
    fn decode(
        input: &[u8],
        cuts: &[usize],
        max: usize,
        trailers: Option<HeaderMap>,
    ) -> Result<Vec<Bytes>, StreamError> {
        let mut decoder = GrpcDecoder::new(max);
        let mut out = Vec::new();
        let mut emit = |item: Item| {
            if let Item::Message(message) = item {
                out.push(message.into_data());
            }
            Ok(())
        };
        let mut start = 0;
        for &cut in cuts.iter().chain(std::iter::once(&input.len())) {
            decoder.decode(Bytes::copy_from_slice(&input[start..cut]), &mut emit)?;
            start = cut;
        }
        if let Some(trailers) = trailers {
            decoder.trailers(&trailers)?;
        }
        decoder.finish()?;
        Ok(out)
    }

    #[test]
    fn packed_and_split_messages_decode_the_same_at_every_cut_pair() {
        let messages: [&[u8]; 4] = [b"first", b"", b"\x08\x96\x01", &[7; 300]];
        let input = framed(&messages);
        let expected: Vec<Bytes> = messages.iter().map(|m| Bytes::copy_from_slice(m)).collect();
        for a in 0..=input.len() {
            for b in a..=input.len() {
                let decoded = decode(&input, &[a, b], 1024, Some(ok_trailers()));
                assert_eq!(decoded.ok().as_ref(), Some(&expected), "cuts {a}, {b}");
            }
        }
    }

    #[test]
    fn one_byte_at_a_time() {
        let input = framed(&[b"abc", b"", b"defg"]);
        let cuts: Vec<usize> = (1..input.len()).collect();
        let decoded = decode(&input, &cuts, 4, Some(ok_trailers())).ok();
        assert_eq!(
            decoded,
            Some(vec![Bytes::from("abc"), Bytes::new(), Bytes::from("defg")])
        );
    }

    #[test]
    fn a_length_over_the_limit_fails_at_the_prefix() {
        // Only the prefix has come: the message is refused before any of it is held.
        let mut decoder = GrpcDecoder::new(10);
        let result = decoder.decode(Bytes::from_static(&[0, 0, 0, 0, 11]), &mut |_| Ok(()));
        assert!(matches!(result, Err(StreamError::TooLarge { limit: 10 })));
        let huge = [0, 0xff, 0xff, 0xff, 0xff];
        let result = decode(&huge, &[], 1 << 20, None);
        assert!(matches!(result, Err(StreamError::TooLarge { .. })));
    }

    #[test]
    fn a_compressed_message_is_an_error() {
        let mut input = framed(&[b"abc"]);
        input[0] = 1;
        let result = decode(&input, &[], 16, Some(ok_trailers()));
        assert_eq!(call_error(&result), Some(CallError::Compressed));
    }

    #[test]
    fn the_status_comes_from_the_trailers() {
        let input = framed(&[b"abc"]);
        let mut trailers = HeaderMap::new();
        trailers.insert("grpc-status", http::HeaderValue::from_static("5"));
        trailers.insert(
            "grpc-message",
            http::HeaderValue::from_static("no%20such%20feed%20%E2%9C%93"),
        );
        trailers.insert(
            "grpc-status-details-bin",
            http::HeaderValue::from_static("!!not base64"),
        );
        let result = decode(&input, &[], 16, Some(trailers));
        assert_eq!(call_error(&result), Some(status(5, "no such feed ✓")));
        let mut garbled = HeaderMap::new();
        garbled.insert("grpc-status", http::HeaderValue::from_static("abc"));
        let result = decode(&input, &[], 16, Some(garbled));
        assert_eq!(status_code(&result), Some(code::UNKNOWN));
    }

    #[test]
    fn no_status_or_an_unfinished_message_is_an_error() {
        let input = framed(&[b"abc"]);
        let result = decode(&input, &[], 16, None);
        assert_eq!(status_code(&result), Some(code::UNKNOWN));
        let result = decode(&input[..6], &[], 16, Some(ok_trailers()));
        assert_eq!(status_code(&result), Some(code::INTERNAL));
    }
}

#[cfg(test)]
mod fuzz {
    use proptest::prelude::*;

    use super::GrpcDecoder;
    use crate::decode::fuzz::{decode_with, grown, limits, with_cuts};

    /// A gRPC body: messages of any length (some over the small limits), now and then a
    /// compressed flag, and sometimes stray bytes at the end.
    fn grpc_body() -> impl Strategy<Value = Vec<u8>> {
        let message = (
            prop_oneof![20 => Just(0u8), 1 => Just(1u8)],
            proptest::collection::vec(any::<u8>(), 0..120),
        );
        (
            proptest::collection::vec(message, 0..12),
            proptest::collection::vec(any::<u8>(), 0..6),
        )
            .prop_map(|(messages, tail)| {
                let mut body = Vec::new();
                for (flag, payload) in messages {
                    body.push(flag);
                    body.extend_from_slice(&(payload.len() as u32).to_be_bytes());
                    body.extend_from_slice(&payload);
                }
                body.extend_from_slice(&tail);
                body
            })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        #[test]
        fn grpc(
            max in limits(),
            (input, cuts) in grpc_body().prop_flat_map(with_cuts),
        ) {
            // An unfinished prefix or message at most.
            let bound = grown(max + 5);
            let decoder = || GrpcDecoder::new(max);
            let whole = decode_with(decoder(), max, &input, &[], usize::MAX);
            prop_assert_eq!(decode_with(decoder(), max, &input, &cuts, bound), whole);
        }
    }
}
