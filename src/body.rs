//! [`SseBody`]: the response body of [`SseService`](crate::SseService).

use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;

use crate::config::Config;
use crate::decode::Decoder;
use crate::disconnect::{Disconnect, DisconnectGuard};
use crate::engine::Admission;
use crate::engine::{copy_out, Decoded, Engine, Handoff};
use crate::error::BoxError;

/// A stream's compressor, if it has one (nothing at all without the feature `compression`).
#[cfg(feature = "compression")]
type CompressorSlot = Option<Box<crate::compression::Compressor>>;
#[cfg(not(feature = "compression"))]
type CompressorSlot = ();

pin_project! {
    /// The response body of [`SseService`](crate::SseService): the inner body untouched, or an
    /// event stream written by the layer.
    ///
    /// As an event stream it never fails: an inner error becomes a final `error` event and a
    /// clean end. It always ends after a complete event.
    pub struct SseBody<B> {
        #[pin]
        kind: Kind<B>,
        // Resolves the request's `Disconnect` handle when the body is dropped.
        done: Option<DisconnectGuard>,
        // Compresses an event stream's frames, for a client that asked.
        compressor: CompressorSlot,
    }
}

pin_project! {
    #[project = KindProj]
    enum Kind<B> {
        Untouched {
            #[pin]
            body: B,
        },
        // The inner body, decoded and encoded again. The engines are boxed: a body stays a
        // small handle (an inner body that is itself an `SseBody` does not nest a second
        // engine's room in this one).
        Events {
            engine: Pin<Box<Engine<Decoded<B>>>>,
        },
        // A stream of this crate's own, handed over already encoded; the inner body is dropped.
        Handoff {
            engine: Pin<Box<Engine<Handoff>>>,
        },
        // The layer's own short answer (a refused request), taken when sent.
        Answer {
            text: Option<Bytes>,
        },
    }
}

impl<B> SseBody<B> {
    pub(crate) fn untouched(body: B, done: Option<DisconnectGuard>) -> Self {
        Self {
            kind: Kind::Untouched { body },
            done,
            compressor: CompressorSlot::default(),
        }
    }

    /// The layer's own answer: `text`, then the end. The inner body, if any, is not read.
    pub(crate) fn fixed(text: Bytes) -> Self {
        Self {
            kind: Kind::Answer { text: Some(text) },
            done: None,
            compressor: CompressorSlot::default(),
        }
    }

    /// `body` cut by `decoder`, written as an event stream with `config`, holding what it was
    /// `admission` with (its place under the stream limits, its metrics label) until it closes.
    pub(crate) fn events(
        body: B,
        decoder: Decoder,
        config: Arc<Config>,
        done: Option<DisconnectGuard>,
        admission: Admission,
    ) -> Self {
        let disconnect = done.map_or_else(Disconnect::new, DisconnectGuard::disarm);
        let source = Decoded::new(body, decoder);
        let engine = Box::pin(Engine::new(source, config, disconnect.clone(), admission));
        Self {
            kind: Kind::Events { engine },
            done: Some(disconnect.guard()),
            compressor: CompressorSlot::default(),
        }
    }

    /// A handed-over stream, written with `config`.
    pub(crate) fn handoff(
        source: Handoff,
        config: Arc<Config>,
        done: Option<DisconnectGuard>,
        admission: Admission,
    ) -> Self {
        let disconnect = done.map_or_else(Disconnect::new, DisconnectGuard::disarm);
        let engine = Box::pin(Engine::new(source, config, disconnect.clone(), admission));
        Self {
            kind: Kind::Handoff { engine },
            done: Some(disconnect.guard()),
            compressor: CompressorSlot::default(),
        }
    }

    /// This event stream, its frames compressed by `compressor`.
    #[cfg(feature = "compression")]
    pub(crate) fn compressed(
        mut self,
        compressor: Option<Box<crate::compression::Compressor>>,
    ) -> Self {
        self.compressor = compressor;
        self
    }

    /// Whether this body is an event stream (and not the inner body passed through).
    pub fn is_event_stream(&self) -> bool {
        matches!(self.kind, Kind::Events { .. } | Kind::Handoff { .. })
    }
}

impl<B> std::fmt::Debug for SseBody<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = match &self.kind {
            Kind::Untouched { .. } => "untouched",
            Kind::Events { .. } => "event stream",
            Kind::Handoff { .. } => "event stream (handed over)",
            Kind::Answer { .. } => "answer",
        };
        f.debug_struct("SseBody")
            .field("kind", &kind)
            .finish_non_exhaustive()
    }
}

impl<B> SseBody<B> {
    /// Whether the compressed stream, if any, has ended too.
    fn compression_ended(&self) -> bool {
        #[cfg(feature = "compression")]
        if let Some(compressor) = &self.compressor {
            return compressor.is_ended();
        }
        true
    }
}

impl<B> Body for SseBody<B>
where
    B: Body,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        let this = self.project();
        // A compressed stream that has ended (its codec failed) ends the body at once, whatever
        // its source still holds.
        #[cfg(feature = "compression")]
        if this.compressor.as_ref().is_some_and(|c| c.is_ended()) {
            return Poll::Ready(None);
        }
        let frame = match this.kind.project() {
            KindProj::Untouched { body } => {
                return body.poll_frame(cx).map(|frame| {
                    frame.map(|frame| {
                        frame.map(|frame| frame.map_data(|mut data| copy_out(&mut data)))
                    })
                })
            }
            KindProj::Events { engine } => ready!(engine.as_mut().poll_frame(cx)),
            KindProj::Handoff { engine } => ready!(engine.as_mut().poll_frame(cx)),
            KindProj::Answer { text } => text.take().map(Frame::data),
        };
        #[cfg(feature = "compression")]
        let frame = match this.compressor {
            Some(compressor) => compressor.next(frame),
            None => frame,
        };
        Poll::Ready(frame.map(Ok))
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            Kind::Untouched { body } => body.is_end_stream(),
            Kind::Events { engine } => engine.is_done() && self.compression_ended(),
            Kind::Handoff { engine } => engine.is_done() && self.compression_ended(),
            Kind::Answer { text } => text.is_none(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            Kind::Untouched { body } => body.size_hint(),
            Kind::Events { .. } | Kind::Handoff { .. } => SizeHint::default(),
            Kind::Answer { text } => {
                SizeHint::with_exact(text.as_ref().map_or(0, |t| t.len() as u64))
            }
        }
    }
}
