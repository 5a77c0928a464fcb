//! The seam between the engine and what it writes: a [`Source`] of events, and the [`Output`]
//! it writes them into.

use std::pin::Pin;
use std::task::{Context, Poll};

use super::frame::FrameBuf;
use super::tracker::Tracker;
use super::{FLUSH_AT, FRAME_CAPACITY};
use crate::config::Config;
use crate::source::EncodedEvent;
use crate::{Event, Message, StreamError};

/// Where the events of one stream come from (see the [module documentation](crate::source)).
/// The engine asks for more each time the connection asks for a frame, and gives every stream
/// the same lifecycle (retry hint, coalescing, heartbeats, shutdown, maximum age, write
/// deadline, limits, close reports) whatever its source.
pub trait Source {
    /// Writes every event that is ready into `out`, until `out` [is full](Output::is_full) or
    /// none is ready; never waits.
    ///
    /// `Ready(Ok(()))`: the source has ended, and wrote all it had (the stream ends after it,
    /// [completed](crate::CloseReason::Completed) unless [`Output::closing`] gave a reason).
    /// `Ready(Err(_))`: it failed (the stream ends with a final error event). `Pending`:
    /// nothing more now; a wake-up is registered with `cx`, unless `out` is full (the engine
    /// then comes back after the frame).
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

/// The engine's side of the seam: the frame being gathered for the connection, and the stream's
/// counters. Everything written into it goes through the crate's one encoder, so a source
/// cannot break the wire format.
pub struct Output<'a> {
    pub(super) buf: &'a mut FrameBuf,
    pub(super) coalescing: &'a mut bool,
    pub(super) config: &'a Config,
    pub(super) tracker: &'a mut Tracker,
}

impl Output<'_> {
    /// Whether the frame has reached its bound (64 KiB): write no more into it, and return
    /// `Pending`; the engine comes back once the frame is handed on. The bound is the source's
    /// to keep: what it writes past it still goes into the frame, which then grows.
    pub fn is_full(&self) -> bool {
        self.buf.len() >= FLUSH_AT
    }

    /// Maps a decoded message with the layer's mapper, and writes the event.
    pub(crate) fn message(&mut self, message: Message) -> Result<(), StreamError> {
        let event = self.config.map(message).map_err(StreamError::Event)?;
        self.event(event);
        Ok(())
    }

    /// Encodes `event` into the frame (events are coalesced into one frame while they are
    /// ready; nothing waits for more).
    pub fn event(&mut self, mut event: Event) {
        self.reserve();
        self.buf.write(|buf| event.encode_into(buf));
        let dispatches = event.get_data().is_some();
        self.tracker.event_sent(event.take_id(), dispatches);
    }

    /// Writes an event encoded once for many streams: into an empty frame its bytes are handed
    /// on as they are, without a copy (a hub encodes each event once for all its subscribers).
    pub fn encoded(&mut self, event: &EncodedEvent) {
        if !self.buf.is_empty() {
            self.reserve();
        }
        self.buf.push_shared(event.as_bytes());
        *self.coalescing = true;
        self.tracker
            .event_sent(event.id_bytes(), event.dispatches());
    }

    /// The source is ending for `reason` (it then returns `Ready(Ok(()))`): what the close
    /// report says, such as [`Lagged`](crate::CloseReason::Lagged) for a consumer that fell
    /// behind. The first reason given stands.
    pub fn closing(&mut self, reason: crate::CloseReason) {
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
