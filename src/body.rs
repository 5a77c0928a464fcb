//! [`SseBody`]: the per-connection state machine that writes the event stream.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::{Buf, Bytes, BytesMut};
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;
use tokio::time::{Instant, Sleep};
use tokio_util::sync::{CancellationToken, DropGuard, WaitForCancellationFutureOwned};

use crate::decode::{Decoder, Item};
use crate::error::BoxError;
use crate::layer::Config;
use crate::lifecycle::{jittered, Tracker};
use crate::{CloseReason, Event, StreamError};

/// Events already ready are coalesced into one body frame up to this size: the cost per frame,
/// not the encoding, bounds throughput. Coalescing never waits for more events.
const FLUSH_AT: usize = 64 * 1024;

/// Once a second message is ready to join a frame, the buffer grows to this at once instead of
/// doubling (and copying) its way up; the slack keeps the last small event from growing it again.
const FRAME_CAPACITY: usize = FLUSH_AT + 8 * 1024;

/// At most this many inner frames are read in one poll, so an inner body that is always ready
/// but yields nothing to send (comments, empty frames) cannot hold the thread.
const FRAMES_PER_POLL: usize = 1024;

pin_project! {
    /// The response body of [`SseService`](crate::SseService): either the inner body untouched,
    /// or the inner body's messages written as an event stream.
    ///
    /// As an event stream it never fails: an inner error becomes a final `error` event and a
    /// clean end. It always ends after a complete event.
    pub struct SseBody<B> {
        #[pin]
        kind: Kind<B>,
        // Resolves the request's `Disconnect` handle when the body is dropped.
        done: Option<DropGuard>,
    }
}

pin_project! {
    #[project = KindProj]
    enum Kind<B> {
        Untouched {
            #[pin]
            body: B,
        },
        Events {
            #[pin]
            body: B,
            // Fires for the next heartbeat or the maximum age, whichever is first.
            #[pin]
            timer: Option<Sleep>,
            #[pin]
            shutdown: Option<WaitForCancellationFutureOwned>,
            // Fires a write deadline after the last frame handed on (see `Tracker`).
            #[pin]
            watchdog: Option<Sleep>,
            stream: Stream,
        },
        // The layer's own short answer (a refused request), taken when sent.
        Answer {
            text: Option<Bytes>,
        },
    }
}

/// The event stream's state, apart from the pinned inner body and timer.
struct Stream {
    config: Arc<Config>,
    decoder: Decoder,
    /// Encoded bytes not yet handed to the connection.
    buf: BytesMut,
    phase: Phase,
    /// When the last bytes were handed on; heartbeats are due an interval after it.
    last_write: Instant,
    /// When the stream reaches its maximum age.
    age_limit: Option<Instant>,
    tracker: Tracker,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Reading the inner body.
    Streaming,
    /// The inner body ended or failed, or the stream is closing: send what is buffered (whole
    /// events only), then end.
    Ending,
    /// Ended.
    Done,
}

impl<B> SseBody<B> {
    pub(crate) fn untouched(body: B, done: Option<DropGuard>) -> Self {
        Self {
            kind: Kind::Untouched { body },
            done,
        }
    }

    /// The layer's own answer: `text`, then the end. The inner body, if any, is not read.
    pub(crate) fn answer(text: Bytes) -> Self {
        Self {
            kind: Kind::Answer { text: Some(text) },
            done: None,
        }
    }

    pub(crate) fn events(
        body: B,
        decoder: Decoder,
        config: Arc<Config>,
        done: Option<DropGuard>,
    ) -> Self {
        let disconnect = done.map_or_else(CancellationToken::new, DropGuard::disarm);
        let mut buf = BytesMut::new();
        buf.extend_from_slice(&config.preamble);
        let now = Instant::now();
        let stream = Stream {
            decoder,
            buf,
            phase: Phase::Streaming,
            last_write: now,
            age_limit: config
                .max_age
                .and_then(|age| now.checked_add(jittered(age))),
            tracker: Tracker::new(config.clone(), disconnect.clone()),
            config: config.clone(),
        };
        Self {
            kind: Kind::Events {
                body,
                timer: None,
                shutdown: config
                    .shutdown
                    .clone()
                    .map(CancellationToken::cancelled_owned),
                watchdog: None,
                stream,
            },
            done: Some(disconnect.drop_guard()),
        }
    }

    /// Whether this body is an event stream (and not the inner body passed through).
    pub fn is_event_stream(&self) -> bool {
        matches!(self.kind, Kind::Events { .. })
    }
}

impl<B> std::fmt::Debug for SseBody<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = match &self.kind {
            Kind::Untouched { .. } => "untouched",
            Kind::Events { .. } => "event stream",
            Kind::Answer { .. } => "answer",
        };
        f.debug_struct("SseBody")
            .field("kind", &kind)
            .finish_non_exhaustive()
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
        match self.project().kind.project() {
            KindProj::Untouched { body } => body.poll_frame(cx).map(|frame| {
                frame.map(|frame| frame.map(|frame| frame.map_data(|mut data| copy_out(&mut data))))
            }),
            KindProj::Events {
                body,
                timer,
                shutdown,
                watchdog,
                stream,
            } => {
                let frame = stream.poll(body, timer, shutdown, cx);
                if let Poll::Ready(Some(_)) = frame {
                    stream.arm_watchdog(watchdog);
                }
                frame.map(|frame| frame.map(Ok))
            }
            KindProj::Answer { text } => Poll::Ready(text.take().map(|text| Ok(Frame::data(text)))),
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            Kind::Untouched { body } => body.is_end_stream(),
            Kind::Events { stream, .. } => stream.phase == Phase::Done,
            Kind::Answer { text } => text.is_none(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            Kind::Untouched { body } => body.size_hint(),
            Kind::Events { .. } => SizeHint::default(),
            Kind::Answer { text } => {
                SizeHint::with_exact(text.as_ref().map_or(0, |t| t.len() as u64))
            }
        }
    }
}

impl Stream {
    fn poll<B>(
        &mut self,
        mut body: Pin<&mut B>,
        timer: Pin<&mut Option<Sleep>>,
        shutdown: Pin<&mut Option<WaitForCancellationFutureOwned>>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Frame<Bytes>>>
    where
        B: Body,
        B::Error: Into<BoxError>,
    {
        self.tracker.polled();
        if self.phase == Phase::Done {
            return Poll::Ready(None);
        }
        if self.tracker.closed_elsewhere() {
            // Reported as stalled while the connection could not write: it is back, and gets
            // the end at once.
            self.phase = Phase::Done;
            return Poll::Ready(None);
        }
        if self.phase == Phase::Streaming {
            if shutdown
                .as_pin_mut()
                .is_some_and(|signal| signal.poll(cx).is_ready())
            {
                self.close(CloseReason::Shutdown);
            } else if self.age_limit.is_some_and(|limit| Instant::now() >= limit) {
                self.close(CloseReason::MaxAge);
            }
        }
        // Encode every message the inner body has ready, up to the flush bound; never wait.
        let mut budget = FRAMES_PER_POLL;
        while self.phase == Phase::Streaming && self.buf.len() < FLUSH_AT {
            if budget == 0 {
                // Frames may still be ready: come back at once, after other tasks had a turn.
                cx.waker().wake_by_ref();
                break;
            }
            budget -= 1;
            let result = match body.as_mut().poll_frame(cx) {
                Poll::Pending => break,
                Poll::Ready(Some(Ok(frame))) => match frame.into_data() {
                    Ok(mut data) => {
                        self.reserve_frame();
                        self.decode(Some(copy_out(&mut data)))
                    }
                    Err(frame) => match frame.into_trailers() {
                        Ok(trailers) => self.decoder.trailers(&trailers),
                        Err(_unknown) => Ok(()),
                    },
                },
                Poll::Ready(Some(Err(error))) => Err(StreamError::Body(error.into())),
                Poll::Ready(None) => {
                    self.phase = Phase::Ending;
                    self.decode(None)
                }
            };
            if let Err(error) = result {
                self.fail(&error);
            }
        }

        if self.phase == Phase::Streaming && self.buf.is_empty() {
            match self.poll_timer(timer, cx) {
                Some(Due::Heartbeat) => {
                    // Shared, encoded once: a heartbeat allocates nothing.
                    let heartbeat = self.config.heartbeat_bytes.clone();
                    return Poll::Ready(Some(self.hand_on(heartbeat)));
                }
                Some(Due::MaxAge) => self.close(CloseReason::MaxAge),
                None => return Poll::Pending,
            }
        }
        if !self.buf.is_empty() {
            return Poll::Ready(Some(self.flush()));
        }
        // Here the stream is ending and everything is sent.
        self.phase = Phase::Done;
        self.tracker.ended();
        Poll::Ready(None)
    }

    /// Stops reading the inner body (an unfinished message in the decoder is dropped: the
    /// client sees only whole events) and ends after what is encoded, and the shutdown event
    /// when the shutdown signal is the reason.
    fn close(&mut self, reason: CloseReason) {
        self.phase = Phase::Ending;
        self.tracker.closing(reason);
        if reason == CloseReason::Shutdown && !self.config.shutdown_event.is_empty() {
            self.buf.extend_from_slice(&self.config.shutdown_event);
            self.tracker
                .event_sent(self.config.shutdown_event_id.clone());
        }
    }

    /// Decodes one chunk of the inner body, or (with `None`) what is left when it has ended,
    /// mapping and encoding every item into the output buffer.
    fn decode(&mut self, chunk: Option<Bytes>) -> Result<(), StreamError> {
        let Self {
            decoder,
            config,
            buf,
            tracker,
            ..
        } = self;
        let mut emit = |item| send(item, config, buf, tracker);
        match chunk {
            Some(chunk) => decoder.decode(chunk, &mut emit),
            None => decoder.finish(&mut emit),
        }
    }

    /// Ends the stream after the events already encoded and a final error event.
    fn fail(&mut self, error: &StreamError) {
        self.phase = Phase::Ending;
        self.tracker.failed(error);
        if let Some(mut event) = self.config.error_event(error) {
            event.encode_into(&mut self.buf);
            self.tracker.event_sent(event.take_id());
        }
    }

    /// Makes room for a whole frame when messages are being coalesced (something is already
    /// buffered). A lone message on an idle stream gets a buffer of its own size.
    fn reserve_frame(&mut self) {
        if !self.buf.is_empty() && self.buf.capacity() < FLUSH_AT {
            self.buf.reserve(FRAME_CAPACITY - self.buf.len());
        }
    }

    /// Hands the buffer on whole: an idle stream keeps no buffer, and the next frame starts a
    /// new one.
    fn flush(&mut self) -> Frame<Bytes> {
        let bytes = std::mem::take(&mut self.buf).freeze();
        self.hand_on(bytes)
    }

    fn hand_on(&mut self, bytes: Bytes) -> Frame<Bytes> {
        self.last_write = Instant::now();
        self.tracker.handed_on(bytes.len(), self.last_write);
        Frame::data(bytes)
    }

    /// Sets the watchdog timer to a write deadline after the frame just handed on. Extending a
    /// registered timer is a compare-and-swap; it is polled with the watchdog's waker, outside
    /// the task's budget so that it always registers.
    fn arm_watchdog(&self, mut timer: Pin<&mut Option<Sleep>>) {
        let (Some(waker), Some(deadline)) = (self.tracker.watchdog(), self.config.write_deadline)
        else {
            return;
        };
        let Some(due) = self.last_write.checked_add(deadline) else {
            return;
        };
        match timer.as_mut().as_pin_mut() {
            Some(sleep) => sleep.reset(due),
            None => timer.set(Some(tokio::time::sleep_until(due))),
        }
        if let Some(sleep) = timer.as_pin_mut() {
            let mut unconstrained = tokio::task::unconstrained(sleep);
            // Pending: the deadline (at least a millisecond away) is in the future.
            let _ = Pin::new(&mut unconstrained).poll(&mut Context::from_waker(waker));
        }
    }

    /// What is due on an idle stream, if anything: a heartbeat, or the end of its maximum age.
    /// The timer is only re-armed when it fires early (because something was written since it
    /// was set), so a busy stream costs no timer work per event.
    fn poll_timer(&self, mut timer: Pin<&mut Option<Sleep>>, cx: &mut Context<'_>) -> Option<Due> {
        // An interval too long to add to a clock reading never comes due.
        let heartbeat = self
            .config
            .heartbeat
            .and_then(|interval| self.last_write.checked_add(interval));
        let next = match (heartbeat, self.age_limit) {
            (Some(heartbeat), Some(limit)) => heartbeat.min(limit),
            (due, None) | (None, due) => due?,
        };
        if timer.is_none() {
            timer.set(Some(tokio::time::sleep_until(next)));
        }
        let mut sleep = timer.as_pin_mut()?;
        loop {
            if sleep.as_mut().poll(cx).is_pending() {
                return None;
            }
            let now = Instant::now();
            if self.age_limit.is_some_and(|limit| now >= limit) {
                return Some(Due::MaxAge);
            }
            if heartbeat.is_some_and(|due| now >= due) {
                // The heartbeat written now moves the next one an interval on.
                let after = self
                    .config
                    .heartbeat
                    .and_then(|interval| now.checked_add(interval));
                let after = match (after, self.age_limit) {
                    (Some(after), Some(limit)) => after.min(limit),
                    (after, limit) => after.or(limit).unwrap_or(next),
                };
                sleep.reset(after);
                return Some(Due::Heartbeat);
            }
            sleep.as_mut().reset(next);
        }
    }
}

/// What the timer of an idle stream found due.
enum Due {
    Heartbeat,
    MaxAge,
}

/// Maps and encodes one decoded item into the output buffer.
fn send(
    item: Item,
    config: &Config,
    buf: &mut BytesMut,
    tracker: &mut Tracker,
) -> Result<(), StreamError> {
    let mut event: Event = match item {
        Item::Message(message) => config.map(message).map_err(StreamError::Event)?,
        Item::Control(event) => event,
    };
    event.encode_into(buf);
    tracker.event_sent(event.take_id());
    Ok(())
}

/// Takes a body chunk as `Bytes` (without a copy when it already is `Bytes`).
fn copy_out(data: &mut impl Buf) -> Bytes {
    data.copy_to_bytes(data.remaining())
}
