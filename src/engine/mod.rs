//! The event-stream engine: one state machine that writes every event stream, whatever its
//! [`Source`] of events. It sends the preamble, coalesces what the source has ready into one
//! frame, sends heartbeats while the source is idle, ends the stream for the shutdown signal or
//! the maximum age after whole events, watches the write deadline, and reports the close.
//!
//! Two sources exist: [`Decoded`], an inner body cut into messages by a decoder and mapped to
//! events, and [`Handoff`], events already encoded by someone else (a second layer's source).

mod decoded;
mod frame;
mod handoff;
mod source;
mod tracker;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};

use bytes::Bytes;
use http_body::Frame;
use pin_project_lite::pin_project;
use tokio::time::{Instant, Sleep};
use tokio_util::sync::WaitForCancellationFutureOwned;

use crate::config::Config;
use crate::disconnect::Disconnect;

use crate::{CloseReason, StreamError};

pub(crate) use decoded::{copy_out, Decoded};
use frame::FrameBuf;
pub(crate) use handoff::{BoxSource, Handoff, HandoffSlot};
pub use source::{Output, Source};
pub(crate) use tracker::Admission;
use tracker::Tracker;

/// Events already ready are coalesced into one body frame up to this size: the cost per frame,
/// not the encoding, bounds throughput. Coalescing never waits for more events.
const FLUSH_AT: usize = 64 * 1024;

/// Once a second event joins a frame, the buffer grows to this at once instead of doubling (and
/// copying) its way up; the slack keeps the last small event from growing it again.
const FRAME_CAPACITY: usize = FLUSH_AT + 8 * 1024;

pin_project! {
    /// One event stream, written from `source`.
    pub(crate) struct Engine<S> {
        #[pin]
        source: S,
        // The one timer: a write deadline after the last frame handed on, until the connection
        // asks again (see `Tracker`); then the next heartbeat or the maximum age, whichever
        // is first.
        #[pin]
        timer: Option<Sleep>,
        // Boxed: most streams run without a shutdown signal, and should not carry its room.
        shutdown: Option<Pin<Box<WaitForCancellationFutureOwned>>>,
        state: State,
    }
}

/// The stream's state, apart from the pinned source and timers.
struct State {
    config: Arc<Config>,
    /// Encoded bytes not yet handed to the connection.
    buf: FrameBuf,
    /// Whether `buf` holds an event (not just the preamble): another one joining it is a burst.
    coalescing: bool,
    phase: Phase,
    /// When the last bytes were handed on; heartbeats are due an interval after it.
    last_write: Instant,
    /// When the stream reaches its maximum age.
    age_limit: Option<Instant>,
    tracker: Tracker,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Reading the source.
    Streaming,
    /// The source ended or failed, or the stream is closing: send what is buffered (whole
    /// events only), then end.
    Ending,
    /// Ended.
    Done,
}

/// What the timer of an idle stream found due.
enum Due {
    Heartbeat,
    MaxAge,
}

impl<S> Engine<S> {
    /// A stream over `source`; `disconnect` is cancelled when it ends, is dropped, or its client
    /// stalls. The `admission`'s place under the stream limits is given back when it closes.
    pub(crate) fn new(
        source: S,
        config: Arc<Config>,
        disconnect: Disconnect,
        admission: Admission,
    ) -> Self {
        let mut buf = FrameBuf::default();
        buf.push_shared(&config.stream_preamble());
        let now = Instant::now();
        let state = State {
            buf,
            coalescing: false,
            phase: Phase::Streaming,
            last_write: now,
            age_limit: config
                .max_age
                .and_then(|age| now.checked_add(crate::jitter::jittered(age))),
            tracker: Tracker::new(config.clone(), disconnect, admission),
            config: config.clone(),
        };
        Self {
            source,
            timer: None,
            shutdown: config
                .shutdown
                .clone()
                .map(|signal| Box::pin(signal.cancelled_owned())),
            state,
        }
    }

    /// Whether the stream has ended.
    pub(crate) fn is_done(&self) -> bool {
        self.state.phase == Phase::Done
    }
}

impl<S: Source> Engine<S> {
    /// The next frame to hand to the connection, or the end.
    pub(crate) fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Frame<Bytes>>> {
        let mut this = self.project();
        let state = this.state;
        let frame = state.poll_frame(this.source, this.timer.as_mut(), this.shutdown, cx);
        if let Poll::Ready(Some(_)) = frame {
            state.arm_watchdog(this.timer);
        }
        frame
    }
}

impl State {
    fn poll_frame<S: Source>(
        &mut self,
        source: Pin<&mut S>,
        timer: Pin<&mut Option<Sleep>>,
        shutdown: &mut Option<Pin<Box<WaitForCancellationFutureOwned>>>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Frame<Bytes>>> {
        self.tracker.polled(cx.waker());
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
            self.check_close(shutdown, cx);
        }
        if self.phase == Phase::Streaming {
            self.pull(source, cx);
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

    /// Ends the stream for the shutdown signal or the maximum age, whichever came.
    fn check_close(
        &mut self,
        shutdown: &mut Option<Pin<Box<WaitForCancellationFutureOwned>>>,
        cx: &mut Context<'_>,
    ) {
        if shutdown
            .as_mut()
            .is_some_and(|signal| signal.as_mut().poll(cx).is_ready())
        {
            self.close(CloseReason::Shutdown);
        } else if self.age_limit.is_some_and(|limit| Instant::now() >= limit) {
            self.close(CloseReason::MaxAge);
        }
    }

    /// Writes what the source has ready into the buffer, up to the flush bound; never waits.
    fn pull<S: Source>(&mut self, source: Pin<&mut S>, cx: &mut Context<'_>) {
        let mut out = Output {
            buf: &mut self.buf,
            coalescing: &mut self.coalescing,
            config: &self.config,
            tracker: &mut self.tracker,
        };
        match source.poll_events(cx, &mut out) {
            Poll::Pending => {}
            Poll::Ready(Ok(())) => self.phase = Phase::Ending,
            Poll::Ready(Err(error)) => self.fail(&error),
        }
    }

    /// Stops reading the source (an unfinished message in a decoder is dropped: the client sees
    /// only whole events) and ends after what is encoded, and the shutdown event when the
    /// shutdown signal is the reason.
    fn close(&mut self, reason: CloseReason) {
        self.phase = Phase::Ending;
        self.tracker.closing(reason);
        if reason == CloseReason::Shutdown && !self.config.shutdown_event.is_empty() {
            let event = self.config.stream_shutdown_event();
            // Only an event with data ends with the blank line that dispatches it.
            let dispatches = event.ends_with(b"\n\n");
            self.buf.push_shared(&event);
            self.tracker
                .event_sent(self.config.shutdown_event_id.clone(), dispatches);
        }
    }

    /// Ends the stream after the events already encoded and a final error event.
    fn fail(&mut self, error: &StreamError) {
        self.phase = Phase::Ending;
        self.tracker.failed(error);
        if let Some(mut event) = self.config.error_event(error) {
            self.buf.write(|buf| event.encode_into(buf));
            let dispatches = event.get_data().is_some();
            self.tracker.event_sent(event.take_id(), dispatches);
        }
    }

    /// Hands the buffer on whole: an idle stream keeps no buffer, and the next frame starts a
    /// new one.
    fn flush(&mut self) -> Frame<Bytes> {
        self.coalescing = false;
        let bytes = self.buf.take();
        self.hand_on(bytes)
    }

    fn hand_on(&mut self, bytes: Bytes) -> Frame<Bytes> {
        self.last_write = Instant::now();
        self.tracker.handed_on(bytes.len(), self.last_write);
        Frame::data(bytes)
    }

    /// Sets the timer to a write deadline after the frame just handed on, registered with the
    /// watchdog's waker; the next idle poll sets it back to the next heartbeat (or the maximum
    /// age). Never earlier than the deadline: a wake-up before it finds no stall, and a
    /// connection that stopped polling would never set the timer again. Extending a registered
    /// timer is a compare-and-swap.
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
            register(sleep, &waker);
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
        match timer.as_mut().as_pin_mut() {
            // Still at the write deadline after the last frame, later than what is due now: the
            // connection has asked again. (A deadline earlier than `next` fires early, and is
            // moved on below, so a busy stream without a watchdog costs no timer work.)
            Some(sleep) if sleep.deadline() > next => sleep.reset(next),
            Some(_) => {}
            None => timer.set(Some(tokio::time::sleep_until(next))),
        }
        let mut sleep = timer.as_pin_mut()?;
        // With a watchdog, the timer wakes it (which wakes the connection when nothing stalled).
        let watchdog = self.tracker.watchdog();
        loop {
            let fired = match &watchdog {
                Some(waker) => register(sleep.as_mut(), waker),
                None => sleep.as_mut().poll(cx).is_ready(),
            };
            if !fired {
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

/// Polls `sleep` with `waker`, outside the task's budget so that it always registers; whether
/// it has fired.
fn register(sleep: Pin<&mut Sleep>, waker: &Waker) -> bool {
    let mut unconstrained = tokio::task::unconstrained(sleep);
    Pin::new(&mut unconstrained)
        .poll(&mut Context::from_waker(waker))
        .is_ready()
}

#[cfg(test)]
mod tests;
