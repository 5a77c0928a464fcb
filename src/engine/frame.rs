//! [`FrameBuf`]: the frame being gathered for the connection. Bytes shared with others (the
//! preamble, an event a hub encoded once for every subscriber) are held as they are, and handed
//! on without a copy when nothing joins them; anything more is copied into one buffer.

use bytes::{Bytes, BytesMut};

/// The frame being gathered.
#[derive(Debug, Default)]
pub(super) enum FrameBuf {
    #[default]
    Empty,
    /// Bytes handed over whole, not copied yet.
    Shared(Bytes),
    Owned(BytesMut),
}

impl FrameBuf {
    pub(super) fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub(super) fn len(&self) -> usize {
        match self {
            Self::Empty => 0,
            Self::Shared(bytes) => bytes.len(),
            Self::Owned(buf) => buf.len(),
        }
    }

    pub(super) fn capacity(&self) -> usize {
        match self {
            Self::Owned(buf) => buf.capacity(),
            _ => 0,
        }
    }

    /// Appends shared bytes: kept as they are into an empty frame, copied otherwise.
    pub(super) fn push_shared(&mut self, bytes: &Bytes) {
        if self.is_empty() {
            *self = Self::Shared(bytes.clone());
        } else {
            self.write(|buf| buf.extend_from_slice(bytes));
        }
    }

    /// Writes into the frame as one buffer (what was shared is copied into it first).
    pub(super) fn write(&mut self, write: impl FnOnce(&mut BytesMut)) {
        let mut buf = match std::mem::take(self) {
            Self::Empty => BytesMut::new(),
            Self::Shared(bytes) => BytesMut::from(&bytes[..]),
            Self::Owned(buf) => buf,
        };
        write(&mut buf);
        *self = Self::Owned(buf);
    }

    /// Takes the frame whole, leaving nothing (so an idle stream keeps no buffer).
    pub(super) fn take(&mut self) -> Bytes {
        match std::mem::take(self) {
            Self::Empty => Bytes::new(),
            Self::Shared(bytes) => bytes,
            Self::Owned(buf) => buf.freeze(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shared_bytes_are_handed_on_without_a_copy_unless_joined() {
        let event = Bytes::from_static(b"data: x\n\n");
        let mut frame = FrameBuf::default();
        frame.push_shared(&event);
        let taken = frame.take();
        assert_eq!(taken.as_ptr(), event.as_ptr(), "the same bytes, not a copy");
        assert!(frame.is_empty());
        frame.push_shared(&event);
        frame.push_shared(&event);
        frame.write(|buf| buf.extend_from_slice(b": c\n\n"));
        assert_eq!(&frame.take()[..], b"data: x\n\ndata: x\n\n: c\n\n");
    }
}
