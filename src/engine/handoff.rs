//! Streams handed from one part of the crate to the layer: a response carries its source in a
//! [`HandoffSlot`] extension, and a layer that finds one serves the source through its own
//! engine, with its own settings, instead of decoding the body again.

use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use super::{Output, Source};
use crate::StreamError;

/// A source that can move between threads, boxed.
pub(crate) type BoxSource = Pin<Box<dyn Source + Send>>;

/// A response extension that marks the response as one of this crate's event streams and holds
/// its source until someone takes it: the layer in front, or the response's own body. The type
/// is private to the crate, so nothing outside can claim a response is already encoded: an
/// inner service that only sets the same headers is decoded and encoded again.
#[derive(Clone)]
pub(crate) struct HandoffSlot(Arc<Mutex<Option<BoxSource>>>);

impl HandoffSlot {
    pub(crate) fn new(source: BoxSource) -> Self {
        Self(Arc::new(Mutex::new(Some(source))))
    }

    /// Takes the source; `None` once someone has.
    pub(crate) fn take(&self) -> Option<BoxSource> {
        // Nothing panics while holding the lock, and an `Option` is valid in any case.
        let mut slot = self
            .0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        slot.take()
    }
}

/// The source of a handed-off stream: the one in the slot, taken at the first poll unless a
/// layer took it first (then this body is never served, and ends at once if it is).
pub(crate) enum Handoff {
    Waiting(HandoffSlot),
    Taken(BoxSource),
    Gone,
}

impl Source for Handoff {
    fn poll_events(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        out: &mut Output<'_>,
    ) -> Poll<Result<(), StreamError>> {
        let this = self.get_mut();
        if let Self::Waiting(slot) = this {
            *this = slot.take().map_or(Self::Gone, Self::Taken);
        }
        match this {
            Self::Taken(source) => source.as_mut().poll_events(cx, out),
            Self::Waiting(_) | Self::Gone => Poll::Ready(Ok(())),
        }
    }
}
