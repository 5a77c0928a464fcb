//! [`Decoded`]: the source of an inner body, cut into messages by a decoder (one of the core's
//! framings, or gRPC's) and mapped to events.

use std::pin::Pin;
use std::task::{ready, Context, Poll};

use bytes::{Buf, Bytes};
use http_body::Body;
use pin_project_lite::pin_project;

use super::{Output, Source};
use crate::decode::{Decode, Decoder, Item};
use crate::error::BoxError;
use crate::StreamError;

/// At most this many inner frames are read in one poll, so an inner body that is always ready
/// but yields nothing to send (comments, empty frames) cannot hold the thread.
const FRAMES_PER_POLL: usize = 1024;

pin_project! {
    /// An inner body through its decoder.
    pub(crate) struct Decoded<B, D = Decoder> {
        #[pin]
        body: B,
        decoder: D,
    }
}

impl<B, D> Decoded<B, D> {
    pub(crate) fn new(body: B, decoder: D) -> Self {
        Self { body, decoder }
    }
}

impl<B, D> Source for Decoded<B, D>
where
    B: Body,
    B::Error: Into<BoxError>,
    D: Decode,
{
    fn poll_events(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        out: &mut Output<'_>,
    ) -> Poll<Result<(), StreamError>> {
        let mut this = self.project();
        for _ in 0..FRAMES_PER_POLL {
            if out.is_full() {
                return Poll::Pending;
            }
            let frame = match ready!(this.body.as_mut().poll_frame(cx)) {
                None => return Poll::Ready(this.decoder.finish(&mut |item| write(out, item))),
                Some(Err(error)) => return Poll::Ready(Err(StreamError::Body(error.into()))),
                Some(Ok(frame)) => frame,
            };
            let written = match frame.into_data() {
                Ok(mut data) => {
                    let chunk = copy_out(&mut data);
                    this.decoder.decode(chunk, &mut |item| write(out, item))
                }
                Err(frame) => match frame.into_trailers() {
                    Ok(trailers) => this.decoder.trailers(&trailers),
                    Err(_unknown) => Ok(()),
                },
            };
            if let Err(error) = written {
                return Poll::Ready(Err(error));
            }
        }
        // Frames may still be ready: come back at once, after other tasks had a turn.
        cx.waker().wake_by_ref();
        Poll::Pending
    }
}

/// Writes one decoded item: a message through the mapper, a control block as it is.
fn write(out: &mut Output<'_>, item: Item) -> Result<(), StreamError> {
    match item {
        Item::Message(message) => out.message(message),
        Item::Control(event) => {
            out.event(event);
            Ok(())
        }
    }
}

/// Takes a body chunk as `Bytes` (without a copy when it already is `Bytes`).
pub(crate) fn copy_out(data: &mut impl Buf) -> Bytes {
    data.copy_to_bytes(data.remaining())
}
