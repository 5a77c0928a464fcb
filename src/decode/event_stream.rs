//! [`Framing::EventStream`](crate::Framing::EventStream): the WHATWG event stream parser.
//!
//! Follows the "event stream interpretation" of the HTML standard: a leading BOM is dropped, lines
//! end with CR, LF or CRLF, `data` lines are joined with LF, an `id` holding NUL is ignored,
//! `retry` takes ASCII digits only, unknown fields and comments are ignored, a blank line
//! dispatches, and an event not ended by a blank line when the body closes is discarded.

use std::time::Duration;

use bytes::{Bytes, BytesMut};

use super::Item;
use crate::event::utf8_lossy;
use crate::{Event, Framing, Message, StreamError};

const BOM: &[u8] = b"\xEF\xBB\xBF";

/// Room in an unfinished line, on top of the message limit, for what is not part of the message:
/// the field name, colon and space (`event: ` is the longest kept field), and a leading BOM.
const FIELD_NAME_ROOM: usize = 16;

/// The parser's state between chunks. Holds at most `max` bytes of unfinished line and data
/// together; comment lines, however long, are dropped as they come.
#[derive(Debug)]
pub(crate) struct EventStreamDecoder {
    /// The unfinished line carried over from the previous chunk.
    line: BytesMut,
    /// The previous chunk ended with a CR: a LF starting this one belongs to the same break.
    skip_lf: bool,
    /// No line has been completed yet (a BOM is only dropped there).
    first_line: bool,
    /// The unfinished line is a comment: its bytes are dropped, not held.
    in_comment: bool,
    data: BytesMut,
    event: Option<Bytes>,
    /// The id set in the current block, if any (clients keep the last one between events).
    id: Option<Bytes>,
    retry: Option<Duration>,
    max: usize,
}

impl EventStreamDecoder {
    pub(super) fn new(max: usize) -> Self {
        Self {
            line: BytesMut::new(),
            skip_lf: false,
            first_line: true,
            in_comment: false,
            data: BytesMut::new(),
            event: None,
            id: None,
            retry: None,
            max,
        }
    }

    pub(super) fn decode(
        &mut self,
        chunk: Bytes,
        emit: &mut impl FnMut(Item) -> Result<(), StreamError>,
    ) -> Result<(), StreamError> {
        let mut rest: &[u8] = &chunk;
        if rest.is_empty() {
            return Ok(()); // keeps `skip_lf` for the next byte
        }
        if std::mem::take(&mut self.skip_lf) && rest.first() == Some(&b'\n') {
            rest = &rest[1..];
        }
        while let Some(at) = memchr::memchr2(b'\r', b'\n', rest) {
            let ends_with_cr = rest[at] == b'\r';
            if self.in_comment {
                self.in_comment = false;
                self.first_line = false;
            } else if self.line.is_empty() {
                self.field(&rest[..at], emit)?;
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
        if self.in_comment || (self.line.is_empty() && rest.first() == Some(&b':')) {
            self.in_comment = true;
        } else {
            self.check(self.line.len() + rest.len(), FIELD_NAME_ROOM)?;
            self.line.extend_from_slice(rest);
        }
        Ok(())
    }

    /// The body ended: an unfinished event is dropped, as clients drop it, but a `retry` already
    /// read took effect for clients the moment its line ended, so it is passed on.
    pub(super) fn finish(
        &mut self,
        emit: &mut impl FnMut(Item) -> Result<(), StreamError>,
    ) -> Result<(), StreamError> {
        match self.retry.take() {
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
    fn field(
        &mut self,
        mut line: &[u8],
        emit: &mut impl FnMut(Item) -> Result<(), StreamError>,
    ) -> Result<(), StreamError> {
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
    fn dispatch(
        &mut self,
        emit: &mut impl FnMut(Item) -> Result<(), StreamError>,
    ) -> Result<(), StreamError> {
        let event = self.event.take();
        let id = self.id.take();
        let retry = self.retry.take();
        if self.data.is_empty() {
            if id.is_none() && retry.is_none() {
                return Ok(());
            }
            return emit(Item::Control(Event::from_parsed(None, None, id, retry)));
        }
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
            ["data: x\n\n", "id: 7\n\n"]
        );
    }

    #[test]
    fn retry_needs_digits_only() {
        assert_eq!(
            parse("retry: 12a\nretry: 250\ndata: x\n\nretry: -1\n\n"),
            ["data: x\nretry: 250\n\n"]
        );
    }

    #[test]
    fn field_without_colon_and_empty_event() {
        assert_eq!(
            parse("data\n\nevent\ndata: y\n\n"),
            ["data: \n\n", "event: \ndata: y\n\n"]
        );
    }
}
