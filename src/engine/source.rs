//! The seam between the engine and what it writes: a [`Source`] of events, and the [`Output`]
//! it writes them into.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;

use super::frame::FrameBuf;
use super::tracker::Tracker;
use super::{FLUSH_AT, FRAME_CAPACITY};
use crate::config::Config;
use crate::{Event, Message, StreamError};

/// Where the events of one stream come from. The engine asks for more each time the connection
/// asks for a frame, and gives every stream the same lifecycle (preamble, coalescing,
/// heartbeats, shutdown, maximum age, write deadline, close reports) whatever its source.
pub(crate) trait Source {
    /// Writes every event that is ready into `out`, until `out` [is full](Output::is_full) or
    /// none is ready; never waits.
    ///
    /// `Ready(Ok(()))`: the source has ended, and wrote all it had. `Ready(Err(_))`: it failed
    /// (the stream ends with a final error event). `Pending`: nothing more now; a wake-up is
    /// registered with `cx`, unless `out` is full (the engine then comes back after the frame).
    fn poll_events(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        out: &mut Output<'_>,
    ) -> Poll<Result<(), StreamError>>;
}

impl<S: Source + ?Sized> Source for Pin<Box<S>> {
    fn poll_events(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        out: &mut Output<'_>,
    ) -> Poll<Result<(), StreamError>> {
        self.get_mut().as_mut().poll_events(cx, out)
    }
}

/// The engine's side of the seam: the frame being coalesced, and the stream's counters.
pub(crate) struct Output<'a> {
    pub(super) buf: &'a mut FrameBuf,
    pub(super) coalescing: &'a mut bool,
    pub(super) config: &'a Config,
    pub(super) tracker: &'a mut Tracker,
}

impl Output<'_> {
    /// Whether the frame has reached the flush bound: write no more into it.
    pub(crate) fn is_full(&self) -> bool {
        self.buf.len() >= FLUSH_AT
    }

    /// Maps a decoded message with the layer's mapper, and writes the event.
    pub(crate) fn message(&mut self, message: Message) -> Result<(), StreamError> {
        let event = self.config.map(message).map_err(StreamError::Event)?;
        self.event(event);
        Ok(())
    }

    /// Encodes `event` into the frame.
    pub(crate) fn event(&mut self, mut event: Event) {
        self.reserve();
        self.buf.write(|buf| event.encode_into(buf));
        let dispatches = event.get_data().is_some();
        self.tracker.event_sent(event.take_id(), dispatches);
    }

    /// Writes one event already encoded (whole, ending with its blank line) and its id. Into
    /// an empty frame the bytes are not copied: they are handed on as they are.
    #[allow(dead_code)] // the hub is the first source of encoded events outside tests
    pub(crate) fn encoded(&mut self, event: &Bytes, id: Option<Bytes>) {
        if !self.buf.is_empty() {
            self.reserve();
        }
        self.buf.push_shared(event);
        *self.coalescing = true;
        self.tracker.event_sent(id, true);
    }

    /// Writes one event whose fields are already encoded (`body`: whole lines, without an id
    /// and the blank line), followed by its `id`.
    #[allow(dead_code)] // the Redis engine's subscriptions of several topics
    pub(crate) fn encoded_with_id(&mut self, body: &[u8], id: Bytes) {
        self.reserve();
        self.buf.write(|buf| {
            buf.reserve(body.len() + id.len() + 6);
            buf.extend_from_slice(body);
            buf.extend_from_slice(b"id: ");
            buf.extend_from_slice(&id);
            buf.extend_from_slice(b"\n\n");
        });
        self.tracker.event_sent(Some(id), true);
    }

    /// The source is ending for `reason` (it then returns `Ready(Ok(()))`); the first reason
    /// given stands.
    #[allow(dead_code)] // the hub's subscriptions are the first source to end for a reason
    pub(crate) fn closing(&mut self, reason: crate::CloseReason) {
        self.tracker.closing(reason);
    }

    /// Makes room for a whole frame once events are being coalesced (one is already in it). A
    /// lone event on an idle stream gets a buffer of its own size.
    fn reserve(&mut self) {
        if std::mem::replace(self.coalescing, true) && self.buf.capacity() < FLUSH_AT {
            let room = FRAME_CAPACITY.saturating_sub(self.buf.len());
            self.buf.write(|buf| buf.reserve(room));
        }
    }
}
