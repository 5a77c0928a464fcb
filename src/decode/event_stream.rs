//! [`Framing::EventStream`](crate::Framing::EventStream): the WHATWG event stream parser.
//!
//! Follows the "event stream interpretation" of the HTML standard: a leading BOM is dropped, lines
//! end with CR, LF or CRLF, `data` lines are joined with LF, an `id` holding NUL is ignored,
//! `retry` takes ASCII digits only, unknown fields and comments are ignored, a blank line
//! dispatches, and an event not ended by a blank line when the body closes is discarded.

use std::time::Duration;

use bytes::{Bytes, BytesMut};

use super::{Emit, Item};
use crate::event::utf8_lossy;
use crate::{Event, Framing, Message, StreamError};

const BOM: &[u8] = b"\xEF\xBB\xBF";

/// Room in an unfinished line, on top of the message limit, for what is not part of the message:
/// the field name, colon and space (`event: ` is the longest kept field), and a leading BOM.
pub(super) const FIELD_NAME_ROOM: usize = 16;

/// The parser's state between chunks. Holds at most `max` bytes of unfinished line and data
/// together; comments and unknown fields, however long, are dropped as they come.
#[derive(Debug)]
pub(crate) struct EventStreamDecoder {
    /// The unfinished line carried over from the previous chunk.
    line: BytesMut,
    /// The previous chunk ended with a CR: a LF starting this one belongs to the same break.
    skip_lf: bool,
    /// No line has been completed yet (a BOM is only dropped there).
    first_line: bool,
    /// The unfinished line is one clients ignore (a comment or an unknown field): its bytes are
    /// dropped, not held.
    ignoring: bool,
    data: BytesMut,
    event: Option<Bytes>,
    /// The id set in the current block, if any (clients keep the last one between events).
    id: Option<Bytes>,
    retry: Option<Duration>,
    /// The reconnection delay the client already holds from the stream's preamble, while
    /// nothing else has been handed on: a retry-only block repeating it changes nothing, and is
    /// dropped (an upstream that opens with the same `retry:` as the layer's hint).
    preamble_retry: Option<Duration>,
    max: usize,
}

impl EventStreamDecoder {
    pub(super) fn new(max: usize, preamble_retry: Option<Duration>) -> Self {
        Self {
            preamble_retry,
            line: BytesMut::new(),
            skip_lf: false,
            first_line: true,
            ignoring: false,
            data: BytesMut::new(),
            event: None,
            id: None,
            retry: None,
            max,
        }
    }

    #[cfg(test)]
    pub(super) fn held(&self) -> usize {
        self.line.capacity() + self.data.capacity()
    }

    pub(super) fn decode(&mut self, chunk: Bytes, emit: &mut Emit<'_>) -> Result<(), StreamError> {
        let mut rest: &[u8] = &chunk;
        if rest.is_empty() {
            return Ok(()); // keeps `skip_lf` for the next byte
        }
        if std::mem::take(&mut self.skip_lf) && rest.first() == Some(&b'\n') {
            rest = &rest[1..];
        }
        while let Some(at) = memchr::memchr2(b'\r', b'\n', rest) {
            let ends_with_cr = rest[at] == b'\r';
            if self.ignoring {
                self.ignoring = false;
                self.first_line = false;
            } else if self.line.is_empty() {
                self.field(&rest[..at], emit)?;
            } else if ignored(self.first_line, &self.line, &rest[..at]) {
                self.line.clear();
                self.first_line = false;
            } else {
                self.check(self.line.len() + at, FIELD_NAME_ROOM)?;
                self.line.extend_from_slice(&rest[..at]);
                let line = std::mem::take(&mut self.line);
                let result = self.field(&line, emit);
                self.line = line;
                self.line.clear();
                result?;
            }
            rest = &rest[at + 1..];
            if ends_with_cr {
                match rest.first() {
                    None => self.skip_lf = true,
                    Some(b'\n') => rest = &rest[1..],
                    Some(_) => {}
                }
            }
        }
        if self.ignoring || ignored(self.first_line, &self.line, rest) {
            self.ignoring = true;
            self.line.clear();
        } else {
            self.check(self.line.len() + rest.len(), FIELD_NAME_ROOM)?;
            self.line.extend_from_slice(rest);
        }
        Ok(())
    }

    /// The `retry` the block being read has set so far.
    pub(super) fn pending_retry(&self) -> Option<Duration> {
        self.retry
    }

    /// The body ended: an unfinished event is dropped, as clients drop it, but a `retry` already
    /// read took effect for clients the moment its line ended, so it is passed on.
    pub(super) fn finish(&mut self, emit: &mut Emit<'_>) -> Result<(), StreamError> {
        match self.retry.take() {
            Some(retry) if self.preamble_retry.take() == Some(retry) => Ok(()),
            Some(retry) => emit(Item::Control(Event::from_parsed(
                None,
                None,
                None,
                Some(retry),
            ))),
            None => Ok(()),
        }
    }

    /// Processes one complete line.
    fn field(&mut self, mut line: &[u8], emit: &mut Emit<'_>) -> Result<(), StreamError> {
        let whole = line.len();
        if std::mem::take(&mut self.first_line) {
            line = line.strip_prefix(BOM).unwrap_or(line);
        }
        if line.is_empty() {
            return self.dispatch(emit);
        }
        let (name, value) = match memchr::memchr(b':', line) {
            Some(0) => return Ok(()), // a comment
            Some(colon) => {
                let value = &line[colon + 1..];
                (&line[..colon], value.strip_prefix(b" ").unwrap_or(value))
            }
            None => (line, &[][..]),
        };
        if FIELDS.contains(&name) {
            // The limit an unfinished line is held to: whether a line came whole or in pieces,
            // a chunk boundary must not decide between an error and none.
            self.check(whole, FIELD_NAME_ROOM)?;
        }
        match name {
            b"event" => {
                self.check(value.len(), 0)?;
                self.event = Some(text(value));
            }
            b"data" => {
                // The LF after the last line is not part of the message.
                self.check(value.len(), 0)?;
                self.data.extend_from_slice(value);
                self.data.extend_from_slice(b"\n");
            }
            b"id" if memchr::memchr(0, value).is_none() => {
                self.check(value.len(), 0)?;
                self.id = Some(text(value));
            }
            b"retry" if !value.is_empty() && value.iter().all(u8::is_ascii_digit) => {
                let millis = value.iter().fold(0u64, |millis, digit| {
                    millis
                        .saturating_mul(10)
                        .saturating_add(u64::from(digit - b'0'))
                });
                self.retry = Some(Duration::from_millis(millis));
            }
            _ => {} // an unknown field, an id with NUL or a retry that is not a number
        }
        Ok(())
    }

    /// A blank line: hands on the event (or the id/retry change) gathered since the last one.
    fn dispatch(&mut self, emit: &mut Emit<'_>) -> Result<(), StreamError> {
        let event = self.event.take();
        let id = self.id.take();
        let retry = self.retry.take();
        if self.data.is_empty() {
            if id.is_none() && retry.is_none() {
                return Ok(());
            }
            if id.is_none() && retry == self.preamble_retry.take() {
                return Ok(());
            }
            return emit(Item::Control(Event::from_parsed(None, None, id, retry)));
        }
        self.preamble_retry = None;
        self.data.truncate(self.data.len() - 1); // the LF after the last data line
        let data = self.data.split().freeze();
        let message =
            Message::with_framing(data, Framing::EventStream).with_fields(event, id, retry);
        emit(Item::Message(message))
    }

    /// Checks that `len` more bytes, with the data already gathered, stay within the limit (plus
    /// `room` for what is not part of the message, such as a field name).
    fn check(&self, len: usize, room: usize) -> Result<(), StreamError> {
        if self.data.len().saturating_add(len) > self.max.saturating_add(room) {
            Err(StreamError::TooLarge { limit: self.max })
        } else {
            Ok(())
        }
    }
}

/// The fields a client acts on; every other line is ignored.
const FIELDS: [&[u8]; 4] = [b"data", b"event", b"id", b"retry"];

/// Whether an unfinished line, `held` then `rest`, is already known to be one clients ignore:
/// a comment, or a field whose name is none of [`FIELDS`]. Looks at the BOM (on the stream's
/// first line) and the name only, so it costs a few bytes however long the line is.
fn ignored(first_line: bool, held: &[u8], rest: &[u8]) -> bool {
    let line = || held.iter().chain(rest).copied();
    let mut skip = 0;
    if first_line {
        let mut start = [0; BOM.len()];
        let mut len = 0;
        for (slot, byte) in start.iter_mut().zip(line()) {
            *slot = byte;
            len += 1;
        }
        if start[..len] == *BOM {
            skip = BOM.len();
        } else if BOM.starts_with(&start[..len]) {
            return false; // maybe a BOM, not complete yet
        }
    }
    // Long enough for every kept name and one byte more.
    let mut name = [0; 6];
    for (len, byte) in line().skip(skip).take(name.len()).enumerate() {
        if byte == b':' {
            // A complete name: an empty one starts a comment.
            return !FIELDS.contains(&&name[..len]);
        }
        name[len] = byte;
        if !FIELDS.iter().any(|field| field.starts_with(&name[..=len])) {
            return true;
        }
    }
    false
}

fn text(value: &[u8]) -> Bytes {
    utf8_lossy(Bytes::copy_from_slice(value))
}

#[cfg(test)]
mod tests {
    use crate::decode::test_support::decode_split;
    use crate::Framing;

    fn parse(input: &str) -> Vec<String> {
        decode_split(Framing::EventStream, 1 << 20, input.as_bytes(), &[])
            .unwrap_or_default()
            .iter()
            .map(|event| event.encode())
            .collect()
    }

    #[test]
    fn data_lines_join_with_lf_and_unfinished_event_is_dropped() {
        assert_eq!(
            parse("data: a\r\ndata:b\rdata:  c\n\ndata: lost"),
            ["data: a\ndata: b\ndata:  c\n\n"]
        );
    }

    #[test]
    fn bom_dropped_only_at_start() {
        assert_eq!(parse("\u{FEFF}data: x\n\n"), ["data: x\n\n"]);
        assert_eq!(parse("data: x\n\n\u{FEFF}data: y\n\n"), ["data: x\n\n"]);
    }

    #[test]
    fn id_with_nul_ignored_and_id_only_block_kept() {
        assert_eq!(
            parse("id: a\0b\ndata: x\n\nid: 7\n\n"),
            ["data: x\n\n", "id: 7\n"]
        );
    }

    #[test]
    fn retry_needs_digits_only() {
        assert_eq!(
            parse("retry: 12a\nretry: 250\ndata: x\n\nretry: -1\n\n"),
            ["data: x\nretry: 250\n\n"]
        );
    }

    /// An upstream that opens with the layer's own `retry:` hint does not get it written twice;
    /// a different value, or the same one after anything else was handed on, is kept.
    #[test]
    fn a_retry_repeating_the_preamble_is_dropped_only_before_anything_else() {
        use std::time::Duration;
        let parse_after = |preamble: u64, input: &str| -> Vec<String> {
            let mut decoder =
                super::EventStreamDecoder::new(1 << 20, Some(Duration::from_millis(preamble)));
            let mut out = Vec::new();
            let mut emit = |item| {
                out.push(match item {
                    crate::decode::Item::Message(message) => message.into_event().encode(),
                    crate::decode::Item::Control(event) => event.encode(),
                });
                Ok(())
            };
            let decoded =
                decoder.decode(bytes::Bytes::copy_from_slice(input.as_bytes()), &mut emit);
            assert!(decoded.is_ok());
            assert!(decoder.finish(&mut emit).is_ok());
            out
        };
        assert_eq!(
            parse_after(3000, "retry: 3000\n\ndata: x\n\n"),
            ["data: x\n\n"]
        );
        assert_eq!(
            parse_after(3000, "\n\nretry: 3000\n\n"),
            Vec::<String>::new()
        );
        assert_eq!(parse_after(3000, "retry: 3000"), Vec::<String>::new());
        assert_eq!(parse_after(2000, "retry: 3000\n\n"), ["retry: 3000\n"]);
        assert_eq!(
            parse_after(3000, "data: x\n\nretry: 3000\n\n"),
            ["data: x\n\n", "retry: 3000\n"]
        );
        assert_eq!(
            parse_after(3000, "retry: 3000\nid: 1\n\n"),
            ["id: 1\nretry: 3000\n"]
        );
    }

    /// Lines clients ignore are dropped as they come, however long and however split: with a
    /// 64-byte limit, a 300-byte comment after a BOM, or a 300-byte unknown field, still lets the
    /// next event through. A kept field over the limit still ends the stream.
    #[test]
    fn long_ignored_lines_are_not_held_at_any_split() {
        let long = "p".repeat(300);
        let inputs = [
            format!("\u{FEFF}: {long}\ndata: ok\n\n"),
            format!("padding: {long}\ndata: ok\n\n"),
            format!("datum{long}\ndata: ok\n\n"),
            format!(": x\nretryy: {long}\rdata: ok\r\r"),
        ];
        for input in &inputs {
            for cut in 0..=input.len() {
                for second in [cut, (cut + 1).min(input.len()), (cut + 7).min(input.len())] {
                    let events =
                        decode_split(Framing::EventStream, 64, input.as_bytes(), &[cut, second]);
                    let encoded: Vec<String> = events
                        .unwrap_or_else(|error| panic!("{input:?} cut at {cut}/{second}: {error}")) // ok: test
                        .iter()
                        .map(|event| event.encode())
                        .collect();
                    assert_eq!(encoded, ["data: ok\n\n"], "{input:?} cut at {cut}/{second}");
                }
            }
        }
        let kept = format!("data: {long}\n\n");
        for cut in [0, 3, 10, 100, kept.len()] {
            let result = decode_split(Framing::EventStream, 64, kept.as_bytes(), &[cut]);
            assert!(result.is_err(), "a kept field over the limit, cut at {cut}");
        }
    }

    #[test]
    fn field_without_colon_and_empty_event() {
        assert_eq!(
            parse("data\n\nevent\ndata: y\n\n"),
            ["data: \n\n", "event: \ndata: y\n\n"]
        );
    }
}
