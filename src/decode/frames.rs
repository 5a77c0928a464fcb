//! [`Framing::Frames`](crate::Framing::Frames): one body data frame is one message.

use bytes::Bytes;

use super::{Emit, Item};
use crate::{Framing, Message, StreamError};

pub(super) fn decode(chunk: Bytes, max: usize, emit: &mut Emit<'_>) -> Result<(), StreamError> {
    if chunk.is_empty() {
        return Ok(());
    }
    if chunk.len() > max {
        return Err(StreamError::TooLarge { limit: max });
    }
    emit(Item::Message(Message::with_framing(chunk, Framing::Frames)))
}
