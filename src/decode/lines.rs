//! [`Framing::Lines`](crate::Framing::Lines): one line (LF or CRLF) is one message.

use bytes::{Buf, Bytes, BytesMut};

use super::{Emit, Item};
use crate::{Framing, Message, StreamError};

/// Reassembles lines split across chunks; holds at most `max` bytes of an unfinished line.
#[derive(Debug)]
pub(crate) struct LineDecoder {
    partial: BytesMut,
    max: usize,
}

impl LineDecoder {
    pub(super) fn new(max: usize) -> Self {
        Self {
            partial: BytesMut::new(),
            max,
        }
    }

    #[cfg(test)]
    pub(super) fn held(&self) -> usize {
        self.partial.capacity()
    }

    pub(super) fn decode(
        &mut self,
        mut chunk: Bytes,
        emit: &mut Emit<'_>,
    ) -> Result<(), StreamError> {
        while let Some(at) = memchr::memchr(b'\n', &chunk) {
            let line = if self.partial.is_empty() {
                chunk.split_to(at)
            } else {
                self.check(self.partial.len() + at)?;
                self.partial.extend_from_slice(&chunk[..at]);
                chunk.advance(at);
                // The line takes the whole buffer: a part kept for the next line would be
                // shared with it, and grow past the limit's bound when it must be replaced.
                std::mem::take(&mut self.partial).freeze()
            };
            chunk.advance(1);
            self.line(line, emit)?;
        }
        self.check(self.partial.len() + chunk.len())?;
        self.partial.extend_from_slice(&chunk);
        Ok(())
    }

    pub(super) fn finish(&mut self, emit: &mut Emit<'_>) -> Result<(), StreamError> {
        let last = std::mem::take(&mut self.partial).freeze();
        self.line(last, emit)
    }

    fn line(&self, mut line: Bytes, emit: &mut Emit<'_>) -> Result<(), StreamError> {
        if line.last() == Some(&b'\r') {
            line.truncate(line.len() - 1);
        }
        if line.is_empty() {
            return Ok(());
        }
        if line.len() > self.max {
            return Err(StreamError::TooLarge { limit: self.max });
        }
        emit(Item::Message(Message::with_framing(line, Framing::Lines)))
    }

    /// Checks the length of an unfinished line, which may still end with a CR that is not part of
    /// the message.
    fn check(&self, len: usize) -> Result<(), StreamError> {
        if len > self.max.saturating_add(1) {
            Err(StreamError::TooLarge { limit: self.max })
        } else {
            Ok(())
        }
    }
}
